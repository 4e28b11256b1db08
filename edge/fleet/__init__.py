"""Fleet updates: publish bundles to a TUF repository, update scanners from it with a canary and rollback,
and describe a bundle as a CycloneDX ML-BOM.

Nothing here is imported by ``import edgemed`` or by ``load``/``predict``; ``tuf`` and ``cyclonedx`` are
imported only by the functions that need them (``pip install 'edgemed[fleet]'``). The device side that the
runtime does use (:mod:`edgemed.device_pointer`) is plain JSON reading.
"""

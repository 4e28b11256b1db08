"""``edgemed.load``: the one entry point that opens what a user points at (a bundle, a device folder, an ensemble)
and hands back something with ``predict``. Above the pipeline and the ensemble runtime, which opens its members'
pipelines, so neither reaches back into the other."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .bundle import Bundle
from .ensemble.files import is_ensemble
from .pipeline import Pipeline, open_pipeline

if TYPE_CHECKING:
    from .ensemble.runtime import EnsemblePipeline


def load(bundle: str | Path, device: str = "cpu", backend: str | None = None, precision: str | None = None,
         threads: int | None = None, require_signature: str | Path | None = None, accept: str | None = None,
         certifiers: Sequence[str | Path] = (), callers: int = 1, form: str | None = None
         ) -> Pipeline | EnsemblePipeline:
    """Open and verify a bundle, choose an artifact for the device, and start its engine. An ensemble folder
    (``edgemed ensemble``) gives an :class:`edgemed.ensemble.EnsemblePipeline` with the same ``predict``.

    Only artifacts that passed the gate and whose backend is installed are eligible; the device
    profile's preference orders them, and ``device="auto"`` measures them instead of assuming. An
    uncertified or failed artifact runs only when named exactly (``backend`` and ``precision``) and
    accepted (``accept="uncertified"`` or ``"failed"``); ``describe()`` then says what was accepted.
    With ``require_signature`` (an Ed25519 public key file) the bundle must carry a valid
    signature by that key and hold exactly the files that were signed. Verdicts a site took later with
    ``edgemed certify`` count (:mod:`edgemed.certification`); with a required signature only those signed by
    that key or by one of ``certifiers`` (public key files). A device folder (``edgemed update --into DIR``)
    loads the version its pointer names. ``callers``: how many threads will call ``predict`` at once; the engine
    then splits the cores between them and never busy-waits (:func:`edgemed.selection.shared_by`). ``form``
    (ensembles only): ``"baked"`` or ``"members"`` overrides the form measured faster when the ensemble was made.
    """
    from .device_pointer import is_device, serving_bundle

    if is_device(bundle):
        bundle = serving_bundle(bundle)
    if require_signature is not None:
        from .signing import verify_signature

        verify_signature(Path(bundle), Path(require_signature))
    if is_ensemble(bundle):  # a folder of member bundles combined (edgemed ensemble): the same call serves it
        from .ensemble.runtime import load_ensemble

        return load_ensemble(bundle, device, backend, precision, threads, require_signature, accept, certifiers,
                             callers, form)
    if form is not None:
        from .errors import OptionError

        raise OptionError(f"form={form!r} is for ensembles; {bundle} is a bundle", "leave form out")
    b = Bundle.open(bundle, require_signature=require_signature, certifiers=certifiers)
    return open_pipeline(b, device, backend, precision, threads, accept, callers)

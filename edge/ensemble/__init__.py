"""Ensembles: several bundles of one task and labels, optionally with flipped inputs (test-time augmentation),
run as one model. ``make_ensemble`` writes one (``edgemed ensemble``), ``edgemed.load`` runs it.

Names are imported on first use: ``edgemed.load`` asks :func:`edgemed.ensemble.files.is_ensemble` of every path,
and a plain bundle's cold start must not pay for the rest of this package. No torch, no onnx (runtime path).
"""

from __future__ import annotations

from typing import Any

# make_ensemble is conversion work (it measures members and may bake one graph with onnx), so it lives with the
# converters; the name stays here, where users find ensembles
_WHERE = {"make_ensemble": "edgemed.converters.ensemble_build", "load_ensemble": ".runtime",
          "EnsemblePipeline": ".runtime", "is_ensemble": ".files", "ENSEMBLE": ".files", "open_ensemble": ".opening"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgemed.ensemble' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_WHERE[name], __name__), name)

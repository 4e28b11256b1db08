"""Ensembles: several bundles of one task and labels, optionally with flipped inputs (test-time augmentation),
run as one model. ``make_ensemble`` writes one (``edgemed ensemble``), ``edgemed.load`` runs it.

Names are imported on first use: ``edgemed.load`` asks :func:`edgemed.ensemble.files.is_ensemble` of every path,
and a plain bundle's cold start must not pay for the rest of this package. No torch, no onnx (runtime path).
"""

from __future__ import annotations

from typing import Any

_WHERE = {"make_ensemble": "build", "load_ensemble": "runtime", "EnsemblePipeline": "runtime",
          "is_ensemble": "files", "ENSEMBLE": "files", "open_ensemble": "opening"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgemed.ensemble' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_WHERE[name]}", __name__), name)

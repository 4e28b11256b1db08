"""How an ensemble folder is recognised: by its manifest's name, without reading it (``edgemed.load`` asks this
of every path, so it must cost one ``stat``)."""

from __future__ import annotations

from pathlib import Path

ENSEMBLE = "ensemble.json"
MEMBERS = "members"
BAKED_FILE = "ensemble.onnx"  # the members and flips as one graph (edgemed.converters.ensemble_graph)
BAKED_OUTPUT = "combined"  # its one output: the combination


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / ENSEMBLE).is_file()

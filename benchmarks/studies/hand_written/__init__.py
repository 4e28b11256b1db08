"""The hand-written post-processing ``benchmarks/studies/overhead.py`` times edgemed's ``predict`` against: what an
engineer writes for one model of one task without edgemed, one module per task here, found by the task's name. It
must not share edgemed's code (that is what it measures), so it restates each task's answer in plain numpy; before
any timing, ``overhead.same`` checks it gives predict's result. A task without a module here has no baseline.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class NoBaseline(Exception):
    """This bundle's spec or backend has no hand-written baseline here."""


def for_task(name: str) -> ModuleType:
    """The hand-written ``post``, ``agrees`` and ``frame_sizes`` of the task ``name``."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise NoBaseline(f"no hand-written post-processing for {name} models") from None

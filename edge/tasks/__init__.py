"""Tasks, one module each behind the :class:`~edgemed.tasks.base.Task` protocol; :func:`task_named` is how the
rest of edgemed asks what a task means instead of branching on its name. A new task is one module here, one line
in ``TASKS`` and its name's line in :mod:`edgemed.task_names` (what the manifest checks). No torch, no onnx
(runtime path).
"""

from __future__ import annotations

from ..errors import BundleError
from ..task_names import TASK_NAMES
from .base import ServedTensor, Task
from .classification import Classification
from .detection import Detection
from .segmentation import Segmentation

TASKS: dict[str, Task] = {t.name: t for t in (Classification(), Segmentation(), Detection())}

__all__ = ["TASKS", "TASK_NAMES", "ServedTensor", "Task", "task_named"]


def task_named(name: str) -> Task:
    """The task of that name; an unknown one is refused naming the known ones."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise BundleError(f"unknown task {name!r}", f"use one of {', '.join(TASK_NAMES)}") from None

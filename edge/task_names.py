"""The tasks' names, and the two facts about each that the manifest checks, stated once below the manifest.

Why here and not in :mod:`edgemed.tasks`: the manifest validates a bundle's record before any task code may run
(it sits below the tasks in the layers), yet it must know which tasks exist, which take ``--explain`` and whose
output counts classes on axis 1. Everything else a task means lives in its module of :mod:`edgemed.tasks`, which
reads these facts from here (``tests/test_tasks.py`` checks the two tables name the same tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TaskFacts:
    #: saliency maps apply: one class score per image for a class activation map to explain
    explainable: bool
    #: the output's axis 1 counts the classes ``model.labels`` names (a detector's rows are boxes instead)
    channels_are_classes: bool


TASK_FACTS: dict[str, TaskFacts] = {
    "classification": TaskFacts(explainable=True, channels_are_classes=True),
    "segmentation": TaskFacts(explainable=False, channels_are_classes=True),
    "detection": TaskFacts(explainable=False, channels_are_classes=False),
}
TASK_NAMES: tuple[str, ...] = tuple(TASK_FACTS)
TaskName = Literal[TASK_NAMES]  # type: ignore[valid-type]  # the manifest's vocabulary

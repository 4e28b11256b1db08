"""Drift of a candidate engine against the FP32 reference, in clinical terms, case by case.

Tensor differences alone hide what matters: a logit error of 0.3 may flip no diagnosis, or may
flip the one that counts. So every comparison reports task metrics (top-1 agreement for
classifiers; per-case Dice and lesion-level agreement for segmenters) next to raw output error,
with the per-case values and the decision margins the gate needs to bound them
(:mod:`edgemed.gate.verdict`). Judging those figures against a budget is the gate's job, not this module's.

These are the entry points; each task computes its own comparison and margins (:mod:`edgemed.tasks`),
the record and metrics are :mod:`edgemed.measures.comparison`'s, the margins :mod:`edgemed.measures.margins`'.
"""

from __future__ import annotations

import numpy as np

from ..measures.comparison import Comparison
from ..measures.margins import Margins
from ..tasks import task_named


def start_comparison(task: str, kind: str = "logits", label_names: list[str] | None = None):
    """An empty comparison to feed case by case (``add(reference, candidate)``, then ``finish()``)."""
    return task_named(task).start_comparison(kind, label_names)


def compare(reference, candidate, task: str, kind: str = "logits",
            label_names: list[str] | None = None) -> Comparison:
    """Compare a candidate with the FP32 reference on the same cases: stacked outputs (N, ...) or any sequences of
    per-case outputs for classifiers and segmenters, lists of Detections for detectors."""
    return task_named(task).compare(reference, candidate, kind, label_names)


def case_margins(output: np.ndarray, task: str, kind: str) -> dict[str, Margins]:
    """One case's FP32 margin per agreement metric (the population the gate's flip-rate estimate draws on is made
    of these, case by case, so no whole output set is ever held)."""
    return task_named(task).case_margins(output, kind)


def population_margins(reference, task: str, kind: str) -> dict[str, Margins]:
    """FP32 decision margins of every case it was run on (at most MAX_POPULATION, spaced), per agreement metric:
    the population the gate's flip-rate estimate is taken over (computed once per conversion, for every
    candidate). Detectors have none: after NMS a box's appearing or vanishing has no single margin, so their
    counts are bounded by counting alone."""
    return task_named(task).population_margins(reference, kind)

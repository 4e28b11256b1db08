"""Drift of a candidate engine against the FP32 reference, in clinical terms, and the budget it must meet.

Tensor differences alone hide what matters: a logit error of 0.3 may flip no diagnosis, or may
flip the one that counts. So every comparison reports task metrics (top-1 agreement for
classifiers; Dice, IoU and changed pixels between masks for segmenters) next to max/mean
absolute error, and the budget is written in those terms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .metrics import agreement, dice, iou
from .postprocess import class_probabilities, segmentation_probabilities

# MLPerf "high accuracy": 99.9% of the FP32 reference.
DEFAULT_BUDGETS = {
    "classification": "agreement>=0.999",
    "segmentation": "dice>=0.999",
}
# Worse-is-larger metrics take <=, better-is-larger take >=.
METRICS = {
    "agreement": ">=", "dice": ">=", "iou": ">=",
    "max_prob_diff": "<=", "changed_pixels": "<=", "max_abs_diff": "<=", "mean_abs_diff": "<=",
}
_TERM = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Bound:
    metric: str
    op: str
    value: float

    def holds(self, figures: dict) -> bool:
        got = figures.get(self.metric)
        if got is None:
            return False
        return got >= self.value if self.op == ">=" else got <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def parse_budget(text: str, task: str) -> list[Bound]:
    """Parse "dice>=0.995,agreement>=0.999"; refuses unknown metrics and wrong-way bounds."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("the drift budget is empty", f"write e.g. {DEFAULT_BUDGETS[task]!r}")
    bounds = []
    for term in text.split(","):
        m = _TERM.match(term)
        if not m:
            raise InputError(f"drift budget term {term.strip()!r} does not parse",
                             "write metric>=value or metric<=value, comma-separated, e.g. 'dice>=0.995'")
        metric, op, value = m.group(1), m.group(2), float(m.group(3))
        if metric not in METRICS:
            raise InputError(f"drift budget names unknown metric {metric!r}", f"use one of {', '.join(METRICS)}")
        if METRICS[metric] != op:
            raise InputError(f"drift budget bound {term.strip()!r} points the wrong way",
                             f"{metric} is bounded with {METRICS[metric]}")
        task_only = {"agreement": "classification", "max_prob_diff": "classification",
                     "dice": "segmentation", "iou": "segmentation", "changed_pixels": "segmentation"}
        if task_only.get(metric, task) != task:
            raise InputError(f"drift budget metric {metric!r} does not apply to {task}",
                             f"for {task} use e.g. {DEFAULT_BUDGETS[task]!r}")
        bounds.append(Bound(metric, op, value))
    return bounds


def _labels_from(outputs: np.ndarray, task: str, kind: str) -> np.ndarray:
    if task == "classification":
        return np.array([int(np.argmax(class_probabilities(o, kind))) for o in outputs])
    return np.stack([np.argmax(segmentation_probabilities(o[None], kind), axis=0) for o in outputs])


def drift_figures(reference: np.ndarray, candidate: np.ndarray, task: str, kind: str = "logits") -> dict:
    """Compare stacked outputs (N, ...) of a candidate with the FP32 reference."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise InputError(f"candidate outputs {candidate.shape} do not match the reference {reference.shape}",
                         "the artifact was built from a different model; rebuild the bundle")
    diff = np.abs(reference - candidate)
    figures: dict = {
        "cases": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }
    ref_labels = _labels_from(reference, task, kind)
    cand_labels = _labels_from(candidate, task, kind)
    if task == "classification":
        figures["agreement"] = agreement(ref_labels, cand_labels)
        figures["max_prob_diff"] = float(max(
            np.abs(class_probabilities(r, kind) - class_probabilities(c, kind)).max()
            for r, c in zip(reference, candidate)
        ))
    else:
        classes = range(1, max(2, reference.shape[1]))
        figures["dice_per_class"] = {str(c): dice(ref_labels, cand_labels, c) for c in classes}
        figures["iou_per_class"] = {str(c): iou(ref_labels, cand_labels, c) for c in classes}
        figures["dice"] = min(figures["dice_per_class"].values())
        figures["iou"] = min(figures["iou_per_class"].values())
        figures["changed_pixels"] = float((ref_labels != cand_labels).mean())
    return figures


def judge(figures: dict, bounds: list[Bound]) -> tuple[bool, list[str]]:
    """Whether figures meet every bound, and the bounds they miss (as text for reports)."""
    missed = [f"{b} (got {figures.get(b.metric)!r})" for b in bounds if not b.holds(figures)]
    return not missed, missed

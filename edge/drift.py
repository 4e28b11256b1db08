"""Drift of a candidate engine against the FP32 reference, in clinical terms.

Tensor differences alone hide what matters: a logit error of 0.3 may flip no diagnosis, or may
flip the one that counts. So every comparison reports task metrics (top-1 agreement for
classifiers; Dice, IoU and changed pixels between masks for segmenters) next to max/mean
absolute error, with the per-case values the gate needs for its confidence bounds. Judging
those figures against a budget is :mod:`edgemed.gate`'s job, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError
from .metrics import dice, iou
from .postprocess import class_probabilities, segmentation_probabilities


@dataclass(frozen=True)
class Metric:
    """A drift metric a budget may bound: which way is better, and which task it belongs to."""

    name: str
    direction: str  # ">=": larger is better; "<=": smaller is better
    task: str | None  # None: every task
    meaning: str


METRICS = {m.name: m for m in (
    Metric("agreement", ">=", "classification", "share of cases whose top-1 class equals FP32's"),
    Metric("max_prob_diff", "<=", "classification", "largest difference of any class probability"),
    Metric("dice", ">=", "segmentation", "Dice between candidate and FP32 masks, pooled over pixels, worst class"),
    Metric("iou", ">=", "segmentation", "IoU between candidate and FP32 masks, pooled, worst class"),
    Metric("changed_pixels", "<=", "segmentation", "share of pixels whose class differs from FP32's"),
    Metric("max_abs_diff", "<=", None, "largest absolute difference of any raw output value"),
    Metric("mean_abs_diff", "<=", None, "mean absolute difference of the raw outputs"),
)}


@dataclass(frozen=True)
class Comparison:
    """Candidate vs FP32 outputs on the same cases."""

    task: str
    cases: int
    values: dict[str, float]  # every applicable metric of METRICS, pooled over the cases
    figures: dict[str, float] = field(default_factory=dict)  # per-class breakdowns
    per_case: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. "agree" (bool), "dice" (float)


def _labels(outputs: np.ndarray, task: str, kind: str) -> np.ndarray:
    if task == "classification":
        return np.array([int(np.argmax(class_probabilities(o, kind))) for o in outputs], dtype=np.int64)
    return np.stack([np.argmax(segmentation_probabilities(o[None], kind), axis=0) for o in outputs])


def compare(reference: np.ndarray, candidate: np.ndarray, task: str, kind: str = "logits",
            label_names: list[str] | None = None) -> Comparison:
    """Compare stacked outputs (N, ...) of a candidate with the FP32 reference."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise BundleError(f"candidate outputs {candidate.shape} do not match the reference {reference.shape}",
                          "the artifact was built from a different model; rebuild the bundle")
    diff = np.abs(reference - candidate)
    values = {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
              "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
    ref_labels, cand_labels = _labels(reference, task, kind), _labels(candidate, task, kind)
    n = int(reference.shape[0])
    if task == "classification":
        agree = ref_labels == cand_labels
        values["agreement"] = float(agree.mean()) if n else 1.0
        values["max_prob_diff"] = float(max(
            (np.abs(class_probabilities(r, kind) - class_probabilities(c, kind)).max()
             for r, c in zip(reference, candidate)), default=0.0))
        return Comparison(task, n, values, per_case={"agree": agree})
    classes = range(1, max(2, reference.shape[1]))
    names = label_names if label_names and len(label_names) == max(2, reference.shape[1]) else None
    dices = {c: dice(ref_labels, cand_labels, c) for c in classes}
    ious = {c: iou(ref_labels, cand_labels, c) for c in classes}
    values["dice"], values["iou"] = min(dices.values()), min(ious.values())
    values["changed_pixels"] = float((ref_labels != cand_labels).mean()) if n else 0.0
    figures = {}
    for c in classes:
        label = names[c] if names else str(c)
        figures[f"dice[{label}]"], figures[f"iou[{label}]"] = dices[c], ious[c]
    case_dice = np.array([min(dice(r, k, c) for c in classes) for r, k in zip(ref_labels, cand_labels)])
    return Comparison(task, n, values, figures, per_case={"dice": case_dice})

"""What a drift comparison reports: the metrics a budget may bound (which way is better; each task names those its
comparison reports, :attr:`edgemed.tasks.base.Task.drift_metrics`) and the :class:`Comparison` record of a candidate
against FP32 on the same cases.

Each task computes its comparison (:meth:`edgemed.tasks.base.Task.start_comparison`); :mod:`edgemed.gate.drift` is the
entry point, :mod:`edgemed.gate.verdict` judges the figures against a budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BundleError


@dataclass(frozen=True)
class Metric:
    """A drift metric a budget may bound, and which way is better."""

    name: str
    direction: str  # ">=": larger is better; "<=": smaller is better
    meaning: str


METRICS = {m.name: m for m in (
    Metric("agreement", ">=", "share of cases whose top-1 class equals FP32's"),
    Metric("class_agreement", ">=", "per class FP32 assigns, the share of its cases that keep FP32's class; "
           "the worst class"),
    Metric("max_prob_diff", "<=", "largest difference of any class probability (observed)"),
    Metric("lesion_agreement", ">=", "share of cases where no lesion appears or vanishes"),
    Metric("case_dice", ">=", "mean over cases of the Dice between candidate and FP32 lesions "
           "(components of at least the lesion size)"),
    Metric("dice", ">=", "Dice between candidate and FP32 masks, pooled over pixels (observed)"),
    Metric("iou", ">=", "IoU between candidate and FP32 masks, pooled (observed)"),
    Metric("changed_pixels", "<=", "share of pixels whose class differs from FP32's (observed)"),
    Metric("recall", ">=", "share of FP32's detections the candidate also finds (same class, IoU >= 0.5)"),
    Metric("precision", ">=", "share of the candidate's detections that FP32 also finds"),
    Metric("box_iou", ">=", "mean IoU of matched boxes"),
    Metric("min_iou", ">=", "smallest IoU of a matched box (observed)"),
    Metric("max_score_diff", "<=", "largest score difference of matched boxes (observed)"),
    Metric("max_abs_diff", "<=", "largest absolute difference of any raw output value (observed)"),
    Metric("mean_abs_diff", "<=", "mean absolute difference of the raw outputs"),
)}


@dataclass(frozen=True)
class Comparison:
    """Candidate vs FP32 outputs on the same cases."""

    task: str
    cases: int
    values: dict[str, float]  # every applicable metric of METRICS, over the cases
    figures: dict[str, float] = field(default_factory=dict)  # per-class breakdowns
    per_case: dict[str, np.ndarray] = field(default_factory=dict)  # agree, lesion_agree (bool); dice, abs_diff
    # How the candidate moved each case's decision margin, per agreement metric: what the gate's
    # flip-rate estimate rests on, with the FP32 margins of every case (population_margins).
    # Classification: candidate minus FP32 top-1 margin; segmentation: minus the largest margin change
    # anywhere in the case, against how far the lesion/no-lesion call is from changing.
    shifts: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: list[str] | None = None


# metric -> the per-case key that holds each verdict case's stratum
STRATA = {"agreement": "fp32_class", "class_agreement": "fp32_class", "lesion_agreement": "fp32_lesion"}




def output_mismatch(reference: tuple, candidate: tuple) -> BundleError:
    """The refusal of candidate outputs of another shape than the reference's."""
    return BundleError(f"candidate outputs {candidate} do not match the reference {reference}",
                       "the artifact was built from a different model; rebuild the bundle")

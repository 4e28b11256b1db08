"""Drift of a candidate engine against the FP32 reference, in clinical terms, case by case.

Tensor differences alone hide what matters: a logit error of 0.3 may flip no diagnosis, or may
flip the one that counts. So every comparison reports task metrics (top-1 agreement for
classifiers; per-case Dice and lesion-level agreement for segmenters) next to raw output error,
with the per-case values and the decision margins the gate needs to bound them
(:mod:`edgemed.gate`). Judging those figures against a budget is the gate's job, not this module's.

Lesion-level agreement: per case, is there a lesion (a connected component of at least
``LESION_MIN_FRACTION`` of the image) in the FP32 mask, and is there one in the candidate's? A
lesion that appears or vanishes changes what a clinician does; a boundary pixel does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError
from .metrics import dice, iou
from .postprocess import class_probabilities, segmentation_probabilities

LESION_MIN_FRACTION = 0.001  # components smaller than 0.1% of the image (16 px at 128x128) are speckle


@dataclass(frozen=True)
class Metric:
    """A drift metric a budget may bound: which way is better, and which tasks it belongs to."""

    name: str
    direction: str  # ">=": larger is better; "<=": smaller is better
    tasks: tuple[str, ...]
    meaning: str


CLS, SEG, DET = ("classification",), ("segmentation",), ("detection",)
METRICS = {m.name: m for m in (
    Metric("agreement", ">=", CLS, "share of cases whose top-1 class equals FP32's"),
    Metric("class_agreement", ">=", CLS, "per class FP32 assigns, the share of its cases that keep FP32's class; "
           "the worst class"),
    Metric("max_prob_diff", "<=", CLS, "largest difference of any class probability (observed)"),
    Metric("lesion_agreement", ">=", SEG + DET, "share of cases where no lesion appears or vanishes"),
    Metric("case_dice", ">=", SEG, "mean over cases of the Dice between candidate and FP32 lesions "
           "(components of at least the lesion size)"),
    Metric("dice", ">=", SEG, "Dice between candidate and FP32 masks, pooled over pixels (observed)"),
    Metric("iou", ">=", SEG, "IoU between candidate and FP32 masks, pooled (observed)"),
    Metric("changed_pixels", "<=", SEG, "share of pixels whose class differs from FP32's (observed)"),
    Metric("recall", ">=", DET, "share of FP32's detections the candidate also finds (same class, IoU >= 0.5)"),
    Metric("precision", ">=", DET, "share of the candidate's detections that FP32 also finds"),
    Metric("box_iou", ">=", DET, "mean IoU of matched boxes"),
    Metric("min_iou", ">=", DET, "smallest IoU of a matched box (observed)"),
    Metric("max_score_diff", "<=", DET, "largest score difference of matched boxes (observed)"),
    Metric("max_abs_diff", "<=", CLS + SEG, "largest absolute difference of any raw output value (observed)"),
    Metric("mean_abs_diff", "<=", CLS + SEG, "mean absolute difference of the raw outputs"),
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


def decision_scores(outputs: np.ndarray, kind: str) -> np.ndarray:
    """(N, C>=2) scores whose argmax is the class: logits as they are (a single logit l as [0, l]),
    probabilities as they are (a single p as [1-p, p])."""
    x = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if x.shape[1] == 1:
        return np.concatenate([1.0 - x, x], axis=1) if kind == "probabilities" else np.concatenate(
            [np.zeros_like(x), x], axis=1)
    return x


def classification_margins(reference: np.ndarray, kind: str) -> np.ndarray:
    """FP32's margin between its top class and the runner-up, per case (>= 0)."""
    s = np.sort(decision_scores(reference, kind), axis=1)
    return s[:, -1] - s[:, -2]


def _margin_shifts(reference: np.ndarray, candidate: np.ndarray, kind: str) -> np.ndarray:
    """Candidate margin minus FP32 margin, both for FP32's top class: negative beyond -margin means a flip."""
    ref, cand = decision_scores(reference, kind), decision_scores(candidate, kind)
    top = ref.argmax(axis=1)
    rows = np.arange(len(ref))

    def margin_for_top(s: np.ndarray) -> np.ndarray:
        others = s.copy()
        others[rows, top] = -np.inf
        return s[rows, top] - others.max(axis=1)

    return margin_for_top(cand) - margin_for_top(ref)


def foreground_margin(output: np.ndarray, kind: str) -> np.ndarray:
    """(H, W) map whose sign is the lesion call: any foreground class beats background where it is > 0."""
    maps = np.asarray(output, np.float32)
    maps = maps[0] if maps.ndim == 4 else maps
    if maps.shape[0] == 1:
        return 2.0 * maps[0] - 1.0 if kind == "probabilities" else maps[0]
    return maps[1:].max(axis=0) - maps[0]


def _min_lesion(shape: tuple[int, ...]) -> int:
    return max(4, int(round(LESION_MIN_FRACTION * shape[-1] * shape[-2])))


def without_specks(labels: np.ndarray, cls: int, min_px: int) -> np.ndarray:
    """The class's mask (0/1) without connected components smaller than ``min_px``."""
    from scipy import ndimage

    found, count = ndimage.label(labels == cls)
    if count == 0:
        return np.zeros(labels.shape, np.uint8)
    sizes = np.bincount(found.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[found].astype(np.uint8)


def has_lesion(margin: np.ndarray, min_px: int) -> bool:
    from scipy import ndimage

    labels, count = ndimage.label(margin > 0)
    return count > 0 and int(np.bincount(labels.ravel())[1:].max()) >= min_px


def presence_margin(margin: np.ndarray, min_px: int, steps: int = 14) -> float:
    """How far (in margin units, uniformly over the image) the lesion call is from changing: the smallest
    shift t with has_lesion(margin - t) != has_lesion(margin) (sign by direction, bisected).

    A candidate whose margin map differs from FP32's by less than this everywhere makes the same call,
    because adding at most eps to every pixel can only grow components and subtracting can only shrink
    them: a certificate per case, which the gate turns into a flip-rate bound."""
    present = has_lesion(margin, min_px)
    lo, hi = 0.0, float(np.abs(margin).max()) + 1e-6
    for _ in range(steps):
        mid = (lo + hi) / 2
        shifted = margin - mid if present else margin + mid
        lo, hi = (lo, mid) if has_lesion(shifted, min_px) != present else (mid, hi)
    return lo


def population_margins(reference, task: str, kind: str) -> dict[str, np.ndarray]:
    """FP32 decision margins of every case it was run on, per agreement metric: the population the gate's
    flip-rate estimate is taken over (computed once per conversion, for every candidate). Detectors have
    none: after NMS a box's appearing or vanishing has no single margin, so their counts are bounded by
    counting alone."""
    if task == "detection":
        return {}
    if task == "classification":
        return {"agreement": classification_margins(reference, kind)}
    min_px = _min_lesion(reference.shape)
    return {"lesion_agreement": np.array([presence_margin(foreground_margin(o, kind), min_px) for o in reference])}


def compare(reference, candidate, task: str, kind: str = "logits",
            label_names: list[str] | None = None) -> Comparison:
    """Compare a candidate with the FP32 reference on the same cases: stacked outputs (N, ...) for
    classifiers and segmenters, lists of Detections for detectors."""
    if task == "detection":
        return compare_detections(reference, candidate)
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise BundleError(f"candidate outputs {candidate.shape} do not match the reference {reference.shape}",
                          "the artifact was built from a different model; rebuild the bundle")
    n = int(reference.shape[0])
    diff = np.abs(reference - candidate).reshape(n, -1) if n else np.zeros((0, 1))
    values = {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
              "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
    per_case = {"abs_diff": diff.mean(axis=1)}
    if task == "classification":
        ref_class = decision_scores(reference, kind).argmax(axis=1) if n else np.zeros(0, np.int64)
        cand_class = decision_scores(candidate, kind).argmax(axis=1) if n else np.zeros(0, np.int64)
        agree = ref_class == cand_class
        values["agreement"] = float(agree.mean()) if n else 1.0
        figures = {}
        for c in np.unique(ref_class):
            name = label_names[c] if label_names and c < len(label_names) else str(c)
            figures[f"class_agreement[{name}]"] = float(agree[ref_class == c].mean())
        values["class_agreement"] = min(figures.values(), default=1.0)
        values["max_prob_diff"] = float(max(
            (np.abs(class_probabilities(r, kind) - class_probabilities(c, kind)).max()
             for r, c in zip(reference, candidate)), default=0.0))
        return Comparison(task, n, values, figures=figures,
                          per_case={**per_case, "agree": agree, "fp32_class": ref_class},
                          shifts={"agreement": _margin_shifts(reference, candidate, kind)},
                          class_names=list(label_names) if label_names else None)
    return _compare_masks(reference, candidate, kind, label_names, values, per_case)


def compare_detections(reference: list, candidate: list, iou_threshold: float = 0.5) -> Comparison:
    """Match each case's candidate boxes to FP32's (same class, IoU >= 0.5): recall and precision of the
    FP32 detections, IoU and score change of matched boxes, and per case whether a lesion appeared or
    vanished (a box of either side left unmatched)."""
    from .detection import match

    if len(reference) != len(candidate):
        raise BundleError(f"{len(candidate)} candidate cases for {len(reference)} reference cases",
                          "the artifact was built from a different model; rebuild the bundle")
    recalled, precise, ious, score_diffs, agree = [], [], [], [], []
    for ref, cand in zip(reference, candidate):
        hit, iou = match(ref, cand, iou_threshold)
        found = hit >= 0
        used = np.zeros(len(cand), bool)
        used[hit[found]] = True
        recalled += found.tolist()
        precise += used.tolist()
        ious += iou[found].tolist()
        score_diffs += np.abs(ref.scores[found] - cand.scores[hit[found]]).tolist()
        agree.append(bool(found.all() and used.all()))
    n = len(reference)
    recalled, precise, agree = np.array(recalled, bool), np.array(precise, bool), np.array(agree, bool)
    values = {"recall": float(recalled.mean()) if recalled.size else 1.0,
              "precision": float(precise.mean()) if precise.size else 1.0,
              "box_iou": float(np.mean(ious)) if ious else 1.0, "min_iou": float(min(ious, default=1.0)),
              "max_score_diff": float(max(score_diffs, default=0.0)),
              "lesion_agreement": float(agree.mean()) if n else 1.0}
    figures = {"fp32_detections": float(len(recalled)), "candidate_detections": float(len(precise))}
    return Comparison("detection", n, values, figures,
                      per_case={"recalled": recalled, "precise": precise, "iou": np.array(ious), "lesion_agree": agree})


def _compare_masks(reference: np.ndarray, candidate: np.ndarray, kind: str, label_names: list[str] | None,
                   values: dict, per_case: dict) -> Comparison:
    n = int(reference.shape[0])
    ref_labels = np.stack([np.argmax(segmentation_probabilities(o[None], kind), axis=0) for o in reference])
    cand_labels = np.stack([np.argmax(segmentation_probabilities(o[None], kind), axis=0) for o in candidate])
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
    min_px = _min_lesion(reference.shape)
    # Per case, Dice of the lesions themselves: specks below the lesion size are not findings, and a
    # 3-pixel speck kept by one side only would otherwise score a whole case 0.
    case_dice = np.array([min(dice(without_specks(r, c, min_px), without_specks(k, c, min_px), 1) for c in classes)
                          for r, k in zip(ref_labels, cand_labels)])
    ref_margin = [foreground_margin(o, kind) for o in reference]
    cand_margin = [foreground_margin(o, kind) for o in candidate]
    lesion_agree = np.array([has_lesion(r, min_px) == has_lesion(c, min_px) for r, c in zip(ref_margin, cand_margin)],
                            dtype=bool)
    values["case_dice"] = float(case_dice.mean()) if n else 1.0
    values["lesion_agreement"] = float(lesion_agree.mean()) if n else 1.0
    largest_change = np.array([float(np.abs(c - r).max()) for r, c in zip(ref_margin, cand_margin)])
    return Comparison(
        "segmentation", n, values, figures,
        per_case={**per_case, "dice": case_dice, "lesion_agree": lesion_agree},
        shifts={"lesion_agreement": -largest_change})

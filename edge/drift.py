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
from .metrics import dice
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


@dataclass(frozen=True)
class Margins:
    """FP32 decision margins (>= 0) of cases, and the stratum of each: FP32's class, or whether FP32 found a
    lesion. The gate estimates flip rates per stratum, so flips concentrated in one class are not averaged
    away by the others (a real INT8 classifier flipped 3.9% of one class while keeping 99.55% overall)."""

    values: np.ndarray
    strata: np.ndarray

    def __len__(self) -> int:
        return int(self.values.size)

    def of(self, stratum: int) -> np.ndarray:
        return self.values[self.strata == stratum]

    @classmethod
    def join(cls, parts: list[Margins]) -> Margins:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(np.zeros(0), np.zeros(0, np.int64))
        return cls(np.concatenate([p.values for p in parts]), np.concatenate([p.strata for p in parts]))

    def spaced(self, most: int) -> Margins:
        """At most ``most`` of them, evenly spaced (deterministic)."""
        if len(self) <= most:
            return self
        idx = np.linspace(0, len(self) - 1, most).round().astype(int)
        return Margins(self.values[idx], self.strata[idx])


# metric -> the per-case key that holds each verdict case's stratum
STRATA = {"agreement": "fp32_class", "class_agreement": "fp32_class", "lesion_agreement": "fp32_lesion"}


def case_margins(output: np.ndarray, task: str, kind: str, min_px: int | None = None) -> dict[str, Margins]:
    """One case's FP32 margin per agreement metric (the population the gate's flip-rate estimate draws on is made
    of these, case by case, so no whole output set is ever held)."""
    if task == "classification":
        scores = decision_scores(output, kind)
        s = np.sort(scores, axis=1)
        return {"agreement": Margins(s[:, -1] - s[:, -2], scores.argmax(axis=1))}
    out = np.asarray(output, np.float32)
    maps = out[None] if out.ndim == 3 else out
    min_px = min_px or _min_lesion(maps.shape)
    values, strata = [], []
    for o in maps:
        margin = foreground_margin(o, kind)
        values.append(presence_margin(margin, min_px))
        strata.append(int(has_lesion(margin, min_px)))
    return {"lesion_agreement": Margins(np.array(values), np.array(strata, np.int64))}


MAX_POPULATION = 2000  # FP32 margins the flip-rate estimate draws on (evenly spaced when there are more)


def spaced_population(population: dict[str, Margins]) -> dict[str, Margins]:
    """The population the gate's flip-rate estimate is taken over, at most MAX_POPULATION margins per metric, evenly
    spaced: convert, certify and bench alike (bench on all 49,661 DS2 beats built a 19.7 GB matrix without it)."""
    return {name: m.spaced(MAX_POPULATION) for name, m in population.items()}


def population_margins(reference, task: str, kind: str) -> dict[str, Margins]:
    """FP32 decision margins of every case it was run on (at most MAX_POPULATION, spaced), per agreement metric:
    the population the gate's flip-rate estimate is taken over (computed once per conversion, for every
    candidate). Detectors have none: after NMS a box's appearing or vanishing has no single margin, so their
    counts are bounded by counting alone."""
    if task == "detection":
        return {}
    if task == "classification":
        return spaced_population(case_margins(np.asarray(reference), task, kind))
    parts = [case_margins(o, task, kind) for o in reference]
    if not parts:
        return {"lesion_agreement": Margins.join([])}
    return spaced_population({"lesion_agreement": Margins.join([p["lesion_agreement"] for p in parts])})


class ClassComparison:
    """Candidate vs FP32 classifier outputs, case by case."""

    def __init__(self, kind: str = "logits", label_names: list[str] | None = None) -> None:
        self.kind, self.label_names = kind, label_names
        self.reference: list[np.ndarray] = []
        self.candidate: list[np.ndarray] = []

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        r, c = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
        if r.shape != c.shape:
            raise _mismatch(r.shape, c.shape)
        self.reference.append(r.reshape(-1, r.shape[-1]) if r.ndim > 1 else r[None])
        self.candidate.append(c.reshape(-1, c.shape[-1]) if c.ndim > 1 else c[None])

    def finish(self) -> Comparison:
        reference = np.concatenate(self.reference) if self.reference else np.zeros((0, 2), np.float32)
        candidate = np.concatenate(self.candidate) if self.candidate else np.zeros((0, 2), np.float32)
        kind, label_names = self.kind, self.label_names
        n = int(reference.shape[0])
        diff = np.abs(reference - candidate).reshape(n, -1) if n else np.zeros((0, 1))
        values = {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
                  "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
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
        return Comparison("classification", n, values, figures=figures,
                          per_case={"abs_diff": diff.mean(axis=1), "agree": agree, "fp32_class": ref_class},
                          shifts={"agreement": _margin_shifts(reference, candidate, kind) if n else np.zeros(0)},
                          class_names=list(label_names) if label_names else None)


class MaskComparison:
    """Candidate vs FP32 segmentation outputs, one case at a time: only per-case figures and pooled pixel counts
    are kept, never the output maps (a 584x568 U-Net's verdict on 1,000 cases would hold 2.6 GB of them)."""

    def __init__(self, kind: str = "logits", label_names: list[str] | None = None) -> None:
        self.kind, self.label_names = kind, label_names
        self.n = 0
        self.max_diff, self.sum_diff, self.elements = 0.0, 0.0, 0
        self.abs_diff: list[float] = []
        self.case_dice: list[float] = []
        self.lesion_agree: list[bool] = []
        self.fp32_lesion: list[int] = []
        self.largest_change: list[float] = []
        self.changed = self.pixels = 0
        self.overlap: dict[int, list[int]] = {}  # class -> [both, reference, candidate, union] pixel counts
        self.classes = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        r, c = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
        if r.shape != c.shape:
            raise _mismatch(r.shape, c.shape)
        for ro, co in zip(r[None] if r.ndim == 3 else r, c[None] if c.ndim == 3 else c):
            self._one(ro, co)

    def _one(self, r: np.ndarray, c: np.ndarray) -> None:
        kind = self.kind
        d = np.abs(r - c)
        self.max_diff = max(self.max_diff, float(d.max()) if d.size else 0.0)
        self.sum_diff += float(d.sum(dtype=np.float64))
        self.elements += int(d.size)
        self.abs_diff.append(float(d.mean()) if d.size else 0.0)
        self.classes = max(2, r.shape[0])
        ref_labels = np.argmax(segmentation_probabilities(r[None], kind), axis=0)
        cand_labels = np.argmax(segmentation_probabilities(c[None], kind), axis=0)
        self.changed += int((ref_labels != cand_labels).sum())
        self.pixels += int(ref_labels.size)
        min_px = _min_lesion(r.shape)
        dices = []
        for k in range(1, self.classes):
            pr, pc = ref_labels == k, cand_labels == k
            counts = self.overlap.setdefault(k, [0, 0, 0, 0])
            counts[0] += int((pr & pc).sum())
            counts[1] += int(pr.sum())
            counts[2] += int(pc.sum())
            counts[3] += int((pr | pc).sum())
            # Per case, Dice of the lesions themselves: specks below the lesion size are not findings, and a
            # 3-pixel speck kept by one side only would otherwise score a whole case 0.
            dices.append(dice(without_specks(ref_labels, k, min_px), without_specks(cand_labels, k, min_px), 1))
        self.case_dice.append(min(dices))
        ref_margin, cand_margin = foreground_margin(r, kind), foreground_margin(c, kind)
        ref_has = has_lesion(ref_margin, min_px)
        self.lesion_agree.append(ref_has == has_lesion(cand_margin, min_px))
        self.fp32_lesion.append(int(ref_has))
        self.largest_change.append(float(np.abs(cand_margin - ref_margin).max()))
        self.n += 1

    def finish(self) -> Comparison:
        n = self.n
        mean = self.sum_diff / self.elements if self.elements else 0.0
        values = {"max_abs_diff": self.max_diff, "mean_abs_diff": mean}
        names = self.label_names if self.label_names and len(self.label_names) == self.classes else None
        figures = {}
        dices, ious = [], []
        for k, (both, ref, cand, union) in sorted(self.overlap.items()):
            d = 1.0 if ref + cand == 0 else 2.0 * both / (ref + cand)
            j = 1.0 if union == 0 else both / union
            label = names[k] if names else str(k)
            figures[f"dice[{label}]"], figures[f"iou[{label}]"] = d, j
            dices.append(d)
            ious.append(j)
        values["dice"], values["iou"] = min(dices, default=1.0), min(ious, default=1.0)
        values["changed_pixels"] = self.changed / self.pixels if self.pixels else 0.0
        case_dice = np.array(self.case_dice)
        lesion_agree = np.array(self.lesion_agree, dtype=bool)
        values["case_dice"] = float(case_dice.mean()) if n else 1.0
        values["lesion_agreement"] = float(lesion_agree.mean()) if n else 1.0
        return Comparison(
            "segmentation", n, values, figures,
            per_case={"abs_diff": np.array(self.abs_diff), "dice": case_dice, "lesion_agree": lesion_agree,
                      "fp32_lesion": np.array(self.fp32_lesion, np.int64)},
            shifts={"lesion_agreement": -np.array(self.largest_change)})


class DetectionComparison:
    """Candidate vs FP32 detections, case by case (each case: a Detections)."""

    def __init__(self, kind: str = "detections", label_names: list[str] | None = None) -> None:
        self.reference: list = []
        self.candidate: list = []

    def add(self, reference, candidate) -> None:
        self.reference.append(reference)
        self.candidate.append(candidate)

    def finish(self) -> Comparison:
        return compare_detections(self.reference, self.candidate)


COMPARISONS = {"classification": ClassComparison, "segmentation": MaskComparison, "detection": DetectionComparison}


def start_comparison(task: str, kind: str = "logits", label_names: list[str] | None = None):
    """An empty comparison to feed case by case (``add(reference, candidate)``, then ``finish()``)."""
    return COMPARISONS[task](kind, label_names)


def _mismatch(reference: tuple, candidate: tuple) -> BundleError:
    return BundleError(f"candidate outputs {candidate} do not match the reference {reference}",
                       "the artifact was built from a different model; rebuild the bundle")


def compare(reference, candidate, task: str, kind: str = "logits",
            label_names: list[str] | None = None) -> Comparison:
    """Compare a candidate with the FP32 reference on the same cases: stacked outputs (N, ...) or any sequences of
    per-case outputs for classifiers and segmenters, lists of Detections for detectors."""
    if task == "detection":
        return compare_detections(reference, candidate)
    if isinstance(reference, np.ndarray) and isinstance(candidate, np.ndarray) and reference.shape != candidate.shape:
        raise _mismatch(reference.shape, candidate.shape)
    comparison = start_comparison(task, kind, label_names)
    if task == "classification" and isinstance(reference, np.ndarray):
        comparison.add(reference, candidate)
    else:
        for r, c in zip(reference, candidate, strict=True):
            comparison.add(r, c)
    return comparison.finish()


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

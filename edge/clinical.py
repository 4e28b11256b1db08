"""The candidate against ground truth, beside FP32 on the same cases: what matters clinically.

With labelled data (``--val``/``--val-labels``) an artifact must keep accuracy and each class's
sensitivity and specificity (classification), Dice against the ground-truth masks
(segmentation), or each class's lesion sensitivity (detection), within a non-inferiority margin
(default 0.5 point) of the FP32 model on the same cases. The comparison is paired, which is far
more sensitive than comparing two accuracies: only the cases where the two disagree on correctness
carry information (McNemar's exact test on
those discordant pairs; a paired bootstrap for per-case Dice).

A figure *passes* when the drop's upper bound is within the margin, *fails* when even its lower
bound is beyond it, and is *uncertified* in between.
"""

from __future__ import annotations

import numpy as np

from . import stats
from .manifest import VERDICT_ORDER, ClinicalRecord, PairedTest
from .metrics import dice
from .postprocess import class_probabilities, segmentation_probabilities

DEFAULT_MARGIN = 0.005


def _state(low: float, high: float, margin: float) -> str:
    return "passed" if high < margin else "failed" if low > margin else "uncertified"


def _paired(correct_fp32: np.ndarray, correct_cand: np.ndarray, margin: float, what: str) -> PairedTest:
    n = int(correct_fp32.size)
    b = int(np.sum(correct_fp32 & ~correct_cand))  # right only for FP32
    c = int(np.sum(~correct_fp32 & correct_cand))  # right only for the candidate
    lo, hi = stats.paired_drop_bounds(b, c, n)
    fp32, cand = (float(correct_fp32.mean()), float(correct_cand.mean())) if n else (1.0, 1.0)
    return PairedTest(cases=n, fp32=fp32, candidate=cand, drop=fp32 - cand, drop_low=lo, drop_high=hi,
                      verdict=_state(lo, hi, margin), p_mcnemar=stats.mcnemar_exact(b, c),
                      p_noninferiority=stats.noninferiority_p(b, c, n, margin),
                      method=f"{what}: {b} case(s) right only for FP32, {c} only for the candidate, of {n}; "
                             "exact paired bounds, McNemar")


def _classification(truth: np.ndarray, fp32: np.ndarray, cand: np.ndarray, kind: str, labels: list[str],
                    margin: float) -> dict[str, PairedTest]:
    pf = np.array([int(np.argmax(class_probabilities(o, kind))) for o in fp32])
    pc = np.array([int(np.argmax(class_probabilities(o, kind))) for o in cand])
    tests = {"accuracy": _paired(pf == truth, pc == truth, margin, "accuracy")}
    for k, name in enumerate(labels):
        pos, neg = truth == k, truth != k
        if pos.any():
            tests[f"sensitivity[{name}]"] = _paired(pf[pos] == k, pc[pos] == k, margin, f"sensitivity of {name}")
        if neg.any() and len(labels) > 2:  # with two classes, one class's specificity is the other's sensitivity
            tests[f"specificity[{name}]"] = _paired(pf[neg] != k, pc[neg] != k, margin, f"specificity of {name}")
    return tests


def _segmentation(truth: list[np.ndarray], fp32, cand, kind: str, labels: list[str],
                  margin: float) -> dict[str, PairedTest]:
    """Per-case Dice of FP32 and the candidate against the masks, in one pass over the cases (outputs may
    stream from disk: a large segmenter's outputs are never all held at once)."""
    from PIL import Image

    def mask(output: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        m = np.argmax(segmentation_probabilities(output, kind), axis=0).astype(np.uint8)
        return m if m.shape == shape else np.asarray(Image.fromarray(m).resize(shape[::-1], Image.Resampling.NEAREST))

    classes = range(1, max(2, len(labels)))
    df: dict[int, list[float]] = {k: [] for k in classes}
    dc: dict[int, list[float]] = {k: [] for k in classes}
    for f, c, t in zip(fp32, cand, truth):
        mf, mc = mask(np.asarray(f), t.shape), mask(np.asarray(c), t.shape)
        for k in classes:
            df[k].append(dice(mf, t, k))
            dc[k].append(dice(mc, t, k))
    tests = {}
    for k in classes:
        a, b = np.array(df[k]), np.array(dc[k])
        lo, hi = stats.bootstrap_mean(a - b)
        name = labels[k] if k < len(labels) else str(k)
        tests[f"dice[{name}]"] = PairedTest(
            cases=len(a), fp32=float(a.mean()), candidate=float(b.mean()), drop=float((a - b).mean()),
            drop_low=lo, drop_high=hi, verdict=_state(lo, hi, margin),
            method=f"mean per-case Dice vs ground truth of {name}, paired bootstrap over {len(a)} cases")
    return tests


def _detection(truth: list, fp32: list, cand: list, labels: list[str], margin: float) -> dict[str, PairedTest]:
    """Per class, lesion sensitivity at the operating threshold, paired lesion by lesion: a lesion found by
    one model and missed by the other is a discordant pair."""
    from .detection import Detections, match

    found_f, found_c, classes = [], [], []
    for (boxes, cls), f, c in zip(truth, fp32, cand):
        gt = Detections(np.asarray(boxes, np.float32), np.ones(len(boxes), np.float32), np.asarray(cls, np.int64))
        found_f.append(match(gt, f)[0] >= 0)
        found_c.append(match(gt, c)[0] >= 0)
        classes.append(gt.classes)
    ff, fc, k = (np.concatenate(x) if x else np.zeros(0) for x in (found_f, found_c, classes))
    tests = {}
    for index, name in enumerate(labels):
        mine = k == index
        if mine.any():
            tests[f"sensitivity[{name}]"] = _paired(ff[mine].astype(bool), fc[mine].astype(bool), margin,
                                                    f"lesion sensitivity of {name} (IoU >= 0.5)")
    return tests


def _stacked(outputs) -> np.ndarray:
    """Classifier outputs, stacked (N, C): from an array, or from per-case (1, C) outputs."""
    if isinstance(outputs, np.ndarray):
        return outputs
    rows = [np.asarray(o, np.float32).reshape(-1, np.asarray(o).shape[-1]) for o in outputs]
    return np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)


def judge_clinical(truth, fp32, cand, task: str, kind: str, labels: list[str],
                   margin: float = DEFAULT_MARGIN, evaluated_on: str = "") -> ClinicalRecord:
    """Non-inferiority of the candidate to FP32 on labelled cases (truth: class indices, masks, or a
    detector's (boxes, classes) in the model's input frame)."""
    if task == "classification":
        tests = _classification(np.asarray(truth, int), _stacked(fp32), _stacked(cand), kind, labels, margin)
    elif task == "detection":
        tests = _detection(list(truth), list(fp32), list(cand), labels, margin)
    else:
        tests = _segmentation(list(truth), fp32, cand, kind, labels, margin)
    verdict = max((t.verdict for t in tests.values()), key=VERDICT_ORDER.__getitem__, default="uncertified")
    missed = [f"{name}: drop {t.drop * 100:+.2f} points (95% bounds {t.drop_low * 100:+.2f} .. "
              f"{t.drop_high * 100:+.2f}) against a {margin * 100:g}-point margin -> {t.verdict}"
              for name, t in tests.items() if t.verdict != "passed"]
    return ClinicalRecord(verdict=verdict, margin=margin, cases=len(truth), evaluated_on=evaluated_on,
                          tests=tests, missed=missed)

"""The candidate against ground truth, beside FP32 on the same cases: what matters clinically.

With labelled data (``--val``/``--val-labels``) an artifact must keep accuracy and each class's
sensitivity and specificity (classification), Dice against the ground-truth masks
(segmentation), or each class's lesion sensitivity (detection), within a non-inferiority margin
(default 0.5 point) of the FP32 model on the same cases. The comparison is paired, which is far
more sensitive than comparing two accuracies: only the cases where the two disagree on correctness
carry information (McNemar's exact test on
those discordant pairs; a paired bootstrap for per-case Dice).

A figure *passes* when the drop's upper bound is within the margin, *fails* when even its lower
bound is beyond it, and is *uncertified* in between. Which figures a task is held to is the task's
(:meth:`edgemed.tasks.base.Task.clinical_tests`); this module holds the statistics and the verdict rule.
"""

from __future__ import annotations

import numpy as np

from ..manifest import VERDICT_ORDER, ClinicalRecord, PairedTest
from . import stats

DEFAULT_MARGIN = 0.005


def noninferiority_state(low: float, high: float, margin: float) -> str:
    """A drop's verdict from its bounds: passed within the margin, failed beyond it, uncertified in between."""
    return "passed" if high < margin else "failed" if low > margin else "uncertified"


def paired_test(correct_fp32: np.ndarray, correct_cand: np.ndarray, margin: float, what: str) -> PairedTest:
    """Per case right/wrong for FP32 and the candidate: the drop in the share right, with exact paired bounds."""
    n = int(correct_fp32.size)
    b = int(np.sum(correct_fp32 & ~correct_cand))  # right only for FP32
    c = int(np.sum(~correct_fp32 & correct_cand))  # right only for the candidate
    lo, hi = stats.paired_drop_bounds(b, c, n)
    fp32, cand = (float(correct_fp32.mean()), float(correct_cand.mean())) if n else (1.0, 1.0)
    return PairedTest(cases=n, fp32=fp32, candidate=cand, drop=fp32 - cand, drop_low=lo, drop_high=hi,
                      verdict=noninferiority_state(lo, hi, margin), p_mcnemar=stats.mcnemar_exact(b, c),
                      p_noninferiority=stats.noninferiority_p(b, c, n, margin),
                      method=f"{what}: {b} case(s) right only for FP32, {c} only for the candidate, of {n}; "
                             "exact paired bounds, McNemar")


def stacked_scores(outputs) -> np.ndarray:
    """Classifier outputs, stacked (N, C): from an array, or from per-case (1, C) outputs."""
    if isinstance(outputs, np.ndarray):
        return outputs
    rows = [np.asarray(o, np.float32).reshape(-1, np.asarray(o).shape[-1]) for o in outputs]
    return np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)


def clinical_record(tests: dict[str, PairedTest], margin: float, cases: int, evaluated_on: str = "") -> ClinicalRecord:
    """The clinical verdict of a task's tests (:meth:`edgemed.tasks.base.Task.clinical_tests`): the worst of
    them, with a line for each test that did not pass."""
    verdict = max((t.verdict for t in tests.values()), key=VERDICT_ORDER.__getitem__, default="uncertified")
    missed = [f"{name}: drop {t.drop * 100:+.2f} points (95% bounds {t.drop_low * 100:+.2f} .. "
              f"{t.drop_high * 100:+.2f}) against a {margin * 100:g}-point margin -> {t.verdict}"
              for name, t in tests.items() if t.verdict != "passed"]
    return ClinicalRecord(verdict=verdict, margin=margin, cases=cases, evaluated_on=evaluated_on,
                          tests=tests, missed=missed)

"""The saliency-drift term: did quantization move *where* the model looks, even where it kept the diagnosis?

A classifier can keep FP32's top-1 answer on every case while its INT8 twin looks somewhere else (published
measurements: INT8 moves class-activation maps by different amounts per architecture), and a clinician reading
the overlay would be shown the wrong region. Three figures per verdict case compare the candidate's map of FP32's
class with FP32's own, both at the model's input resolution (independent of the frame's size):

- ``saliency_rank``: Spearman rank correlation of the two maps' pixels (1: the same ordering of where it looks);
- ``saliency_overlap``: the share of FP32's top-10% pixels that are also in the candidate's top 10%;
- ``saliency_pointing``: whether the candidate's hottest pixel lies inside FP32's top-10% region (counted).

Bounds follow the gate's rules (:mod:`edgemed.gate.verdict`, :mod:`edgemed.measures.stats`): means of per-case
figures by the seeded one-sided 95% bootstrap, the pointing rate by the exact (Clopper-Pearson) bound on the count; a
term holds when its lower bound reaches the budget, fails when even its upper bound misses it, and is open otherwise.
:func:`judge_saliency` owns the rule and :data:`DEFAULT_SALIENCY_BUDGET`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from ..manifest import VERDICT_ORDER, DriftRecord, Estimate
from ..measures import stats
from .verdict import PARITY

TOP_FRACTION = 0.10  # the "region" a map points at: its hottest 10% of pixels
# Default budget. Measured on the shipped cnn_breastmnist converted with --explain cam (calibrated on BreastMNIST
# train images), FP32 ONNX Runtime against each artifact on the 156 BreastMNIST test images: OpenVINO FP32 mean
# rank 1.0000 / mean overlap 1.0000 / pointing 156 of 156; ORT INT8 0.9990 / 0.9832 / 156 of 156; OpenVINO INT8
# 0.9969 / 0.9691 / 155 of 156. The same maps rolled by half the feature map (every diagnosis unchanged: global
# pooling does not see a roll): rank -0.57, overlap 0.007, pointing 1-2 of 156. The bars sit well below what
# honest INT8 reaches here (published INT8 map shifts differ by architecture, and the budget is for every model)
# and far above a moved map: keep 90% of the rank order, 70% of the hot region, and point into FP32's region on
# 90% of cases, each at its 95% lower bound (pointing then needs >= 29 cases with no miss).
DEFAULT_SALIENCY_BUDGET = {"saliency_rank": 0.9, "saliency_overlap": 0.7, "saliency_pointing": 0.9}
COUNTED = ("saliency_pointing",)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps' pixels. Two constant maps (e.g. both all-zero: no evidence anywhere) agree
    (1.0) if equal, and a constant map against a varying one does not (0.0): rho itself is undefined there."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    flat_x, flat_y = bool(np.ptp(x) == 0), bool(np.ptp(y) == 0)
    if flat_x or flat_y:
        return 1.0 if flat_x and flat_y and np.array_equal(x, y) else 0.0
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def top_region(m: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Flat indices of the map's hottest ``fraction`` of pixels (at least one; ties broken by position, stably)."""
    flat = np.asarray(m).ravel()
    k = max(1, math.ceil(fraction * flat.size))
    return np.argsort(-flat, kind="stable")[:k]


def compare_maps(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float, bool]:
    """(rank correlation, top-region overlap, pointing) of one case's candidate map against FP32's."""
    if reference.shape != candidate.shape:
        raise ValueError(f"maps of shapes {reference.shape} and {candidate.shape} cannot be compared")
    ref_top = top_region(reference)
    overlap = len(np.intersect1d(ref_top, top_region(candidate))) / len(ref_top)
    pointing = int(np.argmax(np.asarray(candidate).ravel())) in set(ref_top.tolist())
    return rank_correlation(reference, candidate), float(overlap), bool(pointing)


@dataclass
class SaliencyDrift:
    """The term's verdict on one candidate: passed, failed or uncertified, each figure with n and bounds."""

    verdict: str
    cases: int
    metrics: dict[str, Estimate]
    missed: list[str] = field(default_factory=list)
    worst_cases: list[int] = field(default_factory=list)  # by rank correlation, worst first (for a report)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


def judge_saliency(pairs: Iterable[tuple[np.ndarray, np.ndarray]], budget: dict[str, float] | None = None
                   ) -> SaliencyDrift:
    """The saliency-drift rule: ``pairs`` of (FP32 map, candidate map) per verdict case, of FP32's class, at the
    model's input resolution; ``budget``: metric -> lowest acceptable value (default
    :data:`DEFAULT_SALIENCY_BUDGET`). No cases: uncertified."""
    budget = dict(DEFAULT_SALIENCY_BUDGET if budget is None else budget)
    unknown = sorted(set(budget) - set(DEFAULT_SALIENCY_BUDGET))
    if unknown:
        raise ValueError(f"unknown saliency metric(s) {unknown}; use {sorted(DEFAULT_SALIENCY_BUDGET)}")
    rows = [compare_maps(r, c) for r, c in pairs]
    n = len(rows)
    if n == 0:
        return SaliencyDrift("uncertified", 0, {}, ["no verdict cases with maps"])
    rank, overlap, pointing = (np.array([row[i] for row in rows], np.float64) for i in range(3))
    metrics = {}
    for name, values in (("saliency_rank", rank), ("saliency_overlap", overlap)):
        lo, hi = stats.bootstrap_mean(values)
        metrics[name] = Estimate(value=float(values.mean()), cases=n, low=lo, high=hi, confidence=stats.CONFIDENCE,
                                 method=f"bootstrap over {n} cases")
    k = int(pointing.sum())
    lo, hi = stats.clopper_pearson(k, n)
    metrics["saliency_pointing"] = Estimate(value=k / n, cases=n, low=lo, high=hi, confidence=stats.CONFIDENCE,
                                            method=f"Clopper-Pearson, {k} of {n} cases")
    states, missed = [], []
    for name, bar in budget.items():
        est = metrics[name]
        state = "pass" if est.low >= bar else "fail" if est.high < bar else "open"
        states.append(state)
        if state != "pass":
            missed.append(f"{name}>={bar:g}{'' if state == 'fail' else ' not certified'}: {est.value:.4f} "
                          f"(95% bounds {est.low:.4f}..{est.high:.4f}, {n} cases)")
    verdict = "failed" if "fail" in states else "uncertified" if "open" in states else "passed"
    return SaliencyDrift(verdict, n, metrics, missed, np.argsort(rank, kind="stable")[:5].tolist())


def with_saliency(record: DriftRecord, term: SaliencyDrift) -> DriftRecord:
    """An artifact's drift record with the saliency term folded in: its figures beside the task's, its misses
    added, and the verdict the worse of the two (a map that moved fails an artifact that kept every answer).
    The budget text stays the task's: the saliency bars are :data:`DEFAULT_SALIENCY_BUDGET`, named in each miss.

    An FP32 artifact certified by parity (the reference's arithmetic on another engine, within round-off on every
    case) is certified on however few cases that takes, and its maps are that same arithmetic: a term left open
    only by the number of cases (8 verdict images cannot bound pointing at 0.9) does not take that certificate
    away; a term that fails does (measured: on the 8 shipped BUSI samples OpenVINO FP32 matched FP32's maps
    exactly, rank 1.0000, and was otherwise left uncertified)."""
    verdict = max(record.verdict, term.verdict, key=VERDICT_ORDER.__getitem__)
    if record.budget == PARITY and record.passed and term.verdict == "uncertified":
        verdict = record.verdict
    missed = list(record.missed) + [f"saliency drift: {m}" for m in term.missed]
    return msgspec.structs.replace(record, verdict=verdict, metrics={**record.metrics, **term.metrics},
                                   missed=missed)

"""The drift gate: the one set of rules by which an artifact passes, fails or stays uncertified.

Convert's parity check of the FP32 export, the verdicts on quantized artifacts, ``verify`` on
the device and ``bench`` on the user's data all call :func:`judge` (or :func:`judge_parity`,
its rule for the FP32 export) and print with :func:`summary`. A budget is text such as
``"agreement>=0.999"`` parsed by :meth:`Budget.parse`; the defaults live in
:func:`default_budget` and nowhere else.

Every figure carries the number of cases it rests on and, where the cases are a sample, a
one-sided 95% bound (:mod:`edgemed.stats`). A term ``metric >= v`` holds only when the lower
bound is at least ``v``; it fails when even the upper bound is below ``v``; in between, the data
cannot decide and the artifact is *uncertified*, with the number of cases that would decide it.
Agreement (top-1, or lesion present/absent) is bounded by counting flips (Clopper-Pearson) or,
where the decision margins say more, by the flip rate the margins imply
(:func:`edgemed.stats.flip_rate_bound`); means of per-case figures by bootstrap; maxima are
observed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from . import stats
from .drift import METRICS, Comparison
from .errors import OptionError
from .manifest import DriftRecord, Estimate

# Classifiers: MLPerf's "high accuracy" bar (99.9% of FP32's answers). Segmenters: what changes care
# is a lesion that appears or vanishes, and per case the masks must still overlap at Dice >= 0.99:
# boundary pixels that move by one do not fail an artifact, a changed finding does. Lesion agreement
# is held at 99%: segmentation data sets have hundreds of masks, not thousands, and the lesion-level
# certificate (a case keeps its call if no pixel's margin moves further than the call is from
# changing) is conservative; at 99.9% every quantized segmenter here stayed uncertified, FP16 included.
# A stricter budget is one --drift-budget away.
# Detectors: the same lesion-level bar as segmenters (a lesion found or lost changes care), and the
# boxes FP32 and the candidate both find must overlap at IoU >= 0.9 on average.
# Signal classifiers (ECG beats): overall agreement hides the rare classes that matter (a model keeps 99.9% by
# getting N beats right while flipping S beats), so every class must also keep FP32's calls: of the beats FP32
# calls S, at least 99% must stay S, and so for every class (the worst class is the one judged).
_SIGNAL_BUDGET = "agreement>=0.999,class_agreement>=0.99"
_DEFAULT_BUDGETS = {
    "classification": "agreement>=0.999",
    "segmentation": "lesion_agreement>=0.99,case_dice>=0.99",
    "detection": "lesion_agreement>=0.99,box_iou>=0.9",
}
MIN_CASES_FOR_MARGINS = 30  # fewer verdict cases than this say too little about the margin shifts
# metric -> per-case (per-detection for recall/precision) booleans, bounded by counting or margins
COUNTED = {"agreement": "agree", "lesion_agreement": "lesion_agree", "recall": "recalled", "precision": "precise"}
CLASSWISE = {"class_agreement": "agree"}  # counted per FP32 class (per_case["fp32_class"]); the worst class judged
BOOTSTRAPPED = {"case_dice": "dice", "mean_abs_diff": "abs_diff", "box_iou": "iou"}  # metric -> per-case value
PARITY = "parity"
# The FP32 export must reproduce the source: |diff| <= ATOL + RTOL * max|reference| on every probe output,
# with the same classes and masks.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-5

_TERM = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*$")
# Ranges a bound can meaningfully take (a Dice of 2 can never be met; a negative error never).
_RANGE = {name: (0.0, 1.0) for name in ("agreement", "class_agreement", "dice", "iou", "changed_pixels",
                                        "max_prob_diff",
                                        "lesion_agreement", "case_dice", "recall", "precision", "box_iou", "min_iou",
                                        "max_score_diff")}


@dataclass(frozen=True)
class Bound:
    metric: str
    op: str
    value: float

    def holds(self, got: float | None) -> bool:
        if got is None:
            return False
        return got >= self.value if self.op == ">=" else got <= self.value

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Budget:
    """What an artifact must meet, in the task's own terms."""

    terms: tuple[Bound, ...]

    @classmethod
    def parse(cls, text: str, task: str) -> Budget:
        """Parse "dice>=0.995,max_abs_diff<=0.1"; refuses unknown metrics, wrong-way and impossible bounds."""
        example = _DEFAULT_BUDGETS.get(task, "agreement>=0.999")
        if not isinstance(text, str) or not text.strip():
            raise OptionError("the drift budget is empty", f"write e.g. {example!r}")
        bounds = []
        for term in text.split(","):
            m = _TERM.match(term)
            if not m:
                raise OptionError(f"drift budget term {term.strip()!r} does not parse",
                                  "write metric>=value or metric<=value, comma-separated, e.g. 'dice>=0.995'")
            name, op, value = m.group(1), m.group(2), float(m.group(3))
            metric = METRICS.get(name)
            if metric is None:
                raise OptionError(f"drift budget names unknown metric {name!r}", f"use one of {', '.join(METRICS)}")
            if metric.direction != op:
                raise OptionError(f"drift budget bound {term.strip()!r} points the wrong way",
                                  f"{name} is bounded with {metric.direction}")
            if task not in metric.tasks:
                raise OptionError(f"drift budget metric {name!r} does not apply to {task}",
                                  f"for {task} use e.g. {example!r}")
            lo, hi = _RANGE.get(name, (0.0, float("inf")))
            if not lo <= value <= hi:
                raise OptionError(f"drift budget bound {term.strip()!r} is outside {name}'s range {lo:g}..{hi:g}",
                                  f"write e.g. {example!r}")
            bounds.append(Bound(name, op, value))
        return cls(tuple(bounds))

    @property
    def primary(self) -> Bound:
        return self.terms[0]

    def __str__(self) -> str:
        return ",".join(map(str, self.terms))


def default_budget(task: str, input_kind: str = "image") -> Budget:
    """The budget an artifact must meet when the user sets none."""
    if input_kind == "signal" and task == "classification":
        return Budget.parse(_SIGNAL_BUDGET, task)
    return Budget.parse(_DEFAULT_BUDGETS[task], task)


Population = dict[str, np.ndarray]  # FP32 decision margins of every case, per agreement metric


def estimates(comparison: Comparison, population: Population | None = None,
              observed: bool = False) -> dict[str, Estimate]:
    """Every figure with its case count and, where the cases are a sample, its one-sided 95% bounds
    (``observed``: values only, for rules that judge the cases themselves, like parity)."""
    n = comparison.cases
    out = {}
    for name, value in comparison.values.items():
        if observed:
            out[name] = Estimate(value=float(value), cases=n, method=f"observed on {n} cases")
        elif name in COUNTED and COUNTED[name] in comparison.per_case:
            out[name] = _agreement(name, comparison, population)
        elif name in CLASSWISE and "fp32_class" in comparison.per_case:
            out[name] = _worst_class(comparison)
        elif name in BOOTSTRAPPED and BOOTSTRAPPED[name] in comparison.per_case:
            lo, hi = stats.bootstrap_mean(comparison.per_case[BOOTSTRAPPED[name]])
            out[name] = Estimate(value=float(value), cases=n, low=lo, high=hi, confidence=stats.CONFIDENCE,
                                 method=f"bootstrap over {n} cases")
        else:
            out[name] = Estimate(value=float(value), cases=n, method=f"observed on {n} cases")
    return out


def _agreement(name: str, comparison: Comparison, population: Population | None) -> Estimate:
    agree = comparison.per_case[COUNTED[name]]
    n = int(agree.size)
    flips = n - int(agree.sum())
    flip_lo, flip_hi = stats.clopper_pearson(flips, n)
    low, method = 1.0 - flip_hi, f"{flips} flip(s) in {n} cases (Clopper-Pearson)"
    margins = (population or {}).get(name)
    shifts = comparison.shifts.get(name)
    if margins is not None and shifts is not None and n >= MIN_CASES_FOR_MARGINS:
        rate, rate_hi = stats.flip_rate_bound(margins, shifts)
        # The margin model may certify where counts cannot, but never against the counts: if the flips
        # seen are more than it allows, the counts decide.
        if flip_lo <= rate_hi < flip_hi:
            # never above what was counted: a lower bound over the observed agreement reads as a contradiction
            low = min(1.0 - rate_hi, 1.0 - flips / n)
            method = (f"{n} candidate margin shifts against {len(margins)} FP32 margins (flip rate estimate "
                      f"{rate:.2g}); counted: {flips} flip(s) in {n} cases")
    return Estimate(value=1.0 - flips / n if n else 1.0, cases=n, low=low, high=1.0 - flip_lo,
                    confidence=stats.CONFIDENCE, method=method)


def _worst_class(comparison: Comparison) -> Estimate:
    """Class agreement: per FP32 class, the share of its cases the candidate keeps, bounded by counting
    (Clopper-Pearson); the class with the lowest lower bound is the figure (and says which it is)."""
    agree, classes = comparison.per_case["agree"], comparison.per_case["fp32_class"]
    names = comparison.class_names or []
    worst = None
    for c in np.unique(classes):
        keep = agree[classes == c]
        n, flips = int(keep.size), int(keep.size - keep.sum())
        lo, hi = stats.clopper_pearson(flips, n)
        label = names[c] if c < len(names) else str(c)
        est = Estimate(value=1.0 - flips / n, cases=n, low=1.0 - hi, high=1.0 - lo, confidence=stats.CONFIDENCE,
                       method=f"worst class {label}: {flips} flip(s) in the {n} cases FP32 calls {label} "
                              "(Clopper-Pearson)")
        if worst is None or est.low < worst.low:
            worst = est
    if worst is None:
        return Estimate(value=1.0, cases=0, method="no cases")
    return worst


def _term(bound: Bound, est: Estimate) -> str:
    """'pass', 'fail' or 'open' for one term: the bound must hold at the pessimistic end, and fails when it
    cannot hold even at the optimistic end."""
    low = est.value if est.low is None else est.low
    high = est.value if est.high is None else est.high
    if bound.op == ">=":
        return "pass" if low >= bound.value else "fail" if high < bound.value else "open"
    return "pass" if high <= bound.value else "fail" if low > bound.value else "open"


def _needed(bound: Bound, est: Estimate, comparison: Comparison) -> int | None:
    """Cases that would decide an open term, if the data kept looking as it does."""
    if bound.metric in COUNTED:
        return stats.cases_to_certify(1.0 - est.value, 1.0 - bound.value)
    if bound.metric in CLASSWISE:
        # the worst class needs that many of its own cases; at its share of the set, this many in all
        per_class = stats.cases_to_certify(1.0 - est.value, 1.0 - bound.value)
        return None if per_class is None or not est.cases else -(-per_class * comparison.cases // est.cases)
    if bound.metric in BOOTSTRAPPED:
        return stats.needed_for_mean(comparison.per_case[BOOTSTRAPPED[bound.metric]], bound.value)
    return None


def describe_estimate(name: str, est: Estimate) -> str:
    """'agreement 1.0000 (95% lower bound 0.8293, 16 cases)'."""
    bounds = []
    if est.low is not None and METRICS.get(name, None) and METRICS[name].direction == ">=":
        bounds.append(f"95% lower bound {est.low:.4f}")
    elif est.high is not None and METRICS.get(name, None) and METRICS[name].direction == "<=":
        bounds.append(f"95% upper bound {est.high:.4g}")
    return f"{name} {est.value:.4f} ({', '.join(bounds + [f'{est.cases} cases'])})"


def point_values(comparison: Comparison, population: Population | None = None) -> dict[str, float]:
    """Point estimates of every figure; agreement metrics from the margins where they can be had (on a few
    dozen tuning images, counted agreement cannot tell a flip rate of 1 in 1000 from 1 in 100)."""
    values = dict(comparison.values)
    for name in COUNTED:
        margins, shifts = (population or {}).get(name), comparison.shifts.get(name)
        if name in values and margins is not None and shifts is not None and len(shifts) >= 2:
            values[name] = min(values[name], 1.0 - stats.flip_rate(margins, shifts))
    return values


TUNING_HEADROOM = 0.5  # the fallback stops once the estimated flip rate is half what the budget allows


def meets(comparison: Comparison, budget: Budget, population: Population | None = None) -> bool:
    """Whether the point estimates meet every term: the layer fallback's stopping rule on its tuning images.
    Agreement terms must meet it with headroom, leaving room for the bound the verdict will be held to.
    (The verdict itself is never taken on tuning images, nor on point estimates.)"""
    values = point_values(comparison, population)
    for b in budget.terms:
        got = values.get(b.metric)
        if b.metric in COUNTED and b.op == ">=" and got is not None:
            if 1.0 - got > (1.0 - b.value) * TUNING_HEADROOM:
                return False
        elif not b.holds(got):
            return False
    return True


def judge(comparison: Comparison, budget: Budget, evaluated_on: str = "",
          population: Population | None = None) -> DriftRecord:
    """The verdict on a candidate: passed if every term holds at its bound, failed if any term surely
    misses, uncertified otherwise (with the cases that would decide it)."""
    figures = estimates(comparison, population)
    missed, states, needed = [], [], []
    for bound in budget.terms:
        est = figures.get(bound.metric)
        state = "fail" if est is None else _term(bound, est)
        states.append(state)
        if state == "fail":
            missed.append(f"{bound}: {describe_estimate(bound.metric, est)}" if est else f"{bound}: not measured")
        elif state == "open":
            want = _needed(bound, est, comparison)
            needed.append(want)
            missed.append(f"{bound} not certified: {describe_estimate(bound.metric, est)}"
                          + (f"; about {want} cases would decide it" if want else ""))
    verdict = "failed" if "fail" in states else "uncertified" if "open" in states else "passed"
    known = [x for x in needed if x]
    return DriftRecord(verdict=verdict, budget=str(budget), cases=comparison.cases, evaluated_on=evaluated_on,
                       metrics=figures, figures=comparison.figures, missed=missed,
                       needed_cases=max(known) if verdict == "uncertified" and known else None)


def parity_tolerance(reference: np.ndarray) -> float:
    return PARITY_ATOL + PARITY_RTOL * float(np.abs(reference).max()) if reference.size else PARITY_ATOL


def judge_parity(comparison: Comparison, tolerance: float, reference_by: str | None = None,
                 evaluated_on: str = "") -> DriftRecord:
    """The FP32 export's rule: every output within ``tolerance`` of the source, and no class or pixel changed."""
    v = comparison.values
    missed = []
    if comparison.task == "detection":
        for name in ("recall", "precision"):
            if v[name] < 1.0:
                missed.append(f"{name}==1 (got {v[name]:.4f})")
        if v["min_iou"] < 0.99:
            missed.append(f"min_iou>=0.99 (got {v['min_iou']:.4f})")
        if v["max_score_diff"] > tolerance:
            missed.append(f"max_score_diff<={tolerance:.3g} (got {v['max_score_diff']:.3g})")
    elif v["max_abs_diff"] > tolerance:
        missed.append(f"max_abs_diff<={tolerance:.3g} (got {v['max_abs_diff']:.3g})")
    if v.get("agreement", 1.0) != 1.0:
        missed.append(f"agreement==1 (got {v['agreement']:.4f})")
    if v.get("changed_pixels", 0.0) != 0.0:
        missed.append(f"changed_pixels==0 (got {v['changed_pixels']:.2e})")
    return DriftRecord(verdict="failed" if missed else "passed", budget=PARITY, cases=comparison.cases,
                       evaluated_on=evaluated_on, metrics=estimates(comparison, observed=True),
                       figures=comparison.figures, missed=missed, reference=reference_by, tolerance=tolerance)


def judge_reproduction(comparison: Comparison, record: DriftRecord, evaluated_on: str = "") -> DriftRecord:
    """``verify``'s rule: on this device, an artifact must give the answers it gave at conversion (same
    classes, same masks on the reference probes) and outputs no further from them than its own
    conversion-time distance from FP32 (at least the parity tolerance): then its verdict carries over.
    The verdict is ``passed`` or ``failed``: the probes are the same cases, not a sample."""
    conversion = record.value("max_abs_diff") or record.value("max_score_diff") or 0.0
    return judge_parity(comparison, max(PARITY_ATOL + PARITY_RTOL * conversion, conversion),
                        "the artifact's own outputs at conversion", evaluated_on)


def budget_metrics(record: DriftRecord, task: str) -> list[str]:
    """The metrics a record's verdict was taken on (parity: the raw error)."""
    if record.budget == PARITY:
        return ["max_score_diff"] if "max_score_diff" in record.metrics else ["max_abs_diff"]
    return [b.metric for b in Budget.parse(record.budget, task).terms]


def recheck(record: DriftRecord, comparison: Comparison, task: str, evaluated_on: str = "",
            population: Population | None = None) -> DriftRecord:
    """Judge new figures by the rule an artifact was gated with at conversion (``bench`` on the user's data)."""
    if record.budget == PARITY:
        return judge_parity(comparison, record.tolerance if record.tolerance is not None else PARITY_ATOL,
                            record.reference, evaluated_on)
    return judge(comparison, Budget.parse(record.budget, task), evaluated_on, population)


SUMMARY_METRICS = ("agreement", "class_agreement", "lesion_agreement", "case_dice", "changed_pixels", "recall",
                   "box_iou")


def summary(record: DriftRecord) -> str:
    """One line: the task figures with their lower bounds, the raw error, the case count, the verdict."""
    parts = []
    for k in SUMMARY_METRICS:
        if k in record.metrics:
            est = record.metrics[k]
            bound = f" (>={est.low:.4f})" if est.low is not None and METRICS[k].direction == ">=" else ""
            parts.append(f"{k} {est.value:.4f}{bound}")
    if "max_abs_diff" in record.metrics:
        parts.append(f"max|diff| {record.metrics['max_abs_diff'].value:.2e}")
    if "max_score_diff" in record.metrics:
        parts.append(f"max score diff {record.metrics['max_score_diff'].value:.2e}")
    head = ", ".join(parts) + f" on {record.cases} cases"
    if record.passed:
        return f"{head} -> passed"
    return f"{head} -> {record.verdict.upper()} ({'; '.join(record.missed)})"

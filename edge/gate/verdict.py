"""The drift gate: the one set of rules by which an artifact passes, fails or stays uncertified.

Convert's parity check of the FP32 export, the verdicts on quantized artifacts, ``verify`` on
the device and ``bench`` on the user's data all call :func:`judge` (or :func:`judge_parity`,
its rule for the FP32 export) and print with :func:`summary`. A budget is text such as
``"agreement>=0.999"`` parsed by :meth:`Budget.parse`; the defaults are each task's
(:mod:`edgemed.tasks`), read through :func:`default_budget` and nowhere else.

Every figure carries the number of cases it rests on and, where the cases are a sample, a
one-sided 95% bound (:mod:`edgemed.measures.stats`). A term ``metric >= v`` holds only when the lower
bound is at least ``v``; it fails when even the upper bound is below ``v``; in between, the data
cannot decide and the artifact is *uncertified*, with the number of cases that would decide it.
Agreement (top-1, or lesion present/absent) is bounded by counting flips (Clopper-Pearson) or,
where the decision margins say more, by the flip rate the margins imply
(:func:`edgemed.measures.stats.flip_rate_bound`); means of per-case figures by bootstrap; maxima are
observed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec
import numpy as np

from ..errors import OptionError
from ..manifest import DriftRecord, Estimate
from ..measures import stats
from ..measures.comparison import METRICS, STRATA, Comparison
from ..measures.margins import Margins
from ..tasks import TASKS, task_named

# Each task's default budget, and why, lives with the task (edgemed.tasks: Classification.default_budget, ...).
_DEFAULT_BUDGETS = {name: task.default_budget for name, task in TASKS.items()}
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
            if name not in task_named(task).drift_metrics:
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


def default_budget(task: str) -> Budget:
    """The budget an artifact must meet when the user sets none."""
    return Budget.parse(_DEFAULT_BUDGETS[task], task)


def default_budgets() -> dict[str, str]:
    """Every task's default budget (what help texts and the README state)."""
    return dict(_DEFAULT_BUDGETS)


Population = dict[str, Margins]  # FP32 decision margins of every case, per agreement metric, with strata

# The margins each agreement metric's flip-rate estimate draws on (class agreement: the classifier's margins,
# per class).
MARGINS_OF = {"agreement": "agreement", "class_agreement": "agreement", "lesion_agreement": "lesion_agreement"}


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
            per_class = _class_estimates(comparison, population)
            worst = min(per_class.values(), key=lambda e: e.low) if per_class else None
            out[name] = Estimate(value=1.0, cases=0, method="no cases") if worst is None else \
                msgspec.structs.replace(worst, method="worst " + worst.method)
            out.update({f"{name}[{label}]": est for label, est in per_class.items()})
        elif name in BOOTSTRAPPED and BOOTSTRAPPED[name] in comparison.per_case:
            lo, hi = stats.bootstrap_mean(comparison.per_case[BOOTSTRAPPED[name]])
            out[name] = Estimate(value=float(value), cases=n, low=lo, high=hi, confidence=stats.CONFIDENCE,
                                 method=f"bootstrap over {n} cases")
        else:
            out[name] = Estimate(value=float(value), cases=n, method=f"observed on {n} cases")
    return out


def _strata(name: str, comparison: Comparison) -> np.ndarray:
    key = STRATA.get(name)
    agree = comparison.per_case[COUNTED.get(name, "agree")]
    return comparison.per_case[key] if key in comparison.per_case else np.zeros(agree.size, np.int64)


def _margin_bound(margins: np.ndarray, shifts: np.ndarray, flips: int, n: int) -> float | None:
    """The margin model's upper bound on one stratum's flip rate, never below what ``n`` cases can resolve
    (:func:`edgemed.measures.stats.count_floor`); None where the stratum has too few cases for the margins to say
    more."""
    if n < MIN_CASES_FOR_MARGINS or margins.size < 2 or shifts.size < 2:
        return None
    return max(stats.flip_rate_bound(margins, shifts)[1], stats.count_floor(flips, n))


def _flip_bound(name: str, comparison: Comparison, population: Population | None, select: np.ndarray,
                stratum: int | None) -> tuple[float, str]:
    """Upper bound on the flip rate of the selected cases (one stratum, or all of them stratified): the counted
    Clopper-Pearson bound, or the margin model's where it is tighter and applicable."""
    agree = comparison.per_case[COUNTED.get(name, "agree")][select]
    n, flips = int(agree.size), int(agree.size - agree.sum())
    counted = stats.clopper_pearson(flips, n)[1]
    margins = (population or {}).get(MARGINS_OF.get(name, name))
    shifts = comparison.shifts.get(MARGINS_OF.get(name, name))
    if margins is None or shifts is None or n < MIN_CASES_FOR_MARGINS:
        return counted, "counted"
    shifts, strata = shifts[select], _strata(name, comparison)[select]
    levels = [stratum] if stratum is not None else list(np.unique(strata))
    total = 0.0
    for s in levels:
        mine = strata == s
        k_s, n_s = int(mine.sum() - agree[mine].sum()), int(mine.sum())
        cp_s = stats.clopper_pearson(k_s, n_s)[1]
        model = _margin_bound(margins.of(s), shifts[mine], k_s, n_s)
        total += (n_s / n) * (model if model is not None and model < cp_s else cp_s)
    total = max(total, stats.count_floor(flips, n))
    return (total, "margins") if total < counted else (counted, "counted")


def _agreement(name: str, comparison: Comparison, population: Population | None) -> Estimate:
    agree = comparison.per_case[COUNTED[name]]
    n = int(agree.size)
    flips = n - int(agree.sum())
    flip_lo, flip_hi = stats.clopper_pearson(flips, n)
    rate_hi, how = _flip_bound(name, comparison, population, np.ones(n, bool), None)
    method = f"{flips} flip(s) in {n} cases (Clopper-Pearson)"
    if how == "margins":
        strata = len(np.unique(_strata(name, comparison)))
        margins = (population or {})[MARGINS_OF[name]]
        method = (f"{n} candidate margin shifts against {len(margins)} FP32 margins, in {strata} strat"
                  f"{'um' if strata == 1 else 'a'} (FP32's {'class' if name != 'lesion_agreement' else 'lesion call'}"
                  f"), no tighter than {n} cases resolve; counted: {flips} flip(s) in {n} cases")
    return Estimate(value=1.0 - flips / n if n else 1.0, cases=n, low=1.0 - rate_hi, high=1.0 - flip_lo,
                    confidence=stats.CONFIDENCE, method=method)


def _class_estimates(comparison: Comparison, population: Population | None = None) -> dict[str, Estimate]:
    """Class agreement, per FP32 class: the share of its cases the candidate keeps, bounded by counting
    (Clopper-Pearson) or, with enough cases of the class, by the class's own margins. The class with the lowest
    lower bound is the term's figure (and says which it is); unlike overall agreement it holds whatever the class
    mix where the model is used."""
    agree, classes = comparison.per_case["agree"], comparison.per_case["fp32_class"]
    names = comparison.class_names or []
    out = {}
    for c in np.unique(classes):
        mine = classes == c
        keep = agree[mine]
        n, flips = int(keep.size), int(keep.size - keep.sum())
        lo, hi = stats.clopper_pearson(flips, n)
        rate_hi, how = _flip_bound("class_agreement", comparison, population, mine, int(c))
        label = names[c] if c < len(names) else str(c)
        out[label] = Estimate(value=1.0 - flips / n, cases=n, low=1.0 - rate_hi, high=1.0 - lo,
                              confidence=stats.CONFIDENCE,
                              method=f"class {label}: {flips} flip(s) in the {n} cases FP32 calls {label} ("
                                     + ("margin model of the class" if how == "margins" else "Clopper-Pearson") + ")")
    return out


def _term(bound: Bound, est: Estimate) -> str:
    """'pass', 'fail' or 'open' for one term: the bound must hold at the pessimistic end, and fails when it
    cannot hold even at the optimistic end."""
    low = est.value if est.low is None else est.low
    high = est.value if est.high is None else est.high
    if bound.op == ">=":
        return "pass" if low >= bound.value else "fail" if high < bound.value else "open"
    return "pass" if high <= bound.value else "fail" if low > bound.value else "open"


def _needed(bound: Bound, est: Estimate, comparison: Comparison) -> int | None:
    """Cases that would decide an open term, if the data kept looking as it does: by counting, the cases that would
    certify the flip rate seen, or, where it is already above the budget, show it surely above."""
    if bound.metric in COUNTED or bound.metric in CLASSWISE:
        rate, limit = 1.0 - est.value, 1.0 - bound.value
        want = stats.cases_to_certify(rate, limit) if rate < limit else stats.cases_to_refute(rate, limit)
        if bound.metric in COUNTED or want is None or not est.cases:
            return want
        # the worst class needs that many of its own cases; at its share of the set, this many in all
        return -(-want * comparison.cases // est.cases)
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
        margins, shifts = (population or {}).get(MARGINS_OF.get(name, name)), comparison.shifts.get(name)
        if name in values and margins is not None and shifts is not None and len(shifts) >= 2:
            values[name] = min(values[name], 1.0 - _stratified_rate(name, comparison, margins, shifts))
    return values


def _stratified_rate(name: str, comparison: Comparison, margins: Margins, shifts: np.ndarray,
                     select: np.ndarray | None = None) -> float:
    """The margin model's point estimate of the flip rate, stratum by stratum, weighted by the cases."""
    strata = _strata(name, comparison)
    if select is not None:
        strata, shifts = strata[select], shifts[select]
    total = 0.0
    for s in np.unique(strata):
        mine = strata == s
        pool = margins.of(s)
        total += mine.mean() * stats.flip_rate(pool if pool.size else margins.values, shifts[mine])
    return total


@dataclass(frozen=True)
class Prediction:
    """What the verdict would say on ``cases`` verdict cases if they behaved like the tuning cases: the layer
    fallback's stopping rule, so it aims at the bound the verdict is held to, not at a point estimate."""

    meets: bool
    reachable: bool  # False: even a candidate with no flips at all could not be certified on that many cases
    bounds: dict[str, float]  # predicted lower bound of each budget term (upper bound for <= terms)
    note: str = ""


def predict(comparison: Comparison, budget: Budget, population: Population | None, cases: int) -> Prediction:
    """The verdict's bounds predicted at ``cases`` verdict cases from the tuning comparison. Agreement terms: the
    flip rate estimated on the tuning cases (margins where available), expected at that many cases, bounded as
    the verdict will bound it (counting, or the margin model's bound on the tuning shifts, no tighter than that
    many cases resolve); means: the tuning mean less the normal-approximation spread at that many cases."""
    from scipy.stats import norm

    bounds, ok, reachable, notes = {}, True, True, []
    values = point_values(comparison, population)
    for b in budget.terms:
        if b.metric in COUNTED or b.metric in CLASSWISE:
            classwise = b.metric in CLASSWISE
            strata = comparison.per_case["fp32_class"] if classwise else None
            groups = [strata == c for c in np.unique(strata)] if classwise else [None]
            got = 1.0
            for mine in groups:
                share = cases if mine is None else int(round(cases * float(mine.mean())))
                rate = 1.0 - values.get(b.metric, 1.0) if mine is None else _class_rate(comparison, population, mine)
                model = _model_hi(b.metric, comparison, population, mine)
                got = min(got, 1.0 - _predicted_hi(rate, share, model))
                if 1.0 - _predicted_hi(0.0, share, 0.0 if model is not None else None) < b.value:
                    reachable = False
                    where = f"the ~{share} verdict cases of one class" if classwise else f"{share} verdict cases"
                    notes.append(f"{b}: {where} cannot certify it even with no flip")
        elif b.metric in BOOTSTRAPPED and BOOTSTRAPPED[b.metric] in comparison.per_case:
            x = np.asarray(comparison.per_case[BOOTSTRAPPED[b.metric]], np.float64)
            spread = float(norm.ppf(stats.CONFIDENCE) * x.std(ddof=1) / np.sqrt(max(cases, 1))) if x.size > 1 else 0.0
            got = float(x.mean()) + (spread if b.op == "<=" else -spread)
        else:
            got = values.get(b.metric)
        bounds[str(b)] = float(got) if got is not None else float("nan")
        ok = ok and got is not None and b.holds(got)
    return Prediction(ok, reachable, bounds, "; ".join(dict.fromkeys(notes)))


def _model_hi(name: str, comparison: Comparison, population: Population | None,
              select: np.ndarray | None) -> float | None:
    """The margin model's upper bound on the selected cases' flip rate, stratified, without the floor that the
    cases' own count sets (the prediction applies the verdict set's floor instead); None without margins."""
    key = MARGINS_OF.get(name, name)
    margins, shifts = (population or {}).get(key), comparison.shifts.get(key)
    if margins is None or shifts is None:
        return None
    strata = _strata(name, comparison)
    if select is not None:
        strata, shifts = strata[select], shifts[select]
    if shifts.size < 2:
        return None
    total = 0.0
    for s in np.unique(strata):
        mine = strata == s
        pool = margins.of(s)
        if mine.sum() < 2:
            return None
        total += float(mine.mean()) * stats.flip_rate_bound(pool if pool.size else margins.values, shifts[mine])[1]
    return total


def _class_rate(comparison: Comparison, population: Population | None, select: np.ndarray) -> float:
    agree = comparison.per_case["agree"][select]
    counted = 1.0 - float(agree.mean()) if agree.size else 0.0
    margins, shifts = (population or {}).get("agreement"), comparison.shifts.get("agreement")
    if margins is None or shifts is None or agree.size < 2:
        return counted
    return min(counted, _stratified_rate("class_agreement", comparison, margins, shifts, select)) if counted else \
        _stratified_rate("class_agreement", comparison, margins, shifts, select)


def _predicted_hi(rate: float, cases: int, model: float | None) -> float:
    """The upper bound the verdict would put on a flip rate ``rate`` on ``cases`` cases: counting, or (with the
    margin model's bound ``model``) that bound, down to what that many cases resolve."""
    if cases <= 0:
        return 1.0
    flips = int(round(rate * cases))
    counted = stats.clopper_pearson(flips, cases)[1]
    if model is None:
        return counted
    return min(counted, max(model, stats.count_floor(flips, cases)))


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


def judge_artifact(comparison: Comparison, budget: Budget, precision: str, tolerance: float,
                   population: Population | None = None, evaluated_on: str = "", reference_by: str | None = None,
                   device: str | None = None, computed_in: str | None = None) -> DriftRecord:
    """The one rule for every artifact against the FP32 reference, whichever backend, device and task.

    An FP32 artifact that computes in FP32 where it was measured is the reference's arithmetic compiled by
    another engine: within FP32 round-off of the reference (``tolerance``) with no decision changed on any case,
    it is certified as the reference is (budget ``parity``), on however few cases (8 images of a small site
    decide it). Outside that tolerance, or computed at lower precision (an NPU runs FP32 IRs at f16, a GPU may use
    TF32), it is judged like FP16 and INT8: by the budget, with bounds."""
    import msgspec

    if precision == "fp32" and computed_in in (None, "fp32"):
        parity = judge_parity(comparison, tolerance, reference_by, evaluated_on)
        if parity.passed:
            return msgspec.structs.replace(parity, device=device, computed_in=computed_in)
    record = judge(comparison, budget, evaluated_on, population)
    return msgspec.structs.replace(record, figures={**record.figures, **margin_facts(comparison, population)},
                                   device=device, computed_in=computed_in)


def holds_for(record: DriftRecord, computed_in: str) -> bool:
    """Whether a verdict covers an engine that computes in ``computed_in``: a parity verdict is about FP32
    arithmetic, so it does not cover the same FP32 artifact run at f16 (an NPU) or TF32 (a GPU); such a run needs
    its own verdict (``edgemed certify --device``). Budgeted verdicts say where they were measured
    (``record.computed_in``) and are taken as they stand."""
    return record.budget != PARITY or computed_in == "fp32"


def margin_facts(comparison: Comparison, population: Population | None) -> dict[str, float]:
    """What a reader of an FP16/INT8 verdict needs beside the figures: the largest change of a decision margin the
    candidate made, and how many of the population's cases (images, beats; segmentation: cases by their lesion
    call) lie within that distance of a decision, i.e. could flip under a change that large."""
    facts = {}
    for name, shifts in comparison.shifts.items():
        margins = (population or {}).get(name)
        if shifts is None or not shifts.size:
            continue
        largest = float(np.abs(shifts).max())
        facts[f"largest_margin_change[{name}]"] = largest
        if margins is not None and len(margins):
            facts[f"population_within_largest_change[{name}]"] = float((margins.values <= largest).sum())
            facts[f"population_cases[{name}]"] = float(len(margins))
    return facts


def parity_tolerance(reference: np.ndarray) -> float:
    return PARITY_ATOL + PARITY_RTOL * float(np.abs(reference).max()) if reference.size else PARITY_ATOL


def judge_parity(comparison: Comparison, tolerance: float, reference_by: str | None = None,
                 evaluated_on: str = "") -> DriftRecord:
    """The FP32 export's rule: every output within ``tolerance`` of the source, and no class or pixel changed."""
    v = comparison.values
    missed = []
    if TASKS[comparison.task].ragged_outputs:  # boxes: every one found again, where it was
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

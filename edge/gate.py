"""The drift gate: the one set of rules by which an artifact passes or fails, and the one way it is told.

Convert's parity check of the FP32 export, the verdicts on quantized artifacts, ``verify`` on
the device and ``bench`` on the user's data all call :func:`judge` (or :func:`judge_parity`,
its rule for the FP32 export) and print with :func:`summary`. A budget is text such as
``"agreement>=0.999"`` parsed by :meth:`Budget.parse`; the defaults live in
:func:`default_budget` and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .drift import METRICS, Comparison
from .errors import OptionError
from .manifest import DriftRecord, Estimate

# MLPerf "high accuracy": 99.9% of the FP32 reference.
_DEFAULT_BUDGETS = {
    "classification": "agreement>=0.999",
    "segmentation": "dice>=0.999",
}
PARITY = "parity"
# The FP32 export must reproduce the source: |diff| <= ATOL + RTOL * max|reference| on every probe output,
# with the same classes and masks.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-5

_TERM = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*$")
# Ranges a bound can meaningfully take (a Dice of 2 can never be met; a negative error never).
_RANGE = {"agreement": (0.0, 1.0), "dice": (0.0, 1.0), "iou": (0.0, 1.0), "changed_pixels": (0.0, 1.0),
          "max_prob_diff": (0.0, 1.0)}


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
            if metric.task not in (None, task):
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


def _estimates(comparison: Comparison) -> dict[str, Estimate]:
    return {name: Estimate(value=float(v), cases=comparison.cases) for name, v in comparison.values.items()}


def judge(comparison: Comparison, budget: Budget, evaluated_on: str = "") -> DriftRecord:
    """The verdict on a candidate: every bound of the budget must hold."""
    missed = [f"{b} (got {comparison.values.get(b.metric)!r})" for b in budget.terms
              if not b.holds(comparison.values.get(b.metric))]
    return DriftRecord(verdict="failed" if missed else "passed", budget=str(budget), cases=comparison.cases,
                       evaluated_on=evaluated_on, metrics=_estimates(comparison), figures=comparison.figures,
                       missed=missed)


def parity_tolerance(reference: np.ndarray) -> float:
    return PARITY_ATOL + PARITY_RTOL * float(np.abs(reference).max()) if reference.size else PARITY_ATOL


def judge_parity(comparison: Comparison, tolerance: float, reference_by: str | None = None,
                 evaluated_on: str = "") -> DriftRecord:
    """The FP32 export's rule: every output within ``tolerance`` of the source, and no class or pixel changed."""
    v = comparison.values
    missed = []
    if v["max_abs_diff"] > tolerance:
        missed.append(f"max_abs_diff<={tolerance:.3g} (got {v['max_abs_diff']:.3g})")
    if v.get("agreement", 1.0) != 1.0:
        missed.append(f"agreement==1 (got {v['agreement']:.4f})")
    if v.get("changed_pixels", 0.0) != 0.0:
        missed.append(f"changed_pixels==0 (got {v['changed_pixels']:.2e})")
    return DriftRecord(verdict="failed" if missed else "passed", budget=PARITY, cases=comparison.cases,
                       evaluated_on=evaluated_on, metrics=_estimates(comparison), figures=comparison.figures,
                       missed=missed, reference=reference_by, tolerance=tolerance)


def recheck(record: DriftRecord, comparison: Comparison, task: str, evaluated_on: str = "") -> DriftRecord:
    """Judge new figures by the rule an artifact was gated with at conversion (``verify``, ``bench``)."""
    if record.budget == PARITY:
        return judge_parity(comparison, record.tolerance if record.tolerance is not None else PARITY_ATOL,
                            record.reference, evaluated_on)
    return judge(comparison, Budget.parse(record.budget, task), evaluated_on)


def summary(record: DriftRecord) -> str:
    """One line: the task figures, the raw error, the verdict (and what was missed)."""
    parts = [f"{k} {record.metrics[k].value:.4f}" for k in ("agreement", "dice", "changed_pixels")
             if k in record.metrics]
    if "max_abs_diff" in record.metrics:
        parts.append(f"max|diff| {record.metrics['max_abs_diff'].value:.2e}")
    head = ", ".join(parts) + f" on {record.cases} cases"
    if record.passed:
        return f"{head} -> passed"
    return f"{head} -> {record.verdict.upper()} ({'; '.join(record.missed)})"

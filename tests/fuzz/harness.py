"""The one property every fuzz test holds an entry point to, the settings profiles, and the case counter.

The property (issue 30): for any input a user or a network peer can give, edgemed answers with a result
or with an :class:`edgemed.errors.EdgemedError` subclass whose message is one line, within a time bound;
never another exception type, never a hang, never a crashed server, never a half-written file, and never a
result holding NaN or Inf.

Profiles (registered from ``tests/conftest.py``, so ``--hypothesis-profile`` finds them at start-up):

- ``ci`` (what the fuzz tests use unless another of these two is loaded): deterministic
  (``derandomize=True``: each test's examples follow from its own code, so a CI failure reproduces exactly),
  a per-example deadline, and example counts that add up to at least 10,000 cases in about two minutes on
  two cores.
- ``nightly``: random seeds (printed by Hypothesis with every failure, ``print_blob``), 25x the examples.

``pytest -m fuzz`` runs the suite alone; ``pytest -m fuzz --hypothesis-profile nightly`` runs the long form.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings

from edgemed.errors import EdgemedError

PROFILES = {"ci": 1, "nightly": 25}  # profile -> multiplier of each test's example count
_COMMON = dict(print_blob=True, suppress_health_check=list(HealthCheck), database=None)


def register_profiles() -> None:
    settings.register_profile("ci", derandomize=True, deadline=timedelta(seconds=5), **_COMMON)
    settings.register_profile("nightly", derandomize=False, deadline=timedelta(seconds=10), **_COMMON)


def active_profile() -> str:
    """The loaded profile if it is one of the fuzz profiles, else ``ci`` (the fuzz suite's default)."""
    name = settings.get_current_profile_name()
    return name if name in PROFILES else "ci"


def fuzz_settings(examples: int, deadline_s: float | None = None) -> settings:
    """Settings for one fuzz test: the active profile with ``examples`` scaled by it."""
    name = active_profile()
    extra = {} if deadline_s is None else {"deadline": timedelta(seconds=deadline_s)}
    return settings(settings.get_profile(name), max_examples=examples * PROFILES[name], **extra)


# --- counting ---------------------------------------------------------------------------------------------

CASES: Counter = Counter()  # entry point -> cases run
OUTCOMES: dict[str, Counter] = {}  # entry point -> {"result": n, "refused": n}
SECONDS: Counter = Counter()


def count(entry: str, outcome: str, seconds: float = 0.0) -> None:
    CASES[entry] += 1
    OUTCOMES.setdefault(entry, Counter())[outcome] += 1
    SECONDS[entry] += seconds


def summary_lines() -> list[str]:
    if not CASES:
        return []
    width = max(len(k) for k in CASES)
    lines = [f"hypothesis profile {active_profile()!r}: {sum(CASES.values())} generated cases"]
    for entry in sorted(CASES):
        o = OUTCOMES[entry]
        detail = ", ".join(f"{k} {v}" for k, v in sorted(o.items()))
        lines.append(f"  {entry:<{width}}  {CASES[entry]:>6}  ({detail}; {SECONDS[entry]:.1f} s)")
    return lines


# --- the property -----------------------------------------------------------------------------------------

def check_error(exc: EdgemedError, entry: str) -> None:
    text = str(exc)
    assert text.strip(), f"{entry}: {type(exc).__name__} with an empty message"
    assert len(text.splitlines()) == 1, f"{entry}: a message of several lines: {text!r}"


def outcome(entry: str, call: Callable[[], Any], check: Callable[[Any], None] | None = None,
            bound_s: float | None = None) -> Any:
    """Run one case: returns the result (checked by ``check`` and for finiteness) or None for a clean refusal.
    Any other exception propagates, with a note naming the entry point, so Hypothesis shrinks it."""
    t0 = time.perf_counter()
    try:
        result = call()
    except EdgemedError as exc:
        check_error(exc, entry)
        count(entry, "refused", time.perf_counter() - t0)
        return None
    except Exception as exc:
        exc.add_note(f"fuzz: {entry} raised {type(exc).__name__}, not an EdgemedError")
        raise
    elapsed = time.perf_counter() - t0
    if bound_s is not None:
        assert elapsed <= bound_s, f"{entry}: {elapsed:.1f} s, beyond the {bound_s:g} s bound"
    assert_finite_result(result, entry)
    if check is not None:
        check(result)
    count(entry, "result", elapsed)
    return result


def assert_finite_result(result: Any, entry: str) -> None:
    """No number a result carries may be NaN or Inf (probabilities, boxes, scores, beats)."""
    for name in ("probabilities", "boxes", "scores"):
        value = getattr(result, name, None)
        if value is not None:
            assert np.isfinite(np.asarray(value, dtype=np.float64)).all(), f"{entry}: {name} {value!r} not finite"
    if getattr(result, "probabilities", None) is not None:
        total = float(np.sum(result.probabilities))
        assert math.isclose(total, 1.0, abs_tol=1e-3), f"{entry}: probabilities sum to {total}"
    mask = getattr(result, "mask", None)
    if mask is not None:
        assert mask.dtype == np.uint8, f"{entry}: mask of dtype {mask.dtype}"
    for beat in getattr(result, "beats", None) or []:
        assert_finite_result(beat, entry)

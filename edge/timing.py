"""Wall-clock timing of repeated calls, warm-up discarded (shared by auto-selection and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 0) -> list[float]:
    """Seconds per call for ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples

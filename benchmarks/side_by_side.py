"""Configurations compared side by side on one machine: predict timed in permuted blocks, scores paired on the same
cases. Shared by ``benchmarks/studies/ensemble.py`` (the stand-alone study) and ``edgemed bench`` on an ensemble
(:mod:`edgemed.benchmarks.ensemble_bench`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from edgemed.measures import stats
from edgemed.tasks import task_named

BLOCK = 10  # predict calls per block; every round runs one block of each configuration, in a permuted order


def permuted_latency(pipes: Mapping[str, object], frames: Sequence[np.ndarray], calls: int, warmup: int = 3,
                     seed: int = 0) -> dict[str, list[float]]:
    """Seconds of every timed ``predict`` per configuration: ``calls`` each, in blocks of :data:`BLOCK` frames whose
    order of configurations is permuted every round, so a busy neighbour on a shared machine slows all of them alike
    (their ratios hold; figures from two runs do not compare). ``warmup`` calls each first, not timed (first calls
    allocate)."""
    rng = np.random.default_rng(seed)
    names = list(pipes)
    times: dict[str, list[float]] = {k: [] for k in names}
    for p in pipes.values():
        for k in range(warmup):
            p.predict(frames[k % len(frames)])
    for r in range(max(1, -(-calls // BLOCK))):
        for name in rng.permutation(names):
            pipe = pipes[name]
            for k in range(BLOCK):
                t0 = time.perf_counter()
                pipe.predict(frames[(r * BLOCK + k) % len(frames)])
                times[name].append(time.perf_counter() - t0)
    return times


def paired_gain(candidate: np.ndarray, best: np.ndarray, task: str, confidence: float = stats.CONFIDENCE) -> dict:
    """``candidate`` minus ``best`` on the same cases (per case: 1/0 correct for classification, Dice for
    segmentation), with bounds ``low``/``high`` each one-sided at ``confidence`` (0.975 each gives a two-sided 95%
    interval): for accuracy exact, conditional on the discordant cases, with the exact McNemar p-value; for Dice a
    percentile bootstrap of the mean paired difference (:mod:`edgemed.measures.stats`, seeded)."""
    candidate, best = np.asarray(candidate, np.float64), np.asarray(best, np.float64)
    n = len(candidate)
    if task_named(task).binary_case_scores:
        b = int(((best == 1) & (candidate == 0)).sum())  # right only for the best member
        c = int(((best == 0) & (candidate == 1)).sum())  # right only for the candidate
        lo, hi = stats.paired_drop_bounds(b, c, n, confidence)
        return {"gain": (c - b) / n if n else 0.0, "low": -hi, "high": -lo, "cases": n, "only_member_right": b,
                "only_ensemble_right": c, "p_mcnemar": stats.mcnemar_exact(b, c),
                "method": "exact, conditional on the discordant cases"}
    diff = candidate - best
    lo, hi = stats.bootstrap_mean(diff, confidence)
    return {"gain": float(diff.mean()) if n else 0.0, "low": lo, "high": hi, "cases": n,
            "method": f"percentile bootstrap of the mean paired difference over {n} cases"}

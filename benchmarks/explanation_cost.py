"""What an ``--explain`` bundle's explanation costs ``predict`` on one engine: ``edgemed bench``'s figure for each
of its artifacts (the stand-alone study against a bundle converted without ``--explain`` is
``benchmarks/studies/saliency_cost.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgemed.pipeline import Pipeline


def p50_alternating(calls: dict[str, Callable[[np.ndarray], Any]], frames: list[np.ndarray], warmup: int
                     ) -> dict[str, float]:
    """Median seconds per call: every call on every frame, in a new random order per frame (seeded), after
    ``warmup`` frames of each."""
    for f in frames[:warmup]:
        for call in calls.values():
            call(f)
    times: dict[str, list[float]] = {name: [] for name in calls}
    rng = np.random.default_rng(0)
    names = list(calls)
    for f in frames:
        for i in rng.permutation(len(names)):
            t0 = time.perf_counter()
            calls[names[i]](f)
            times[names[i]].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def explanation_cost(pipe: Pipeline, frames: list[np.ndarray], runs: int = 300, warmup: int = 20) -> dict:
    """``edgemed bench``'s figure for one artifact of an ``--explain`` bundle: predict p50 without the explanation
    (a second pipeline on this very engine with its explainer off), with it (the lazy map on every result), and
    with ``r.saliency`` read, alternating per frame over ``runs`` frames. One engine, so the ratios are free of
    two-engine noise; the extra graph output is paid in all three (against a bundle converted without
    ``--explain``: ``python benchmarks/studies/saliency_cost.py``)."""
    bare = Pipeline(pipe.bundle, pipe.engine, pipe.selection)  # shares the engine: nothing to close
    bare.explainer = None
    calls = {"without explanation": bare.predict, "with explanation": pipe.predict,
             "with the map read": lambda f: pipe.predict(f).saliency}
    p50 = p50_alternating(calls, [frames[i % len(frames)] for i in range(runs)], warmup)
    base = p50["without explanation"]
    return {"runs": runs, "p50_ms": {k: round(v * 1e3, 4) for k, v in p50.items()},
            "with / without": round(p50["with explanation"] / base, 4),
            "with the map read / without": round(p50["with the map read"] / base, 4),
            "note": "one engine, the explainer off and on; the map read is r.saliency at the frame's size"}

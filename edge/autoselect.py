"""device='auto': time the eligible artifacts on this device and keep the fastest.

INT8 is not faster everywhere (it can be slower on CPUs without INT8 dot-product units), so
the choice is measured, briefly, on the bundle's own probe inputs, and cached per bundle,
device profile, CPU and thread count so later loads start at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .manifest import Artifact
from .paths import cache_dir
from .timing import time_calls

WARMUP, RUNS = 5, 30


def cache_file() -> Path:
    return cache_dir() / "autoselect.json"


def _key(manifest_sha: str, profile: str, cpu: str, threads: int | None) -> str:
    return hashlib.sha256(f"{manifest_sha}|{profile}|{cpu}|{threads}".encode()).hexdigest()[:24]


def _time(engine, feed: dict) -> float:
    return float(np.median(time_calls(lambda: engine.infer(feed), RUNS, WARMUP)))


def choose(candidates: list[Artifact], make_engine: Callable[[Artifact], object], feed: dict[str, np.ndarray],
           manifest_sha: str, profile: str, cpu: str, threads: int | None) -> tuple[Artifact, str]:
    """The fastest candidate (p50 of engine.infer at batch 1 on ``feed``, one probe by input name) and the reason,
    from cache when known."""
    path, key = cache_file(), _key(manifest_sha, profile, cpu, threads)
    try:
        cached = json.loads(path.read_text()).get(key)
    except (OSError, json.JSONDecodeError):
        cached = None
    by_file = {a.file: a for a in candidates}
    if cached and cached.get("file") in by_file:
        return by_file[cached["file"]], f"auto (cached measurement): {cached['reason']}"
    timings = {}
    for art in candidates:
        with make_engine(art) as engine:
            timings[art.file] = _time(engine, feed)
    best = min(candidates, key=lambda a: timings[a.file])
    reason = "measured p50 " + ", ".join(f"{a.key} {timings[a.file] * 1e3:.2f} ms" for a in candidates)
    _store(path, key, {"file": best.file, "reason": reason})
    return best, f"auto: {reason}"


def _store(path: Path, key: str, value: dict) -> None:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        data = {}
    data[key] = value
    write_atomic(path, json.dumps(data, indent=2))

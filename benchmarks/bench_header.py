"""What every ``edgemed bench`` report carries beside its rows, a bundle's (:mod:`.run`) or an ensemble's
(:mod:`.ensemble_bench`): the schema name, the versions, the workload."""

from __future__ import annotations

import platform

import numpy as np

from edgemed.datasets import ImageSet

SCHEMA = "edgemed-bench/2"


def bench_versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("edgemed", "onnxruntime", "openvino"):
        try:
            out[name] = __import__(name).__version__ if name != "openvino" else __import__(name).get_version()
        except ImportError:
            pass
    return out


def bench_workload(images: ImageSet, scenario: str | None, fps: float, duration: float, threads: int | None) -> dict:
    """What the run measured, beyond the artifact and device: runs are compared only within one workload."""
    w = {"data": f"{images.path.name} sha256:{images.sha256()[:12]} ({len(images)} images)",
         "threads": threads or "profile default"}
    if scenario == "point-of-care":
        w.update(fps=fps, duration_s=duration)
    return w

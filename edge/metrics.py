"""Task metrics used by the drift gate and the benchmarks (plain numpy, no framework)."""

from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray, cls: int) -> float:
    """Dice of class ``cls`` between two label maps pooled over all pixels; both empty is 1."""
    pa, pb = a == cls, b == cls
    denom = int(pa.sum()) + int(pb.sum())
    return 1.0 if denom == 0 else 2.0 * int((pa & pb).sum()) / denom


def iou(a: np.ndarray, b: np.ndarray, cls: int) -> float:
    pa, pb = a == cls, b == cls
    union = int((pa | pb).sum())
    return 1.0 if union == 0 else int((pa & pb).sum()) / union


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of cases whose top-1 class agrees."""
    a, b = np.asarray(a), np.asarray(b)
    return float((a == b).mean()) if a.size else 1.0

"""The local peaks XQRS starts from, computed with numpy: the same indices as ``wfdb.processing.find_local_peaks``.

wfdb's XQRS (the QRS detector ``beats()`` uses) finds its candidate peaks with ``find_local_peaks``, a Python
loop that takes ``max`` of a window at every sample: on the shipped 10 minutes of MIT-BIH 213 it was 1.4 s of the
2.3 s ``beats()`` took (cProfile, 1.26 million ``max`` calls). The definition is kept exactly: sample ``i`` is a
peak when it equals the largest value of ``sig[max(0, i - radius) : i + radius]``, and after a peak the scan
resumes ``radius`` samples on (so of a plateau the first sample counts). The window maxima are one vectorised
pass; only the candidates (a few thousand) are walked in Python for the skip. tests/test_local_peaks.py holds it
equal to wfdb's own function on real records and on signals made of plateaus.

This replaces the function XQRS looks up in its own module (:func:`install`), once, only where that is the wfdb
function this was checked against; anything else (NaN, a radius below 1) goes to wfdb's own code. wfdb is kept
for everything else in detection: its thresholds, learning and search-back are its own.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


def local_peaks(sig: np.ndarray, radius: int) -> np.ndarray:
    """Indices of the local peaks of a 1-D signal, as ``wfdb.processing.find_local_peaks(sig, radius)`` gives."""
    x = np.asarray(sig)
    if radius < 1 or x.ndim != 1 or x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        from wfdb.processing.peaks import find_local_peaks

        return find_local_peaks(sig, radius)  # outside what was checked: wfdb's own loop
    if x.size == 0 or np.min(x) == np.max(x):
        return np.empty(0)
    edge = np.full(radius, -np.inf)
    padded = np.concatenate([edge, x.astype(np.float64), edge])
    # window k of width 2r over the padded signal is sig[k - r : k + r], clipped to the signal: sample k's window
    window_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius).max(axis=1)[: x.size]
    peaks, resume = [], 0
    for i in np.flatnonzero(x == window_max).tolist():
        if i >= resume:
            peaks.append(i)
            resume = i + radius
    return np.array(peaks)


def install(qrs_module: ModuleType) -> None:
    """Have XQRS (``wfdb.processing.qrs``) use :func:`local_peaks`; idempotent, and only over wfdb's own function."""
    current = getattr(qrs_module, "find_local_peaks", None)
    if getattr(current, "__module__", "") == "wfdb.processing.peaks":
        qrs_module.find_local_peaks = local_peaks

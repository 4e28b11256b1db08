"""Where a signal carries no ECG: runs of NaN/Inf samples and flat stretches, found sample by sample.

The beat stream analyses blocks of ~14 s. Judging a whole block at once either throws away good
signal around a short dropout (a 5 s NaN run cost 20 s of beats) or misses a flat stretch the
block's other seconds hide (ten flat seconds inside a block were silent). So the stream asks this
module *where* the signal is unusable, and analyses the stretches in between.

Only the leads the model reads are judged: a flat V1 says nothing about an MLII model's input.

Flat: at least :data:`FLAT_RUN_S` seconds whose peak-to-peak stays under ``FLAT_MV`` on a lead.
Measured: no 0.1 s stretch of any lead of MIT-BIH records 105, 208, 213 and 232 (30 min each, 360 Hz,
5 µV steps) nor of pydicom's 12-lead ``waveform_ecg.dcm`` (1 kHz) is that flat, so half a second
has a wide margin over real ECG, pauses included, while an electrode off (constant or zero-filled
samples) is found within half a second of where it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLAT_MV = 1e-3  # a lead whose peak-to-peak is under 1 µV carries no ECG (electrode off, or zero-filled)
# A lead whose peak-to-peak is over 50 mV is no ECG in mV either: a front end takes a 10 mV differential signal (AAMI
# EC13's +-5 mV); the largest 14 s stretch of MIT-BIH 105, 208, 213 and 232 (105: the noisiest) spans 6.6 mV, a
# beat 1-7 mV. What does reach it is a wrong scale: microvolts said to be mV (1,000x), raw counts without their gain
# (MIT-BIH's 200 per mV), values near float limits. The shipped 1-D CNN answered all three "N" with probability
# 1.000 on DS2 beats of 1.2-1.7 mV; now they are refused with the fix (edgemed.signal_preprocess.check_samples).
ECG_MAX_MV = 50.0
FLAT_RUN_S = 0.5


@dataclass(frozen=True)
class BadRun:
    """Samples ``start`` to ``stop`` (exclusive) of the array given carry no usable signal, and why."""

    start: int
    stop: int
    reason: str


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of every run of True."""
    if not mask.any():  # the usual block: nothing to find (the edges below cost 25 us a block of 17 s at 360 Hz)
        return []
    edges = _edges(mask)
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _edges(mask: np.ndarray) -> np.ndarray:
    """Where runs of True start and stop, alternately (a stop is one past the run's last sample)."""
    padded = np.zeros(len(mask) + 2, bool)
    padded[1:-1] = mask
    return np.flatnonzero(padded[1:] != padded[:-1])


def _longest_run(mask: np.ndarray) -> int:
    """The length of the longest run of True."""
    edges = _edges(mask)
    return int((edges[1::2] - edges[::2]).max(initial=0))


def flat_mask(x: np.ndarray, fs: float) -> np.ndarray:
    """Samples (T,) of one lead that lie in a stretch of at least FLAT_RUN_S seconds under FLAT_MV peak to peak."""
    from scipy.ndimage import maximum_filter1d, minimum_filter1d

    w = max(2, int(round(FLAT_RUN_S * fs)))
    out = np.zeros(len(x), bool)
    if len(x) < w:
        return out
    finite = np.isfinite(x)
    y = np.where(finite, x, 0.0)  # rank filters do not skip NaN: windows that hold one are left out below
    # A window under FLAT_MV peak to peak has every step inside it under FLAT_MV too: with no run of w - 1 such
    # steps there is no flat window, and the rank filters need not run (real ECG: 0.13 of 0.18 ms per 17 s block).
    if _longest_run(np.abs(np.diff(y)) < FLAT_MV) < w - 1:
        return out
    # peak to peak of x[i:i + w] for every start i (scipy's rank filters, centred by origin)
    span = maximum_filter1d(y, w, origin=-(w // 2)) - minimum_filter1d(y, w, origin=-(w // 2))
    nans = np.concatenate([[0], np.cumsum(~finite)])
    whole = nans[w:] - nans[:-w] == 0  # window i = x[i:i + w] holds no NaN (a NaN run is not "flat")
    starts = np.flatnonzero((span[:len(x) - w + 1] < FLAT_MV) & whole)
    if len(starts):
        cover = np.zeros(len(x) + 1, np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, starts + w, -1)
        out = np.cumsum(cover[:-1]) > 0
    return out


def bad_runs(samples: np.ndarray, fs: float, leads: tuple[str, ...]) -> list[BadRun]:
    """The stretches of ``samples`` (T, L) with no usable signal on any of its leads, in order; NaN first
    where a stretch is both."""
    x = np.asarray(samples, dtype=np.float64)
    nan = ~np.isfinite(x)
    runs: list[BadRun] = []
    for a, b in _runs(nan.any(axis=1)):
        which = [leads[i] for i in range(x.shape[1]) if nan[a:b, i].any()]
        runs.append(BadRun(a, b, f"NaN/Inf samples on lead {', '.join(which)}"))
    flat = np.stack([flat_mask(x[:, i], fs) for i in range(x.shape[1])], axis=1) & ~nan.any(axis=1, keepdims=True)
    for a, b in _runs(flat.any(axis=1)):
        which = [leads[i] for i in range(x.shape[1]) if flat[a:b, i].any()]
        runs.append(BadRun(a, b, f"lead {', '.join(which)} flat (under {FLAT_MV * 1e3:g} µV peak to peak)"))
    return sorted(runs, key=lambda r: r.start)


def usable(length: int, runs: list[BadRun]) -> list[tuple[int, int]]:
    """The stretches between the bad runs: (start, stop) pairs covering every usable sample of ``length``."""
    bad = np.zeros(length, bool)
    for r in runs:
        bad[r.start:r.stop] = True
    return _runs(~bad)

"""Where a signal carries no ECG, checked against the definition itself on real MIT-BIH samples: a sample is flat
when it lies in a window of FLAT_RUN_S seconds, free of NaN, whose peak to peak is under FLAT_MV. The fast path
(no window can be flat when no run of w - 1 small steps exists) must never change the answer."""

from __future__ import annotations

import numpy as np

from edgemed.io.signals import read_signal
from edgemed.samples import ecg_record
from edgemed.signal_quality import FLAT_MV, FLAT_RUN_S, bad_runs, flat_mask


def _by_definition(x: np.ndarray, fs: float) -> np.ndarray:
    w = max(2, int(round(FLAT_RUN_S * fs)))
    out = np.zeros(len(x), bool)
    for i in range(len(x) - w + 1):
        window = x[i:i + w]
        if np.isfinite(window).all() and np.ptp(window) < FLAT_MV:
            out[i:i + w] = True
    return out


def test_flat_stretches_are_found_exactly_as_defined_on_real_ecg():
    fs = 360.0
    w = int(round(FLAT_RUN_S * fs))
    lead = read_signal(ecg_record()).samples[:6 * 360, 0].astype(np.float64)  # MIT-BIH 213, MLII, mV
    rng = np.random.default_rng(0)
    assert not flat_mask(lead, fs).any()  # real ECG: the fast path answers
    for length in (w - 2, w - 1, w, w + 1, 3 * w):  # around the window: flat only from w samples on
        x = lead.copy()
        x[700:700 + length] = x[700] + rng.uniform(0, 0.9 * FLAT_MV, length)  # under 1 µV of wander
        assert np.array_equal(flat_mask(x, fs), _by_definition(x, fs)), length
        assert flat_mask(x, fs).any() == (length >= w), length
    x = lead.copy()
    x[700:700 + 2 * w] = 0.0
    x[700 + w // 2] = np.nan  # a NaN splits the stretch: only the windows free of it count
    assert np.array_equal(flat_mask(x, fs), _by_definition(x, fs))
    runs = bad_runs(x[:, None], fs, ("MLII",))
    assert [r.reason.split()[0] for r in runs] == ["NaN/Inf", "lead"] and runs[0].start == 700 + w // 2

"""XQRS's local-peak search, vectorised (edgemed.local_peaks), against wfdb's own ``find_local_peaks`` on real
MIT-BIH signals (raw, and as XQRS filters and integrates them), on signals made of plateaus (where "the first
sample of a tie" matters), and through the whole detector: XQRS finds the same QRS complexes either way."""

from __future__ import annotations

import numpy as np
from wfdb import processing
from wfdb.processing.peaks import find_local_peaks

from edgemed.io.signals import read_signal
from edgemed.local_peaks import install, local_peaks
from edgemed.samples import ecg_record


def _lead() -> np.ndarray:
    sig = read_signal(ecg_record())  # MIT-BIH 213, 10 min at 360 Hz
    return sig.samples[:, 0].astype(np.float64)


def test_the_same_peaks_as_wfdb_on_real_and_plateau_signals():
    x = _lead()[: 360 * 120]
    xqrs = processing.XQRS(x, 360)
    xqrs.detect(verbose=False)
    rng = np.random.default_rng(3)
    cases = [(x, 36), (x, 5), (xqrs.sig_f, xqrs.qrs_radius), (xqrs.sig_i, xqrs.qrs_radius),
             (np.round(x * 4) / 4, 20),  # coarse levels: long plateaus and ties inside windows
             (rng.integers(0, 3, 5000).astype(np.float64), 7), (rng.integers(0, 3, 5000).astype(np.float64), 1),
             (np.repeat(rng.normal(size=300), 9), 13), (x[:50], 36)]
    for sig, radius in cases:
        want = find_local_peaks(sig, radius)
        np.testing.assert_array_equal(local_peaks(sig, radius), want)
    assert local_peaks(np.ones(100), 5).size == 0 and find_local_peaks(np.ones(100), 5).size == 0


def test_xqrs_finds_the_same_complexes_with_it(monkeypatch):
    import wfdb.processing.qrs as qrs

    x = _lead()
    monkeypatch.setattr(qrs, "find_local_peaks", find_local_peaks)  # wfdb as shipped
    slow = processing.XQRS(x, 360)
    slow.detect(verbose=False)
    install(qrs)
    assert qrs.find_local_peaks is local_peaks
    fast = processing.XQRS(x, 360)
    fast.detect(verbose=False)
    assert len(fast.qrs_inds) > 700  # 10 minutes of a real record
    np.testing.assert_array_equal(fast.qrs_inds, slow.qrs_inds)

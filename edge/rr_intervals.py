"""RR-interval features of R peaks: the rhythm beside each beat, which a beat classifier's second input reads.

A premature supraventricular beat often has a normal shape; what gives it away is when it comes. de Chazal et al.
(IEEE TBME 2004) owe their inter-patient S sensitivity to such intervals. These are the definitions the shipped
``ecg_rr`` model was trained with (``scripts/train_ecg_rr.py``) and the ones a beat stream derives from the R peaks it
finds (:mod:`edgemed.beats`), so training and the device compute the same numbers. numpy only: runtime path.
"""

from __future__ import annotations

import numpy as np

RR_FEATURES = ("rr_pre", "rr_post", "rr_local", "rr_average")
RR_LOCAL_BEATS = 10  # rr_local: the mean of the (up to) 10 RR intervals ending at the beat
RR_AVERAGE_S = 300.0  # rr_average: the mean RR interval over the (up to) 300 s of signal before the beat


def rr_features(record: np.ndarray, r_peak: np.ndarray, fs: float = 360.0) -> np.ndarray:
    """The ``rr`` input of ``edgemed.zoo.ecg.ECGRR``, (N, 4) float32 seconds, for beats sorted by record and R peak.

    For beat i of a record with R peaks p (samples at ``fs``), RR interval k = p[k] - p[k-1]:

    - ``rr_pre`` = p[i] - p[i-1]; ``rr_post`` = p[i+1] - p[i];
    - ``rr_local`` = mean of RR intervals max(1, i-9) .. i (up to 10, ``rr_pre`` included);
    - ``rr_average`` = mean of the RR intervals k <= i that lie wholly in the 300 s before the beat
      (p[k-1] >= p[i] - 300 s), and at least of ``rr_pre``.

    The first and the last beat of each record lack a neighbour on one side: their rows are NaN (the
    training script leaves them out, and so must a caller: they have no defined input). numpy only, so
    a runtime can compute the same numbers from the R peaks it detects.
    """
    record = np.asarray(record)
    peaks = np.asarray(r_peak, dtype=np.int64)
    if record.shape != peaks.shape or peaks.ndim != 1:
        raise ValueError(f"record {record.shape} and r_peak {peaks.shape} must be the same 1-D length")
    out = np.full((len(peaks), 4), np.nan, np.float64)
    starts = np.flatnonzero(np.r_[True, record[1:] != record[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(peaks)]):
        p = peaks[lo:hi]
        if len(p) < 3:
            continue
        if np.any(np.diff(p) <= 0):
            raise ValueError(f"record {record[lo]}: R peaks must be strictly increasing")
        rr = np.diff(p) / fs  # rr[k-1] is interval k, ending at beat k
        cum = np.r_[0.0, np.cumsum(rr)]  # cum[k] = sum of intervals 1..k
        i = np.arange(1, len(p) - 1)
        local_from = np.maximum(1, i - RR_LOCAL_BEATS + 1)
        # first interval k whose start p[k-1] is within 300 s of p[i]; never later than i itself
        first_start = np.searchsorted(p, p[i] - RR_AVERAGE_S * fs, side="left")
        avg_from = np.minimum(first_start + 1, i)
        out[lo + i] = np.stack([rr[i - 1], rr[i], (cum[i] - cum[local_from - 1]) / (i - local_from + 1),
                                (cum[i] - cum[avg_from - 1]) / (i - avg_from + 1)], axis=1)
    return out.astype(np.float32)


def rr_rows(peaks: np.ndarray, fs: float) -> np.ndarray:
    """:func:`rr_features` of one signal's R peaks (source samples at ``fs``), in :data:`RR_FEATURES` order."""
    peaks = np.asarray(peaks, dtype=np.int64)
    return rr_features(np.zeros(len(peaks), np.int64), peaks, fs)

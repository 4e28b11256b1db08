"""Confidence bounds for the drift gate: how sure a figure is, given how many cases it rests on.

All bounds are one-sided at the given confidence (0.95 by default): a budget ``metric >= v`` is
met only when the metric's *lower* bound is at least ``v``, and missed for sure only when its
*upper* bound is below ``v``. Exact binomial bounds, tests and the normal CDF come from scipy;
each function is checked against scipy/statsmodels' own tests of the same quantity
(``tests/test_stats.py``). Resampling is seeded: the same data always gives the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
SEED = 20261126
KERNEL_WIDTH = 1.5  # x Silverman's bandwidth: the bound's coverage held at >= 97.5% in every trial set here
KERNEL_REACH = 8.3  # kernel widths beyond which a Gaussian term is below 1e-16


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided exact bounds (lower, upper) on a binomial proportion from k events in n trials.

    Each bound alone holds with ``confidence``: zero flips in 16 images bound the flip rate below
    0.171, and certifying a rate below 0.001 from counts alone takes 2,995 images without a flip."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = 0.0 if k <= 0 else float(beta.ppf(alpha, k, n - k + 1))
    upper = 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return lower, upper


def count_floor(k: int, n: int) -> float:
    """The smallest flip rate a model-based bound may claim from ``k`` flips counted in ``n`` cases: the rate
    below which seeing as few as ``k`` flips is as likely as not (the Clopper-Pearson upper limit at 50%).

    A margin model can say more per case than counting, but it cannot resolve rates the verdict set is too
    small to show: with zero flips in 808 cases it may bound the rate near 0.09% (counting alone: 0.37%), never
    at 0, and never at the counted rate itself (a bound equal to the observed agreement claims certainty)."""
    return clopper_pearson(k, n, 0.5)[1] if n > 0 else 1.0


def cases_to_certify(rate: float, limit: float, confidence: float = CONFIDENCE, most: int = 10_000_000) -> int | None:
    """How many cases, at the observed event ``rate``, would bound the rate below ``limit``
    (None: at this rate no number of cases would)."""
    if rate >= limit:
        return None

    def enough(n: int) -> bool:
        return clopper_pearson(int(round(rate * n)), n, confidence)[1] <= limit

    return _fewest(enough, most)


def cases_to_refute(rate: float, limit: float, confidence: float = CONFIDENCE, most: int = 10_000_000) -> int | None:
    """How many cases, at the observed event ``rate`` above ``limit``, would show the rate surely above it (the
    lower bound above ``limit``): how an open verdict whose flips already exceed the budget gets decided."""
    if rate <= limit:
        return None

    def enough(n: int) -> bool:
        return clopper_pearson(int(round(rate * n)), n, confidence)[0] > limit

    return _fewest(enough, most)


def _fewest(enough: Callable[[int], bool], most: int) -> int | None:
    """The smallest n with ``enough(n)`` (monotone in n), by doubling then bisection; None beyond ``most``."""
    n = 1
    while not enough(n):
        n *= 2
        if n > most:
            return None
    lo, hi = n // 2, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def bootstrap_mean(values: Sequence[float], confidence: float = CONFIDENCE,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """One-sided percentile bootstrap bounds (lower, upper) on the mean of per-case values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return -np.inf, np.inf
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    from scipy.stats import bootstrap

    # A one-sided bound at 95% is one end of a two-sided 90% interval.
    ci = bootstrap((x,), np.mean, confidence_level=2 * confidence - 1, n_resamples=resamples,
                   method="percentile", vectorized=True, rng=np.random.default_rng(SEED)).confidence_interval
    return float(ci.low), float(ci.high)


def needed_for_mean(values: Sequence[float], limit: float, confidence: float = CONFIDENCE) -> int | None:
    """Cases a bootstrap bound on the mean would need to clear ``limit``, at the observed mean and spread."""
    from scipy.stats import norm

    x = np.asarray(values, dtype=np.float64)
    gap = abs(float(x.mean()) - limit) if x.size else 0.0
    if x.size < 2 or gap == 0.0:
        return None
    sd = float(x.std(ddof=1))
    return max(x.size, int(np.ceil((norm.ppf(confidence) * sd / gap) ** 2))) if sd > 0 else x.size


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (statsmodels' mcnemar(exact=True))."""
    from scipy.stats import binom

    m = b + c
    return 1.0 if m == 0 else float(min(1.0, 2.0 * binom.cdf(min(b, c), m, 0.5)))


def paired_drop_bounds(b: int, c: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Bounds on the drop (b - c) / n of a proportion between paired raters, where b cases were right only
    for the first rater (FP32) and c only for the second (the candidate): exact, conditional on the
    m = b + c discordant cases, from the Clopper-Pearson bounds on the share b / m."""
    m = b + c
    if n <= 0:
        return -1.0, 1.0
    if m == 0:
        return 0.0, 0.0
    lo, hi = clopper_pearson(b, m, confidence)
    return (2 * lo - 1) * m / n, (2 * hi - 1) * m / n


def noninferiority_p(b: int, c: int, n: int, margin: float) -> float:
    """One-sided exact p-value for H0 "the drop (b - c) / n is at least ``margin``" (small p: non-inferior).

    Conditional on the m = b + c discordant cases, b is binomial; on the null's boundary the drop is the
    margin, i.e. the share of discordant cases that went against the candidate is (m + n * margin) / (2m)."""
    from scipy.stats import binom

    m = b + c
    if m == 0:
        return 0.0 if margin > 0 else 1.0
    return float(binom.cdf(b, m, min(1.0, (m + n * margin) / (2.0 * m))))


def flip_rate_bound(margins: np.ndarray, shifts: np.ndarray, confidence: float = CONFIDENCE,
                    resamples: int = 300, most: int = 1000) -> tuple[float, float]:
    """(estimate, upper bound) of how often a decision flips, from FP32 margins and candidate margin shifts.

    A case flips when the candidate's change of the decision margin takes the FP32 margin below zero.
    Counting flips needs thousands of cases to certify a rate of 1 in 1000; the margins say far more
    per case. Taking a case's margin change as independent of its margin, the flip rate is the chance
    that a change drawn from the verdict cases (``shifts``: candidate margin minus FP32 margin, for
    FP32's class) sinks a margin drawn from every case the FP32 model has seen (``margins`` >= 0).
    The changes are smoothed with a Gaussian kernel (1.5x Silverman's bandwidth), so a change a
    little beyond the largest one seen still counts, and both samples are bootstrapped for the bound.
    Checked against flip rates counted on 4,780 real images (tests/test_flip_estimator.py): with 150
    verdict cases, the bound covered the counted rate in 98.8% (real INT8, 0.42% flips), 97.5%
    (planted noise, 3.1%) and 100% (NNCF fast bias correction, 10.4%) of 80 resampled trials; at
    Silverman's own bandwidth, 92.5% for the planted noise.
    """
    m = np.asarray(margins, np.float64)
    s = np.asarray(shifts, np.float64)
    if m.size == 0 or s.size < 2:
        return 0.0, 1.0
    estimate = flip_rate(m, s)
    rng = np.random.default_rng(SEED)
    # Resamples of at most ``most`` of each keep the cost bounded for big sets; a smaller resample spreads
    # wider than the full sample would, so the bound only errs on the safe side.
    km, ks = min(m.size, most), min(s.size, most)
    boots = [flip_rate(m[rng.integers(0, m.size, km)], s[rng.integers(0, s.size, ks)]) for _ in range(resamples)]
    return estimate, max(estimate, float(np.quantile(boots, confidence)))


FLIP_RATE_BLOCK = 1 << 22  # terms per block of flip_rate's sum: 32 MB of float64


def flip_rate(margins: np.ndarray, shifts: np.ndarray) -> float:
    """The point estimate of :func:`flip_rate_bound`: P(margin + shift < 0), shifts kernel-smoothed."""
    from scipy.special import ndtr

    m, s = np.asarray(margins, np.float64), np.asarray(shifts, np.float64)
    if m.size == 0 or s.size == 0:
        return 0.0
    width = KERNEL_WIDTH * bandwidth(s)
    # Only margins a shift can come near matter: beyond KERNEL_REACH widths above the largest fall, every term
    # is under ndtr(-KERNEL_REACH) (1e-16). Most margins lie there, so this is the same sum at a fraction of the
    # cost (the full matrix took 15 s per verdict on 1,500 cases, 300 bootstrap resamples; issue 18's fallback
    # judges each attempt).
    near = m[m < KERNEL_REACH * width - s.min()]
    if near.size == 0:
        return 0.0
    # in blocks of at most FLIP_RATE_BLOCK terms: bench judged 49,661 MIT-BIH beats against their own margins, a
    # 49,661 x 49,661 matrix (19.7 GB) in one expression, and the kernel killed it; one block is the old sum exactly
    rows = max(1, FLIP_RATE_BLOCK // s.size)
    total = sum(float(ndtr((-near[i:i + rows, None] - s[None, :]) / width).sum()) for i in range(0, near.size, rows))
    return total / (m.size * s.size)


def bandwidth(x: np.ndarray) -> float:
    """Silverman's rule of thumb for a Gaussian kernel."""
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    iqr = float(np.subtract(*np.percentile(x, [75, 25]))) if x.size > 1 else 0.0
    spread = min(std, iqr / 1.349) if iqr > 0 else std
    return max(0.9 * spread * x.size ** -0.2, 1e-9)

"""The gate's confidence bounds against independent implementations (scipy.stats.binomtest, statsmodels)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar

from edgemed.measures.stats import (
    bootstrap_mean,
    cases_to_certify,
    clopper_pearson,
    mcnemar_exact,
    noninferiority_p,
    paired_drop_bounds,
)


@pytest.mark.parametrize("k,n", [(0, 16), (0, 2995), (1, 64), (7, 100), (44, 624), (100, 100), (3, 7)])
def test_clopper_pearson_matches_scipy_binomtest(k, n):
    lower, upper = clopper_pearson(k, n)
    want_upper = binomtest(k, n, alternative="less").proportion_ci(confidence_level=0.95, method="exact").high
    want_lower = binomtest(k, n, alternative="greater").proportion_ci(confidence_level=0.95, method="exact").low
    assert upper == pytest.approx(want_upper, abs=1e-9) and lower == pytest.approx(want_lower, abs=1e-9)


def test_the_issue_s_figures():
    assert clopper_pearson(0, 16)[1] == pytest.approx(0.1707, abs=1e-4)  # zero flips in 16 images
    assert cases_to_certify(0.0, 0.001) == 2995  # "about 3,000 images with zero flips"
    assert cases_to_certify(0.002, 0.001) is None  # at twice the allowed rate, no amount of data certifies


@pytest.mark.parametrize("b,c", [(0, 0), (5, 0), (10, 2), (3, 9), (40, 31), (200, 150)])
def test_mcnemar_matches_statsmodels(b, c):
    table = [[100, b], [c, 100]]
    assert mcnemar_exact(b, c) == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_paired_drop_bounds_cover_the_true_drop_in_simulation():
    """Simulate paired correct/incorrect outcomes with a known accuracy drop: the one-sided upper bound
    is at or above the true drop in at least 95% of trials."""
    rng = np.random.default_rng(0)
    n, drop, hits = 600, 0.01, 0
    for _ in range(400):
        fp32 = rng.random(n) < 0.85
        cand = fp32.copy()
        worse = rng.choice(np.flatnonzero(fp32), int(round(0.03 * n)), replace=False)
        better = rng.choice(np.flatnonzero(~fp32), int(round(0.03 * n)) - int(drop * n), replace=False)
        cand[worse], cand[better] = False, True
        # resample which cases we see
        pick = rng.integers(0, n, n)
        b = int(np.sum(fp32[pick] & ~cand[pick]))
        c = int(np.sum(~fp32[pick] & cand[pick]))
        hits += paired_drop_bounds(b, c, n)[1] >= drop
    assert hits / 400 >= 0.95


def test_noninferiority_p_is_an_exact_binomial_tail():
    # b=2 against, c=10 for the candidate on 600 cases: clearly non-inferior at a 0.5-point margin
    assert noninferiority_p(2, 10, 600, 0.005) < 0.01
    # 12 against, 0 for: a 2-point drop is not non-inferior
    assert noninferiority_p(12, 0, 600, 0.005) > 0.5
    m, p0 = 12, (12 + 600 * 0.005) / 24
    assert noninferiority_p(2, 10, 600, 0.005) == pytest.approx(binomtest(2, m, p0, alternative="less").pvalue)


def test_bootstrap_bounds_bracket_the_mean_and_shrink_with_cases():
    rng = np.random.default_rng(1)
    few, many = rng.beta(50, 1, 30), rng.beta(50, 1, 3000)
    lo_few, hi_few = bootstrap_mean(few)
    lo_many, hi_many = bootstrap_mean(many)
    assert lo_few <= few.mean() <= hi_few and lo_many <= many.mean() <= hi_many
    assert hi_many - lo_many < (hi_few - lo_few) / 5
    assert bootstrap_mean([1.0] * 5) == (1.0, 1.0)


def test_the_flip_rate_in_blocks_is_the_one_expression_sum(monkeypatch):
    """Memory bounded (bench judged 49,661 beats against their own margins: a 19.7 GB matrix in one expression), the
    sum the same: the kernel sum of every margin-shift pair, block by block."""
    from scipy.special import ndtr

    from edgemed.measures import stats

    rng = np.random.default_rng(7)
    margins, shifts = np.abs(rng.normal(0, 1, 3000)), rng.normal(-0.05, 0.2, 1500)
    width = stats.KERNEL_WIDTH * stats.bandwidth(shifts)
    whole = float(ndtr((-margins[:, None] - shifts[None, :]) / width).sum() / (margins.size * shifts.size))
    one_block = stats.flip_rate(margins, shifts)
    monkeypatch.setattr(stats, "FLIP_RATE_BLOCK", 10_000)  # 6 rows a block
    assert one_block == pytest.approx(whole, rel=1e-12) and stats.flip_rate(margins, shifts) == pytest.approx(
        whole, rel=1e-12)

"""analysis.stats against hand computations and scipy's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from analysis.stats import (
    cohens_dz,
    hedges_g,
    iqm,
    iqm_ci,
    main_effects,
    mean_ci,
    paired_permutation_test,
    permutation_test,
    too_few,
)

T975 = {1: 12.706204736174698, 2: 4.302652729911275, 4: 2.7764451051977987}  # t quantiles, from tables


def _scipy_paired(a, b):
    return sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                n_resamples=np.inf, vectorized=True)


def _scipy_unpaired(a, b):
    return sps.permutation_test((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                permutation_type="independent", n_resamples=np.inf, vectorized=True)


@pytest.mark.parametrize(("x", "mean", "half"), [
    ([1.0, 2.0, 3.0, 4.0, 5.0], 3.0, T975[4] * math.sqrt(2.5) / math.sqrt(5)),
    ([0.010, 0.014], 0.012, T975[1] * 0.002),  # sd = 0.004 / sqrt 2, se = sd / sqrt 2 = 0.002
    ([0.1, 0.2, 0.3], 0.2, T975[2] * 0.1 / math.sqrt(3)),
])
def test_mean_ci_t_matches_hand_computation(x, mean, half):
    m, lo, hi = mean_ci(x)
    assert m == pytest.approx(mean, rel=1e-12)
    assert lo == pytest.approx(mean - half, rel=1e-9)
    assert hi == pytest.approx(mean + half, rel=1e-9)


def test_mean_ci_level_single_value_constant_and_errors():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0], level=0.9)
    assert hi - m == pytest.approx(2.131846786326649 * math.sqrt(2.5) / math.sqrt(5), rel=1e-9)  # t_{0.95, 4}
    m, lo, hi = mean_ci([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="method"):
        mean_ci([1.0, 2.0], method="bca")


def test_mean_ci_bounds_clip_the_interval_to_the_values_range():
    acc = [0.75, 0.95, 1.0]  # accuracies: the t interval runs above 1
    m, lo, hi = mean_ci(acc)
    assert hi > 1.0
    assert mean_ci(acc, bounds=(0, 1)) == (m, lo, 1.0)
    low = [0.0, 0.02, 0.25]  # and below 0
    assert mean_ci(low)[1] < 0 and mean_ci(low, bounds=(0, 1))[1] == 0.0
    assert mean_ci([0.4, 0.5, 0.6], bounds=(0, 1)) == mean_ci([0.4, 0.5, 0.6])  # inside: unchanged
    m, lo, hi = mean_ci([0.9], bounds=(0, 1))
    assert m == 0.9 and math.isnan(lo) and math.isnan(hi)  # one value: still no interval
    b = mean_ci(acc, method="bootstrap", n_boot=500, bounds=(0, 1))
    assert b == mean_ci(acc, method="bootstrap", n_boot=500)  # a percentile interval never leaves the range
    with pytest.raises(ValueError, match=r"x: expected values within bounds \(0, 1\), got values in \[0.2, 95.0\]"):
        mean_ci([95.0, 0.2], bounds=(0, 1))  # an accuracy in percent
    with pytest.raises(ValueError, match="bounds: expected"):
        mean_ci(acc, bounds=(1, 0))


def test_bootstrap_ci_deterministic_by_seed_and_close_to_t():
    x = np.random.default_rng(1).normal(10.0, 2.0, size=40)
    boot = mean_ci(x, method="bootstrap", n_boot=4000, seed=3)
    assert boot == mean_ci(x, method="bootstrap", n_boot=4000, seed=3)
    assert boot != mean_ci(x, method="bootstrap", n_boot=4000, seed=4)
    m, lo, hi = mean_ci(x)
    assert boot[0] == m
    assert boot[1] < m < boot[2]
    # for n = 40 roughly normal values the percentile interval is close to the t interval (slightly narrower)
    assert abs(boot[1] - lo) < 0.15 * (hi - lo) and abs(boot[2] - hi) < 0.15 * (hi - lo)


@pytest.mark.parametrize(("a", "b"), [
    ([0.3, 0.5, 0.2, 0.9, 0.4, 0.6], [0.1, 0.45, 0.3, 0.5, 0.2, 0.1]),
    ([1.0, 2.0, 3.0], [0.5, 1.5, 2.0]),  # every difference positive: p = 2 / 2^3
    ([0.2, 0.4, 0.4, 0.1, 0.9, 0.3, 0.35, 0.5], [0.2, 0.1, 0.5, 0.3, 0.6, 0.3, 0.1, 0.2]),  # zero differences (ties)
])
def test_paired_permutation_matches_scipy_exact(a, b):
    a, b = np.array(a), np.array(b)
    r = paired_permutation_test(a, b)
    ref = _scipy_paired(a, b)
    assert r.exact and r.paired and r.n == a.size and r.n_resamples == 2**a.size
    assert r.p == pytest.approx(ref.pvalue, abs=1e-12)
    assert r.diff == pytest.approx(ref.statistic, rel=1e-12)
    d = a - b
    assert r.effect == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    assert r.effect_name == "d_z"


def test_paired_permutation_three_seeds_all_one_sign():
    r = paired_permutation_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.0])
    assert r.p == pytest.approx(0.25) and r.p_min == pytest.approx(0.25)


def test_paired_permutation_monte_carlo_close_to_exact():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1.0, 17), rng.normal(0.0, 1.0, 17)
    exact = paired_permutation_test(a, b, exact_max_n=17)
    mc = paired_permutation_test(a, b, n_resamples=20_000, seed=1)
    assert exact.exact and not mc.exact and mc.n_resamples == 20_000
    assert mc.p == pytest.approx(exact.p, abs=0.02)
    assert mc.p == paired_permutation_test(a, b, n_resamples=20_000, seed=1).p
    with pytest.raises(ValueError, match="equal length"):
        paired_permutation_test([1.0, 2.0], [1.0])


@pytest.mark.parametrize(("a", "b"), [
    ([0.3, 0.5, 0.2, 0.9, 0.4, 0.6], [0.1, 0.45, 0.3, 0.5]),
    ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),  # fully separated 3 vs 3: p = 2 / C(6, 3) = 0.1
    ([1.0, 1.0, 2.0, 2.0, 3.0], [2.0, 2.0, 2.0, 4.0]),  # ties across groups
])
def test_unpaired_permutation_matches_scipy_exact(a, b):
    a, b = np.array(a), np.array(b)
    r = permutation_test(a, b)
    ref = _scipy_unpaired(a, b)
    assert r.exact and not r.paired and (r.n_a, r.n_b, r.n) == (a.size, b.size, a.size + b.size)
    assert r.n_resamples == ref.null_distribution.size == math.comb(a.size + b.size, a.size)
    assert r.p == pytest.approx(ref.pvalue, abs=1e-12)
    assert r.diff == pytest.approx(ref.statistic, rel=1e-12)


def test_unpaired_separated_three_vs_three_and_monte_carlo():
    assert permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).p == pytest.approx(0.1)
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.5, 1.0, 9), rng.normal(0.0, 1.0, 8)
    exact = permutation_test(a, b)  # C(17, 8) = 24,310 splits
    mc = permutation_test(a, b, n_resamples=20_000, seed=0, exact_max=1000)
    assert exact.exact and not mc.exact
    assert mc.p == pytest.approx(exact.p, abs=0.02)
    assert mc.p >= mc.p_min == pytest.approx(2 / 20_001)


def test_effect_sizes_by_hand():
    # differences 1, 2, 3: mean 2, sd 1
    assert cohens_dz([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(2.0)
    # means 2 and 4, both sd 1 -> s_pooled 1, d = -2; J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert hedges_g([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]) == pytest.approx(-1.6)
    # unequal sizes: a = [1, 3] (var 2), b = [2, 4, 6] (var 4): s_pooled^2 = (2 + 8) / 3; J = 1 - 3 / 11
    assert hedges_g([1.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(-2.0 / math.sqrt(10 / 3) * (1 - 3 / 11))
    assert permutation_test([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]).effect == pytest.approx(-1.6)
    assert math.isnan(cohens_dz([1.0], [0.0]))
    assert cohens_dz([2.0, 3.0], [1.0, 2.0]) == math.inf  # identical differences: no spread


def test_iqm_matches_trim_mean():
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    x = np.random.default_rng(0).exponential(size=(10, 4))
    assert iqm(x) == pytest.approx(sps.trim_mean(x.ravel(), 0.25), rel=1e-12)
    assert iqm(x[:, 0]) == pytest.approx(sps.trim_mean(x[:, 0], 0.25), rel=1e-12)


def test_iqm_ci_deterministic_contains_iqm_and_stratified():
    x = np.random.default_rng(0).exponential(size=(10, 3))  # 10 runs x 3 tasks
    r = iqm_ci(x, n_boot=500, seed=1)
    assert r == iqm_ci(x, n_boot=500, seed=1)
    assert r[0] == pytest.approx(iqm(x)) and r[1] <= r[0] <= r[2] and r[1] < r[2]
    assert iqm_ci({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}, n_boot=500, seed=1) == r  # same draws either form
    # stratified: every resample keeps 4 runs of each task, so the pooled IQM never moves
    lo_hi = iqm_ci({"zeros": np.zeros(4), "ones": np.ones(4)}, n_boot=300, seed=0)
    assert lo_hi == (0.5, 0.5, 0.5)
    uneven = iqm_ci({"a": [1.0, 2.0, 3.0], "b": [10.0, 11.0, 12.0, 13.0, 14.0]}, n_boot=300)
    assert uneven[1] <= uneven[0] <= uneven[2]
    with pytest.raises(ValueError, match="2D"):
        iqm_ci(np.zeros(5))


def test_main_effects_two_by_two_unbalanced_seeds():
    # cell means (A, B): (a1, b1) 1, (a1, b2) 3, (a2, b1) 5, (a2, b2) 11; cell (a2, b2) has three seeds
    cells = {("a1", "b1"): [0.5, 1.5], ("a1", "b2"): [2.0, 4.0], ("a2", "b1"): [5.0, 5.0],
             ("a2", "b2"): [10.0, 11.0, 12.0]}
    rows = [{"A": a, "B": b, "m": v} for (a, b), vs in cells.items() for v in vs]
    rows.append({"A": "a1", "B": "b1", "m": None})  # a run without the metric: skipped
    effects = {(e.factor, e.level): e for e in main_effects(pa.Table.from_pylist(rows), ["A", "B"], "m")}
    # grand mean of cell means 5 (the mean of runs would be 51 / 9); a1: (1 + 3) / 2 = 2, a2: 8, b1: 3, b2: 7
    for key, mean in {("A", "a1"): 2.0, ("A", "a2"): 8.0, ("B", "b1"): 3.0, ("B", "b2"): 7.0}.items():
        assert effects[key].mean == pytest.approx(mean)
        assert effects[key].effect == pytest.approx(mean - 5.0)
        assert effects[key].n_cells == 2
    assert effects[("A", "a2")].n_runs == 5 and effects[("A", "a1")].n_runs == 4
    with pytest.raises(ValueError, match="unknown column"):
        main_effects(pa.Table.from_pylist(rows), ["C"], "m")


def test_too_few():
    assert too_few(2) == "n=2: too few seeds for an interval, a test or an effect size (needs n >= 3)"
    assert too_few(1) is not None and "n=1" in too_few(1)
    assert too_few(3) is None and too_few(10) is None

"""Statistics for sweeps over seeds: confidence intervals, permutation tests, effect sizes, IQM, main effects.

Pure functions of numpy arrays (and, for main effects, an Arrow table of runs). A sweep has few seeds per
configuration (3 is typical), so the tests are exact where that is cheap (every sign pattern, every split) and
every function says what it does with n = 1.

Shape legend: n samples (seeds), R runs, T tasks, B bootstrap resamples.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats as sps

__all__ = [
    "MIN_N",
    "MainEffect",
    "PermutationResult",
    "cohens_dz",
    "hedges_g",
    "iqm",
    "iqm_ci",
    "main_effects",
    "mean_ci",
    "paired_permutation_test",
    "permutation_test",
    "pooled_sd",
    "too_few",
]

_CHUNK = 2048  # bootstrap resamples drawn per batch: bounds memory at _CHUNK x n floats


def _sample(x: Any, name: str = "x") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty sample")
    return a


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level}")


MIN_N = 3  # fewer values than this: no interval, no test, no effect size is shown (see too_few)


def too_few(n: int) -> str | None:
    """Why n values (seeds) are too few for an interval, a test or an effect size (n < MIN_N); None otherwise.

    With 2 seeds a t-interval is ±12.7 standard deviations wide and a percentile bootstrap can only resample the
    two values (its interval is far too narrow); a paired sign-flip test cannot go below p = 0.5, and an effect
    size divides by a standard deviation with one degree of freedom."""
    if n >= MIN_N:
        return None
    if n <= 0:
        return f"n={n}: no runs, no estimate"
    if n == 1:
        return "n=1: a single seed: no interval, test or effect size"
    return f"n={n}: too few seeds for an interval, a test or an effect size (needs n >= {MIN_N})"


@functools.lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    # scipy's t.ppf costs ~70 us a call; curves ask for the same few (level, n) once per drawn step
    return float(sps.t.ppf(q, df))


def mean_ci(x: Any, level: float = 0.95, method: Literal["t", "bootstrap", "log"] = "t", n_boot: int = 10_000,
            seed: int = 0, bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of x (n,) at confidence ``level``.

    method "t": mean ± t_{(1+level)/2, n-1} · s / sqrt(n), s the sample standard deviation (ddof 1).
    method "bootstrap": the percentile interval of the means of ``n_boot`` resamples with replacement
    (deterministic by ``seed``). With 2-5 seeds a bootstrap interval is far too narrow (it cannot see beyond the
    observed range): prefer "t" for seeds. n = 1 gives (x, nan, nan).
    method "log": for positive, right-skewed values (cross-entropies): the t interval of mean(log x), mapped back
    with exp; the centre returned is then the geometric mean exp(mean(log x)), not the arithmetic mean, and the
    interval stays above 0 however few and skewed the values (a t interval of [0.008, 0.010, 0.036] runs below 0).
    bounds (low, high): the range every value lies in (accuracies, success rates: (0, 1)); the interval is clipped
    to it, since the mean cannot leave it (a t interval of [0.75, 0.95, 1.0] runs above 1). Values outside it
    raise ValueError.
    """
    a = _sample(x)
    _check_level(level)
    if bounds is not None:
        lo_b, hi_b = (float(b) for b in bounds)
        if not lo_b < hi_b:
            raise ValueError(f"bounds: expected (low, high) with low < high, got {bounds!r}")
        if ((a < lo_b) | (a > hi_b)).any():
            raise ValueError(f"x: expected values within bounds {bounds!r}, got values in "
                             f"[{float(a.min())!r}, {float(a.max())!r}]")
        m, low, high = mean_ci(a, level, method, n_boot, seed)
        if math.isnan(low):  # n = 1: no interval to clip
            return m, low, high
        return m, min(max(low, lo_b), hi_b), max(min(high, hi_b), lo_b)
    if method == "log":
        if (a <= 0).any():
            raise ValueError(f"mean_ci: method 'log' needs positive values, got {a.min()!r} among {a.size}; use "
                             "'t' or 'bootstrap' for a metric that can be 0 or negative")
        gm, low, high = mean_ci(np.log(a), level, "t")
        return math.exp(gm), math.exp(low) if math.isfinite(low) else math.nan, \
            math.exp(high) if math.isfinite(high) else math.nan
    m = float(a.mean())
    n = a.size
    if n == 1:
        return m, math.nan, math.nan
    if method == "t":
        half = float(_t_quantile((1 + level) / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
        return m, m - half, m + half
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = np.concatenate([a[rng.integers(0, n, (min(_CHUNK, n_boot - i), n))].mean(axis=1)
                                for i in range(0, n_boot, _CHUNK)])  # (B,)
        low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
        return m, float(low), float(high)
    raise ValueError(f"method: expected 't', 'bootstrap' or 'log', got {method!r}")


@dataclass(frozen=True)
class PermutationResult:
    """A two-sample permutation test: p (two-sided), diff = mean(a) - mean(b) (paired: mean of a - b),
    effect (Cohen's d_z when paired, Hedges' g when not; named by ``effect_name``), n (pairs, or n_a + n_b),
    exact (every permutation enumerated) and n_resamples (permutations the p value was computed from)."""

    p: float
    diff: float
    effect: float
    effect_name: str
    n: int
    n_a: int
    n_b: int
    paired: bool
    exact: bool
    n_resamples: int

    @property
    def p_min(self) -> float:
        """The smallest p this test can give (two-sided): 2 / 2^n for n pairs exactly, 2 / C(n_a + n_b, n_a) for
        an exact unpaired test, 2 / (n_resamples + 1) for Monte Carlo. With 3 seeds a paired test can never reach
        p < 0.25, an unpaired 3 vs 3 never p < 0.1."""
        return min(1.0, 2 / (self.n_resamples + (0 if self.exact else 1)))


def _two_sided_p(null: np.ndarray, observed: float, exact: bool) -> float:
    """scipy.stats.permutation_test's two-sided p: twice the smaller tail, clipped to 1. Null values within
    a relative 100 eps of the observed one count as ties (floating-point noise). Monte Carlo adds the observed
    arrangement to both counts ((k + 1) / (B + 1)), so p is never 0."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    adj = 0 if exact else 1
    less = ((null <= observed + gamma).sum() + adj) / (null.size + adj)
    greater = ((null >= observed - gamma).sum() + adj) / (null.size + adj)
    return float(min(1.0, 2 * min(less, greater)))


def _ratio(num: float, den: float) -> float:
    """num / den with the limits a zero spread gives: nan for 0/0, ±inf otherwise."""
    if den > 1e-12 * abs(num):  # a spread at rounding level (identical differences) counts as zero
        return num / den
    return math.nan if num == 0 else math.copysign(math.inf, num)


def cohens_dz(a: Any, b: Any) -> float:
    """Cohen's d_z of paired samples a, b (n,): mean(a - b) / sd(a - b) (ddof 1); nan for n < 2."""
    d = _sample(a, "a") - _sample(b, "b")
    return math.nan if d.size < 2 else _ratio(float(d.mean()), float(d.std(ddof=1)))


def hedges_g(a: Any, b: Any) -> float:
    """Hedges' g of independent samples a (n_a,), b (n_b,): (mean(a) - mean(b)) / s_pooled times the small-sample
    correction J = 1 - 3 / (4 (n_a + n_b) - 9); s_pooled² = ((n_a-1) s_a² + (n_b-1) s_b²) / (n_a + n_b - 2).
    nan when n_a + n_b < 3 (no pooled variance)."""
    a, b = _sample(a, "a"), _sample(b, "b")
    df = a.size + b.size - 2
    if df < 1:
        return math.nan
    ss = (a.var(ddof=1) * (a.size - 1) if a.size > 1 else 0.0) + (b.var(ddof=1) * (b.size - 1) if b.size > 1 else 0.0)
    d = _ratio(float(a.mean() - b.mean()), math.sqrt(ss / df))
    return d * (1 - 3 / (4 * (a.size + b.size) - 9))


def paired_permutation_test(a: Any, b: Any, n_resamples: int = 10_000, seed: int = 0,
                            exact_max_n: int = 16) -> PermutationResult:
    """Sign-flip test of mean(a - b) = 0 for paired samples a, b (n,), e.g. two configurations on the same seeds.

    Under the null each difference is as likely to have either sign. n <= exact_max_n: exact, over all 2^n
    sign patterns; otherwise ``n_resamples`` random patterns (deterministic by ``seed``). The statistic is the
    mean difference; p is two-sided as in scipy.stats.permutation_test(permutation_type="samples").
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired_permutation_test: expected samples of equal length, got {a.size} and {b.size}")
    d = a - b  # (n,)
    n = d.size
    exact = n <= exact_max_n
    if exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # (2^n, n), all patterns
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(n_resamples, n))
    null = (signs * d).mean(axis=1)
    observed = float(d.mean())
    return PermutationResult(_two_sided_p(null, observed, exact), observed, cohens_dz(a, b), "d_z", n, n, n,
                             True, exact, int(null.size))


def permutation_test(a: Any, b: Any, n_resamples: int = 10_000, seed: int = 0,
                     exact_max: int = 100_000) -> PermutationResult:
    """Permutation test of mean(a) = mean(b) for independent samples a (n_a,), b (n_b,).

    The statistic is mean(a) - mean(b) over every reassignment of the pooled values to groups of n_a and n_b:
    exact (all C(n_a + n_b, n_a) splits) when there are at most ``exact_max`` of them, else ``n_resamples``
    random permutations (deterministic by ``seed``). p is two-sided as in scipy.stats.permutation_test
    (permutation_type="independent"); the effect size is Hedges' g.
    """
    a, b = _sample(a, "a"), _sample(b, "b")
    pooled = np.concatenate([a, b])  # (n_a + n_b,)
    na, n = a.size, pooled.size
    exact = math.comb(n, na) <= exact_max
    if exact:
        mask = np.zeros((math.comb(n, na), n), dtype=bool)  # (C, n): True where a value goes to group a
        for i, idx in enumerate(itertools.combinations(range(n), na)):
            mask[i, list(idx)] = True
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)  # (B, n)
        mask = np.zeros((n_resamples, n), dtype=bool)
        np.put_along_axis(mask, perm[:, :na], True, axis=1)
    total = pooled.sum()
    sum_a = mask.astype(np.float64) @ pooled
    null = sum_a / na - (total - sum_a) / (n - na)
    observed = float(a.mean() - b.mean())
    return PermutationResult(_two_sided_p(null, observed, exact), observed, hedges_g(a, b), "g", n, na, b.size,
                             False, exact, int(null.size))


def iqm(x: Any) -> float:
    """Interquartile mean of all values of x (any shape, flattened): the mean of the middle 50%, 25% trimmed
    from each side; rliable's definition (scipy.stats.trim_mean(x, 0.25) over the flattened scores)."""
    return float(sps.trim_mean(_sample(x), 0.25))


def iqm_ci(scores: Mapping[str, Any] | np.ndarray, level: float = 0.95, n_boot: int = 2_000,
           seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high): the IQM over every run of every task and its stratified percentile bootstrap interval.

    scores: {task: (n_runs,)} (tasks may have different numbers of runs), or an array (R, T) of runs x tasks.
    Each resample draws runs with replacement within each task (stratified, as rliable's StratifiedBootstrap),
    pools them and takes the IQM. Deterministic by ``seed``.
    """
    _check_level(level)
    if isinstance(scores, Mapping):
        cols = [_sample(v, f"scores[{k!r}]") for k, v in scores.items()]
    else:
        arr = np.asarray(scores, dtype=np.float64)
        if arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"iqm_ci: expected a dict of task -> scores or a non-empty 2D array (runs, tasks), "
                             f"got shape {arr.shape}")
        cols = [arr[:, t] for t in range(arr.shape[1])]
    if not cols:
        raise ValueError("iqm_ci: expected at least one task, got none")
    point = iqm(np.concatenate(cols))
    rng = np.random.default_rng(seed)
    boots = []
    for i in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - i)
        resampled = np.concatenate([c[rng.integers(0, c.size, (b, c.size))] for c in cols], axis=1)  # (b, sum n)
        boots.append(sps.trim_mean(resampled, 0.25, axis=1))
    low, high = np.quantile(np.concatenate(boots), [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


@dataclass(frozen=True)
class MainEffect:
    """One level of one factor: its marginal mean of cell means, effect = mean - grand mean, the number of
    cells (combinations of the other factors) it was averaged over, and the runs in those cells."""

    factor: str
    level: Any
    mean: float
    effect: float
    n_cells: int
    n_runs: int


def main_effects(table: pa.Table, factors: Sequence[str], metric: str) -> list[MainEffect]:
    """Main effects of ``factors`` (columns of ``table``, one row per run) on the column ``metric``.

    Definition: a cell is one combination of the factors' levels that occurs in the table; its cell mean is the
    mean of the metric over the cell's runs (seeds; null values skipped). The grand mean is the unweighted mean
    of all cell means. A level's mean is the unweighted mean of the cell means of the cells at that level, i.e.
    averaged over the combinations of the other factors (each combination counts once, however many seeds it
    has); its effect is level mean - grand mean. In a complete balanced design the effects of a factor sum to
    zero. In an incomplete design (e.g. num_units is null for LSTMs) a level averages only the cells that exist:
    compare n_cells across levels before comparing effects. Rows come factor by factor, levels sorted.
    """
    missing = [c for c in [*factors, metric] if c not in table.column_names]
    if missing:
        raise ValueError(f"main_effects: unknown column(s) {missing}; the table has {table.column_names}")
    if not factors:
        raise ValueError("main_effects: expected at least one factor, got none")
    t = table.select([*factors, metric]).filter(table[metric].is_valid())
    if t.num_rows == 0:
        raise ValueError(f"main_effects: no run has a value of {metric!r}")
    cells = t.group_by(list(factors), use_threads=False).aggregate([(metric, "mean"), (metric, "count")])
    means = np.asarray(cells[f"{metric}_mean"].to_numpy(zero_copy_only=False), dtype=np.float64)  # (C,)
    counts = cells[f"{metric}_count"].to_numpy(zero_copy_only=False)
    grand = float(means.mean())
    out = []
    for f in factors:
        levels = cells[f].to_pylist()
        for level in sorted(set(levels), key=lambda v: (v is None, v)):
            at = np.array([lv == level if level is not None else lv is None for lv in levels])
            m = float(means[at].mean())
            out.append(MainEffect(f, level, m, m - grand, int(at.sum()), int(counts[at].sum())))
    return out


def pooled_sd(table: pa.Table, factors: Sequence[str], metric: str) -> tuple[float, int]:
    """(s, df): the pooled standard deviation of ``metric`` within cells (combinations of ``factors``: runs that
    differ only in seed), s² = Σ (n_c - 1) s_c² / Σ (n_c - 1), and its degrees of freedom Σ (n_c - 1). The seed
    noise against which main effects are to be read; (nan, 0) when no cell has two values."""
    t = table.select([*factors, metric]).filter(table[metric].is_valid())
    if t.num_rows == 0:
        return math.nan, 0
    g = t.group_by(list(factors), use_threads=False).aggregate([(metric, "variance", pc.VarianceOptions(ddof=1)),
                                                               (metric, "count")])
    var = np.asarray(g[f"{metric}_variance"].to_numpy(zero_copy_only=False), dtype=np.float64)
    count = np.asarray(g[f"{metric}_count"].to_numpy(zero_copy_only=False), dtype=np.float64)
    ok = (count >= 2) & np.isfinite(var)
    df = int((count[ok] - 1).sum())
    return (math.sqrt(float(((count[ok] - 1) * var[ok]).sum()) / df), df) if df else (math.nan, 0)

"""Every configuration against a baseline: difference of means, permutation p (paired by seed where the two share
seeds), effect size; p and effect sizes shown only where the n supports them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .selection import (
    Stat,
    check_names,
    default_rows,
    groups,
    key_text,
    select_finished,
    sort_key,
    stat_column,
    table_layout,
)
from .stats import MIN_N, paired_permutation_test, permutation_test, too_few

__all__ = ["Comparison", "ComparisonTable", "paired_comparisons"]


@dataclass(frozen=True)
class Comparison:
    """One group against the baseline: diff = group mean - baseline mean (paired: mean of the per-seed
    differences), two-sided permutation p, effect size (d_z paired, Hedges' g unpaired), n (pairs when paired,
    else the group's runs), n_baseline, and a warning when n < 3.

    p and effect are computed whatever n is (for programs); tables show them only where the design supports them
    (``p_supported``, ``effect_supported``)."""

    key: tuple
    diff: float
    p: float
    effect: float
    effect_name: str
    n: int
    n_baseline: int
    paired: bool
    exact: bool
    p_min: float
    warning: str | None

    @property
    def p_supported(self) -> bool:
        """The test can reach p < 0.05 at all (p_min <= 0.05): with 2 paired seeds p is 0.5 or 1 whatever the
        data, and printing it suggests a test happened."""
        return self.p_min <= 0.05

    @property
    def effect_supported(self) -> bool:
        """Both sides have >= MIN_N values: an effect size divides by a standard deviation, which 2 values
        estimate so badly that |d_z| of 100 and more come out of noise."""
        return min(self.n, self.n_baseline) >= MIN_N


def _grouped(items: list[tuple[str, str]], total: int, what: str) -> list[str]:
    """[(message, key text)] -> one line per distinct message, with how many (and which, unless all) it covers."""
    by: dict[str, list[str]] = {}
    for msg, key in items:
        by.setdefault(msg, []).append(key)
    return [f"{msg}: {'all ' + str(total) if len(keys) == total else f'{len(keys)} of {total}'} {what}"
            + ("" if len(keys) == total else f" ({'; '.join(keys)})") for msg, keys in by.items()]


@dataclass
class ComparisonTable:
    """Every non-baseline group of ``rows`` against the baseline group on ``metric`` (column ``column``)."""

    rows: list[str]
    baseline: dict[str, Any]
    baseline_key: tuple
    metric: str
    column: str
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)

    def header(self) -> str:
        k = len(self.comparisons)
        base = ", ".join(f"{k}={v}" for k, v in self.baseline.items())
        return (f"{self.column}: diff = group mean - baseline mean (baseline: {base}); "
                "p: two-sided permutation test, sign-flip over seeds when paired by seed, else over group labels; "
                f"effect: Cohen's d_z (paired) or Hedges' g (unpaired); p not corrected for {k} comparison"
                f"{'s' * (k != 1)}; n/a where the n cannot support a p or an effect size (the cell says why)")

    @property
    def warnings(self) -> list[str]:
        """The comparisons' warnings, each distinct one once, with how many comparisons it concerns."""
        return _grouped([(c.warning, key_text(self.rows, c.key)) for c in self.comparisons if c.warning],
                        len(self.comparisons), "comparisons")

    def lines(self) -> list[str]:
        """Header, notes and warnings, one per line."""
        return [self.header(), *(f"note: {s}" for s in self.notes), *(f"warning: {s}" for s in self.warnings)]

    def to_markdown(self, notes: bool = True) -> str:
        """The header, notes and warnings (each distinct warning once; notes=False leaves them out), then the
        table."""
        out = [self.header(), ""]
        extra = [f"- note: {s}" for s in self.notes] + [f"- warning: {s}" for s in self.warnings]
        if extra and notes:
            out += [*extra, ""]
        out.append("| " + " | ".join([*self.rows, "n", "diff", "p", "effect", "test"]) + " |")
        out.append("|" + "|".join(["---"] * len(self.rows) + ["---:"] * 4 + ["---"]) + "|")
        for c in self.comparisons:
            test = ("paired by seed" if c.paired else "unpaired") + (", exact" if c.exact else ", Monte Carlo")
            vals = ["-" if v is None else str(v) for v in c.key]
            p = f"{c.p:.3g}" if c.p_supported else f"n/a: min p {c.p_min:.2g}"
            eff = (f"{c.effect_name} = {c.effect:.3g}" if c.effect_supported
                   else f"n/a: n={min(c.n, c.n_baseline)}")
            out.append("| " + " | ".join([*vals, str(c.n), f"{c.diff:.4g}", p, eff, test]) + " |")
        return "\n".join(out) + "\n"


def _by_seed(vals: np.ndarray, seeds: list[Any]) -> dict[Any, float]:
    acc: dict[Any, list[float]] = {}
    for v, s in zip(vals, seeds, strict=True):
        if s is not None:
            acc.setdefault(s, []).append(float(v))
    return {s: float(np.mean(v)) for s, v in acc.items()}


def paired_comparisons(runs: pa.Table, baseline: dict[str, Any], metric: str, rows: Sequence[str] | None = None,
                       stat: Stat = "final", include_stopped_early: bool = True, n_resamples: int = 10_000,
                       seed: int = 0) -> ComparisonTable:
    """Each group (as in ablation_table) against the baseline group, the one whose runs match ``baseline``
    (e.g. {"model.kind": "lstm"}).

    Paired by seed when the two groups share at least 2 seeds (on the shared seeds; runs of one seed averaged):
    exact sign-flip test and Cohen's d_z. Otherwise unpaired: permutation test over group labels and Hedges' g.
    Raises ValueError when the baseline matches no group or several (naming them).
    """
    layout = table_layout(runs)
    check_names(layout, [*(rows or []), *baseline], [metric])
    col = stat_column(metric, stat)
    sel, notes = select_finished(runs, include_stopped_early)
    rows = list(rows) if rows is not None else default_rows(sel, layout)
    keys, members = groups(sel, rows)
    match = np.ones(sel.num_rows, dtype=bool)
    for k, v in baseline.items():
        match &= np.array([x == v for x in sel[k].to_pylist()], dtype=bool)
    hits = [i for i, idx in enumerate(members) if match[idx].any()]
    if len(hits) != 1 or not match[members[hits[0]]].all():
        found = "; ".join(key_text(rows, keys[i]) for i in hits) or "none"
        raise ValueError(f"baseline {baseline} must pick exactly one group of rows {rows}; it matches: {found}. "
                         f"Groups: {[key_text(rows, k) for k in keys]}")
    arr = sel[col]
    vals = np.asarray(pc.fill_null(arr.cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False))
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    seeds_col = sel["seed"].to_pylist() if "seed" in sel.column_names else [None] * sel.num_rows
    b_idx = members[hits[0]][valid[members[hits[0]]]]
    if b_idx.size == 0:
        raise ValueError(f"the baseline group has no value of {col!r}")
    b_seed = _by_seed(vals[b_idx], [seeds_col[j] for j in b_idx])
    out = []
    for i, idx in enumerate(members):
        if i == hits[0]:
            continue
        g_idx = idx[valid[idx]]
        if g_idx.size == 0:
            notes.append(f"{key_text(rows, keys[i])}: no value of {col!r}, skipped")
            continue
        g_seed = _by_seed(vals[g_idx], [seeds_col[j] for j in g_idx])
        shared = sorted(set(g_seed) & set(b_seed), key=sort_key)
        if len(shared) >= 2:
            r = paired_permutation_test([g_seed[s] for s in shared], [b_seed[s] for s in shared], n_resamples, seed)
            n = r.n
        else:
            r = permutation_test(vals[g_idx], vals[b_idx], n_resamples, seed)
            n = r.n_a
        out.append(Comparison(keys[i], r.diff, r.p, r.effect, r.effect_name, n, int(b_idx.size), r.paired, r.exact,
                              r.p_min, too_few(min(n, int(b_idx.size)))))
    coarse = sorted({c.p_min for c in out if c.p_min > 0.05})
    if coarse:
        k = sum(c.p_min > 0.05 for c in out)
        notes.append(f"{k} of {len(out)} comparisons cannot reach p < 0.05 whatever the data (smallest attainable p "
                     f"{' to '.join(f'{x:.3g}' for x in (coarse[0], coarse[-1])[: 1 + (len(coarse) > 1)])}), so "
                     "their p is not shown; p < 0.05 needs at least 6 paired seeds, or 4 vs 4 unpaired")
    return ComparisonTable(rows, dict(baseline), keys[hits[0]], metric, col, out, notes)

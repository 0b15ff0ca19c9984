"""Ablation tables from the exported runs table (runs.parquet; layout in schema.py): mean and CI over seeds of
each metric for each configuration (runs that differ only in ``seed``), a best group only where it is supported,
and the per-run values behind the means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .metrics import chance_level
from .rendering import AblationTable, Cell
from .selection import (
    CI,
    Stat,
    check_names,
    default_metrics,
    default_rows,
    groups,
    key_text,
    metric_bounds,
    metric_direction,
    select_finished,
    stat_column,
    table_layout,
)
from .stats import MIN_N, mean_ci, too_few

__all__ = ["ablation_table", "best_supported", "build_ablation", "per_run_table"]


def best_supported(cells: Sequence[Cell], direction: str | None, chance: float | None = None) -> tuple[int | None, str]:
    """(index of the group to mark best, "") where marking one is supported, else (None, why not).

    Supported means: the direction is known (min for ce/bce/loss, max for acc/return); there are at least two
    groups and every one has >= MIN_N values (an interval exists for each); the best mean's interval lies clear
    of every other group's interval (lower bound above their upper bounds, for a maximised metric); and, where
    the metric has a chance level, clear of chance too (a model at chance is not "best" at anything).
    """
    if direction is None:
        return None, "direction unknown"
    if len(cells) < 2:
        return None, "one group"
    if any(c.n < MIN_N for c in cells):
        return None, f"n < {MIN_N} in some group"
    sign = 1.0 if direction == "min" else -1.0  # compare as minimised
    order = sorted(range(len(cells)), key=lambda i: sign * cells[i].mean)
    b = cells[order[0]]
    worst_end = b.high if direction == "min" else b.low  # the best group's interval end towards the others
    for i in order[1:]:
        near = cells[i].low if direction == "min" else cells[i].high
        if sign * worst_end >= sign * near:
            return None, "intervals overlap"
    if chance is not None and sign * worst_end >= sign * chance:
        return None, "not clear of chance"
    return order[0], ""


def _chance(sel: pa.Table, metric: str) -> float | None:
    """The metric's chance level for these runs: the same for all of them (computed from each run's task.name,
    task.blank, task.num_symbols), else None."""
    cols = [c for c in ("task.name", "task.blank", "task.num_symbols") if c in sel.column_names]
    levels = {chance_level(r.get("task.name"), metric, r) for r in sel.select(cols).to_pylist()} if cols else {None}
    return levels.pop() if len(levels) == 1 else None


def build_ablation(sel: pa.Table, rows: list[str], metrics: list[str], stat: Stat, ci: CI, level: float,
                   notes: list[str], n_boot: int, seed: int) -> AblationTable:
    """The AblationTable of already selected runs ``sel`` (select_finished) grouped by ``rows``; ``notes`` are the
    selection's, more are added (pooled rows, repeated seeds, unmarked best, partial metrics)."""
    keys, members = groups(sel, rows)
    columns = {m: stat_column(m, stat) for m in metrics}
    seeds_col = sel["seed"].to_pylist() if "seed" in sel.column_names else [None] * sel.num_rows
    seeds = [[seeds_col[j] for j in idx] for idx in members]
    notes = list(notes)
    pooled = [p for p in table_layout(sel).params if p != "seed" and p not in rows
              and any(len({repr(v) for v in sel[p].take(pa.array(idx)).to_pylist()}) > 1 for idx in members)]
    if pooled:
        notes.append(f"rows pool runs that differ in {', '.join(pooled)}: n counts runs, not seeds")
    for key, s in zip(keys, seeds, strict=True):
        dup = sorted({x for x, c in Counter(s).items() if c > 1 and x is not None})
        if dup and not pooled:
            notes.append(f"{key_text(rows, key)}: several runs with seed {', '.join(map(str, dup))}")
    cells: dict[str, list[Cell]] = {}
    best: dict[str, list[int]] = {}
    chance = {m: _chance(sel, m) for m in metrics}
    directions = {m: metric_direction(m) for m in metrics}
    unmarked: dict[str, list[str]] = {}
    for m, col in columns.items():
        arr = sel[col]
        vals = np.asarray(pc.fill_null(arr.cast(pa.float64()), math.nan).to_numpy(zero_copy_only=False))
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        cells[m] = []
        for idx in members:
            x = vals[idx[valid[idx]]]
            if x.size >= MIN_N:
                cells[m].append(Cell(*mean_ci(x, level, ci, n_boot, seed, metric_bounds(m, x)), int(x.size)))
            elif x.size:  # too few values for an interval: the mean only
                cells[m].append(Cell(float(x.mean()), math.nan, math.nan, int(x.size)))
            else:
                cells[m].append(Cell(math.nan, math.nan, math.nan, 0))
        i_best, why = best_supported(cells[m], directions[m], chance[m])
        best[m] = [] if i_best is None else [i_best]
        if why not in ("", "one group", "direction unknown"):
            unmarked.setdefault(why, []).append(m)
    for why, ms in unmarked.items():
        which = "every column" if len(ms) == len([m for m in metrics if directions[m]]) else ", ".join(ms)
        notes.append(f"no best marked ({why}): {which}")
    n = [int(idx.size) for idx in members]
    partial = [(m, sum(c.n for c in cells[m])) for m in metrics if sum(c.n for c in cells[m]) < sum(n)]
    if partial:
        notes.append("metrics with a value for only some runs (e.g. a condition evaluated afterwards by `rims eval` "
                     "for some runs); their cells give their own n: "
                     + ", ".join(f"{m} ({k} of {sum(n)} runs)" for m, k in partial))
    warnings = []
    small: dict[int, list[str]] = {}
    for i, key in enumerate(keys):
        if too_few(n[i]):
            small.setdefault(n[i], []).append(key_text(rows, key))
    for k in sorted(small):
        which = (f"every group ({len(keys)})" if len(small[k]) == len(keys) else
                 f"{len(small[k])} of {len(keys)} groups ({'; '.join(small[k])})")
        warnings.append(f"{too_few(k)}: {which}")
    return AblationTable(list(rows), keys, list(metrics), columns, cells, best, directions, n, seeds, stat, ci, level,
                         notes, warnings, chance=chance)


def ablation_table(runs: pa.Table, rows: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                   stat: Stat = "final", ci: CI = "t", level: float = 0.95, include_stopped_early: bool = True,
                   n_boot: int = 10_000, seed: int = 0) -> AblationTable:
    """Mean and CI over seeds of each metric for each configuration of the finished child runs in ``runs``.

    runs: the runs table (schema.py). rows: the columns that define a row (default: the model.* then task.*
    params that vary among the runs, then any other varying param except seed, so that a row is a configuration
    and its runs differ only in seed; with explicit rows that leave a varying param out, rows pool
    configurations, and a note says so). metrics: metric names (default: every eval/* metric, then the task's
    objective val metric). stat: which column of each metric K: final -> K, min -> K.min, max -> K.max,
    best -> K.min for ce/bce/loss-like names and K.max for acc-like ones. ci: "t", "bootstrap" (n_boot
    resamples, seed) or "log" (geometric mean and the t interval of the log values; positive metrics only) at
    ``level`` (stats.mean_ci).

    Raises ValueError for an unknown row key or metric (listing what exists) and when no finished child run is
    left.
    """
    if ci not in get_args(CI):
        raise ValueError(f"ci: expected one of {get_args(CI)}, got {ci!r}")
    layout = table_layout(runs)
    check_names(layout, rows, metrics)
    for m in metrics or []:
        stat_column(m, stat)  # an unknown stat or an undirected metric with stat="best" fails before any work
    sel, notes = select_finished(runs, include_stopped_early)
    rows = list(rows) if rows is not None else default_rows(sel, layout)
    metrics = list(metrics) if metrics is not None else default_metrics(sel, layout)
    if stat == "best":
        metrics = [m for m in metrics if metric_direction(m) is not None] or metrics
    return build_ablation(sel, rows, metrics, stat, ci, level, notes, n_boot, seed)


def per_run_table(runs: pa.Table, rows: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                  stat: Stat = "final", include_stopped_early: bool = True) -> pa.Table:
    """One row per finished child run (the per-seed values behind an ablation table, so it can be recomputed):
    run_id, the row keys, seed, then each metric's ``stat`` value, with the same defaults as ablation_table."""
    agg = ablation_table(runs, rows, metrics, stat=stat, include_stopped_early=include_stopped_early)
    sel, _ = select_finished(runs, include_stopped_early)
    keys = [r for r in agg.rows if r != "seed"] + (["seed"] if "seed" in sel.column_names else [])
    cols = {"run_id": sel["run_id"], **{k: sel[k] for k in keys},
            **{m: sel[stat_column(m, stat) if stat != "best" else m] for m in agg.metrics}}
    if stat == "best":
        cols.update({m: sel[stat_column(m, "min" if metric_direction(m) == "min" else "max")] for m in agg.metrics})
    order = sorted(range(sel.num_rows), key=lambda i: tuple(str(cols[k][i].as_py()) for k in keys))
    return pa.table(cols).take(pa.array(order, pa.int64()))

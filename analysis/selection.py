"""Which runs and columns a table is built from: finished child runs of a runs table (runs.parquet, schema.py),
its metric/param/tag columns, the default rows and metrics, and the groups of runs (configurations).

Only child runs (``parent_run_id`` not null: trials, not sweep parents) whose status is FINISHED count; the others
are excluded and counted in a note. Runs stopped early by a scheduler are FINISHED and included by default (their
last report stands), flagged in a note.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sweeps.keys import TAG_STOPPED_EARLY, TASK_KEYS

from .schema import BASE_COLUMNS, STAT_SUFFIXES

__all__ = [
    "CI",
    "CORE_KEYS",
    "Layout",
    "Stat",
    "check_names",
    "default_metrics",
    "default_rows",
    "groups",
    "key_text",
    "metric_bounds",
    "metric_direction",
    "select_finished",
    "sort_key",
    "stat_column",
    "table_layout",
]

Stat = Literal["final", "best", "min", "max"]
CI = Literal["t", "bootstrap", "log"]
CORE_KEYS = ("model.kind", "model.num_units", "model.top_k", "model.hidden_size")  # the paper's k_T, k_A, h
_MIN_TOKENS = {"ce", "bce", "loss", "nll", "mse"}
_MAX_TOKENS = {"acc", "accuracy", "return", "success"}
_UNIT_TOKENS = {"acc", "accuracy", "success"}  # fractions in [0, 1]


def metric_bounds(metric: str, values: Any = None) -> tuple[float, float] | None:
    """(0.0, 1.0) for accuracies and success rates (the name's tokens, split at / _ ., hold acc, accuracy or
    success: ``eval/acc_res24``, ``eval/success_rate_novel4``), whose intervals are clipped to that range; None
    for every other metric, and where ``values`` (any array) leave [0, 1] (e.g. an accuracy logged in percent)."""
    tokens = set(re.split(r"[/_.]", metric.lower()))
    if not tokens & _UNIT_TOKENS:
        return None
    v = np.asarray(values if values is not None else [], dtype=np.float64)
    return (0.0, 1.0) if ((v >= 0.0) & (v <= 1.0)).all() else None


def metric_direction(metric: str) -> Literal["min", "max"] | None:
    """"min" for ce/bce/loss-like metrics, "max" for acc-like ones, None when the name says neither.
    Judged on the name's tokens (split at / _ .): ``eval/ce_all_blank200`` -> min, ``eval/acc_res24`` -> max."""
    tokens = set(re.split(r"[/_.]", metric.lower()))
    if tokens & _MAX_TOKENS:
        return "max"
    if tokens & _MIN_TOKENS:
        return "min"
    return None


@dataclass(frozen=True)
class Layout:
    """The columns of a runs table by role."""

    metrics: list[str]  # metric names K (each has columns K, K.min, K.max)
    params: list[str]  # param columns (model.*, task.*, optim.*, seed, ...)
    tags: list[str]  # rims.* / mlflow.* tag columns


def table_layout(t: pa.Table) -> Layout:
    """Split a runs table's columns into metrics (K with K.min and K.max), params and tags."""
    cols = t.column_names
    have = set(cols)
    metrics = sorted(c for c in cols if f"{c}.min" in have and f"{c}.max" in have)
    stat_cols = {m + s for m in metrics for s in STAT_SUFFIXES}
    tags = [c for c in cols if c.startswith(("rims.", "mlflow.")) and c not in stat_cols]
    params = [c for c in cols if c not in BASE_COLUMNS and c not in stat_cols and c not in tags]
    return Layout(metrics, params, tags)


def stat_column(metric: str, stat: Stat) -> str:
    """The column of ``metric`` that holds ``stat`` (final -> K, min -> K.min, max -> K.max, best -> by direction)."""
    if stat == "final":
        return metric
    if stat in ("min", "max"):
        return f"{metric}.{stat}"
    if stat == "best":
        d = metric_direction(metric)
        if d is None:
            raise ValueError(f"stat='best' needs to know whether {metric!r} is minimised or maximised and its "
                             f"name does not say (none of {sorted(_MIN_TOKENS | _MAX_TOKENS)}); pass stat='min' or "
                             "stat='max'")
        return f"{metric}.{d}"
    raise ValueError(f"stat: expected one of 'final', 'best', 'min', 'max', got {stat!r}")


def check_names(layout: Layout, rows: Sequence[str] | None, metrics: Sequence[str] | None) -> None:
    """ValueError for a row key or metric the table lacks, listing what it has."""
    for r in rows or []:
        if r not in layout.params and r not in layout.tags:
            raise ValueError(f"unknown row key {r!r}; param columns in the table: {layout.params}"
                             + (f"; tags: {layout.tags}" if layout.tags else ""))
    for m in metrics or []:
        if m not in layout.metrics:
            base = next((m[: -len(s)] for s in STAT_SUFFIXES[1:] if m.endswith(s) and m[: -len(s)] in layout.metrics),
                        None)
            hint = f" (for {m!r} pass the metric {base!r} and stat={m.rsplit('.', 1)[1]!r})" if base else ""
            raise ValueError(f"unknown metric {m!r}{hint}; metrics in the table: {layout.metrics}")


def select_finished(runs: pa.Table, include_stopped_early: bool) -> tuple[pa.Table, list[str]]:
    """Finished child runs, and notes on what was left out."""
    for c in ("parent_run_id", "status"):
        if c not in runs.column_names:
            raise ValueError(f"expected a runs table (runs.parquet) with column {c!r}; got columns {runs.column_names}")
    child = runs.filter(runs["parent_run_id"].is_valid())
    status = child["status"].to_pylist()
    notes = []
    other = Counter(s for s in status if s != "FINISHED")
    if other:
        k = sum(other.values())
        notes.append(f"excluded {k} child run{'s' * (k != 1)} not FINISHED ("
                     + ", ".join(f"{s}: {c}" for s, c in sorted(other.items(), key=lambda sc: str(sc[0]))) + ")")
    sel = child.filter(pc.equal(child["status"], "FINISHED"))
    if TAG_STOPPED_EARLY in sel.column_names:
        early = pc.fill_null(pc.equal(pc.utf8_lower(pc.cast(sel[TAG_STOPPED_EARLY], pa.string())), "true"), False)
        k = pc.sum(early.cast(pa.int64())).as_py() or 0
        if k and include_stopped_early:
            notes.append(f"{k} run{'s' * (k != 1)} stopped early (scheduler, stopping rule or time budget): "
                         f"{'their' if k > 1 else 'its'} last report stands")
        elif k:
            notes.append(f"excluded {k} run{'s' * (k != 1)} stopped early (scheduler, stopping rule or time budget)")
            sel = sel.filter(pc.invert(early))
    if sel.num_rows == 0:
        raise ValueError(f"no finished child runs to tabulate: the table has {runs.num_rows} runs, "
                         f"{runs.num_rows - child.num_rows} sweep parents, child statuses {dict(Counter(status))}"
                         + ("" if include_stopped_early else " (stopped-early runs excluded)"))
    return sel, notes


def _varying(t: pa.Table, cols: Sequence[str]) -> list[str]:
    """Columns whose values differ. Outside the core keys a column needs two distinct non-null values: a key
    that is null only where it does not apply (RIM-only keys of baseline runs) and constant elsewhere is
    explained by model.kind, and listing it would bury the table in constant columns."""
    def distinct(c: str) -> int:
        return len({repr(v) for v in t[c].to_pylist() if c in CORE_KEYS or v is not None})

    return [c for c in cols if distinct(c) > 1]


def default_rows(t: pa.Table, layout: Layout) -> list[str]:
    """model.* then task.* params that vary, then any other varying param but seed (so that groups stay
    configurations: runs that differ only in seed)."""
    free = [p for p in layout.params if p != "seed"]
    model = [p for p in free if p.startswith("model.")]
    task = [p for p in free if p.startswith("task.")]
    rest = [p for p in free if p not in model and p not in task]
    return _varying(t, model) + _varying(t, task) + _varying(t, rest)


def default_metrics(t: pa.Table, layout: Layout) -> list[str]:
    """Every eval/* metric, then each task's objective (sweeps.keys.TASK_KEYS) the table has."""
    out = [m for m in layout.metrics if m.startswith("eval/")]
    if "task.name" in t.column_names:
        for name in sorted({n for n in t["task.name"].to_pylist() if n is not None}):
            obj = TASK_KEYS[name].objective[0] if name in TASK_KEYS else None
            if obj in layout.metrics and obj not in out:
                out.append(obj)
    if not out:
        raise ValueError(f"no default metrics: the table has no eval/* metric and no task objective; pass metrics= "
                         f"from {layout.metrics}")
    return out


def sort_key(v: Any) -> tuple:
    """Sorts values of mixed types, nulls last."""
    return (v is None, str(type(v)), v if v is not None else 0)


def groups(t: pa.Table, rows: Sequence[str]) -> tuple[list[tuple], list[np.ndarray]]:
    """(group keys, row indices of each group's runs) grouping by the ``rows`` columns, keys sorted (nulls last)."""
    if not rows:
        return [()], [np.arange(t.num_rows)]
    g = (t.select(list(rows)).append_column("__row", pa.array(np.arange(t.num_rows)))
         .group_by(list(rows), use_threads=False).aggregate([("__row", "list")]))
    keys = list(zip(*(g[r].to_pylist() for r in rows), strict=True))
    members = [np.asarray(m, dtype=np.int64) for m in g["__row_list"].to_pylist()]
    order = sorted(range(len(keys)), key=lambda i: tuple(sort_key(v) for v in keys[i]))
    return [keys[i] for i in order], [members[i] for i in order]


def key_text(rows: Sequence[str], key: tuple) -> str:
    """("model.kind",), ("rims",) -> "model.kind=rims"; "all runs" without rows."""
    return ", ".join(f"{r}={v}" for r, v in zip(rows, key, strict=True)) or "all runs"



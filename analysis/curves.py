"""Curves from the exported tables (schema.py): a metric's history over training (:func:`learning_curves`) and
``eval/<metric>_<condition>`` against the condition's number (:func:`ood_curves`), mean over seeds with a 95%
t-interval where a group has >= 3 runs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .canvas import (
    CI_LEVEL,
    PlotFiles,
    check_columns,
    clean,
    column_mean_ci,
    group_label,
    group_sort_key,
    new_figure,
    run_groups,
    save,
    slug,
)
from .metrics import CONDITION
from .selection import metric_bounds
from .stats import MIN_N

__all__ = ["MAX_POINTS", "downsample_minmax", "eval_conditions", "learning_curves", "ood_curves", "parse_condition"]

MAX_POINTS = 500  # points drawn per run of a learning curve, at most


def _minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    n_buckets = (max_points - 2) // 2
    edges = np.linspace(1, n - 1, n_buckets + 1).astype(np.int64)  # buckets between the first and last point
    keep = [0, n - 1]
    for a, b in itertools.pairwise(edges):
        if b > a:
            seg = values[a:b]
            keep += [a + int(np.argmin(seg)), a + int(np.argmax(seg))]
    return np.unique(np.asarray(keep, dtype=np.int64))


def downsample_minmax(steps: np.ndarray, values: np.ndarray,
                      max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most max_points of a history (sorted by step): the first and last point and, in each of
    (max_points - 2) // 2 equal-count buckets between them, the bucket's minimum and maximum, so spikes
    survive. Histories no longer than max_points come back whole."""
    if max_points < 4:
        raise ValueError(f"downsample_minmax: Expected max_points >= 4, got {max_points}")
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"downsample_minmax: steps and values must be 1-D of one length, got {steps.shape} "
                         f"and {values.shape}")
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    idx = _minmax_indices(values, max_points)
    return steps[idx], values[idx]


def _histories(metrics: pa.Table, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_id -> (steps, values) of metric key, sorted by step; one value per step (the latest logged);
    non-finite values dropped."""
    for col in ("run_id", "key", "step", "value"):
        if col not in metrics.column_names:
            raise ValueError(f"learning_curves: the metrics table lacks column {col!r}; it has {metrics.column_names}")
    keys = pc.unique(metrics["key"]).to_pylist()
    if key not in keys:
        raise ValueError(f"learning_curves: unknown metric {key!r}; the metrics table has: "
                         f"{sorted(k for k in keys if k is not None)}")
    t = metrics.filter(pc.equal(metrics["key"], key))
    run = np.asarray(t["run_id"].to_pylist(), dtype=object)
    step = t["step"].to_numpy(zero_copy_only=False).astype(np.int64)
    value = t["value"].to_numpy(zero_copy_only=False).astype(np.float64)
    if "timestamp" in t.column_names:
        ts = pc.fill_null(t["timestamp"].cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    else:
        ts = np.arange(len(step))
    run_ids, run_code = np.unique(run.astype(str), return_inverse=True)
    order = np.lexsort((ts, step, run_code))
    run_code, step, value = run_code[order], step[order], value[order]
    last = np.ones(len(step), dtype=bool)  # the latest timestamp of each (run, step)
    last[:-1] = (run_code[1:] != run_code[:-1]) | (step[1:] != step[:-1])
    run_code, step, value = run_code[last], step[last], value[last]
    out = {}
    for i, rid in enumerate(run_ids):
        sel = (run_code == i) & np.isfinite(value)
        if sel.any():
            out[str(rid)] = (step[sel], value[sel])
    return out


def _band(metric: str, mat: np.ndarray, mean: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interval mean ± half (C,), clipped to [0, 1] where ``metric`` is an accuracy or success rate whose values
    ``mat`` all lie in it (selection.metric_bounds): a band of a few seeds near 1 would otherwise run above 1."""
    low, high = mean - half, mean + half
    bounds = metric_bounds(metric, mat[np.isfinite(mat)])
    return (np.clip(low, *bounds), np.clip(high, *bounds)) if bounds else (low, high)


def learning_curves(metrics: pa.Table, runs: pa.Table, key: str, group_by: list[str], out_dir: str | Path,
                    *, name: str | None = None, max_points: int = MAX_POINTS) -> PlotFiles:
    """The history of metric ``key`` (e.g. "val/ce"), one line per group of runs equal on ``group_by``
    (differing in seed): the mean over the group's runs at each step, with a 95% t-interval band over them
    (none for a group of fewer than 3 runs; clipped to [0, 1] for accuracies). Each run's history is cut to at
    most max_points by :func:`downsample_minmax`; the group is drawn at the union of the steps its runs keep.

    Writes ``<out_dir>/<name>.png/.svg``, name default ``learning_curves_<key>``. ``data["groups"]``: label ->
    {"steps", "mean", "half_width", "low", "high", "n", "run_ids"}.
    """
    check_columns(runs, ["run_id", *group_by], "learning_curves")
    hist = _histories(metrics, key)
    groups: dict[tuple, list[str]] = {}
    for rid, g in run_groups(runs, group_by).items():
        if rid in hist:
            groups.setdefault(g, []).append(rid)
    if not groups:
        raise ValueError(f"learning_curves: no run of the runs table has a history of {key!r}")
    fig = new_figure(12.0, 4.5)
    ax = fig.add_subplot()
    data: dict[str, Any] = {"groups": {}}
    for g in sorted(groups, key=group_sort_key):
        rids = sorted(groups[g])
        all_steps = np.unique(np.concatenate([hist[r][0] for r in rids]))
        kept = np.unique(np.concatenate([hist[r][0][_minmax_indices(hist[r][1], max_points)] for r in rids]))
        mat = np.full((len(rids), len(all_steps)), np.nan)
        for i, r in enumerate(rids):
            s, v = hist[r]
            mat[i, np.searchsorted(all_steps, s)] = v
        mat = mat[:, np.searchsorted(all_steps, kept)]
        mean, half, n = column_mean_ci(mat)
        low, high = _band(key, mat, mean, half)
        label = group_label(group_by, g)
        (line,) = ax.plot(kept, mean, label=f"{label} (n={len(rids)})", linewidth=1.2)
        if len(rids) >= MIN_N:
            ax.fill_between(kept, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        data["groups"][label] = {"steps": kept, "mean": mean, "half_width": half, "low": low, "high": high, "n": n,
                                 "run_ids": rids}
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key}: mean over seeds, {CI_LEVEL:.0%} CI band where n >= {MIN_N}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: labels are long
    ax.grid(alpha=0.3)
    return save(fig, out_dir, name or f"learning_curves_{slug(key)}", data)


def parse_condition(condition: str) -> tuple[str, int | float]:
    """"blank200" -> ("blank", 200), "res24" -> ("res", 24), "balls6" -> ("balls", 6); ValueError when the
    condition does not end in a number (or holds an underscore)."""
    m = CONDITION.match(condition)
    if m is None:
        raise ValueError(f"parse_condition: expected letters then a number (e.g. blank200), got {condition!r}")
    num = m.group(2)
    return m.group(1), (float(num) if "." in num else int(num))


def _eval_metric_names(columns: Sequence[str]) -> list[str]:
    names = set()
    for c in columns:
        if c.startswith("eval/") and not c.endswith((".min", ".max")):
            metric, sep, cond = c[len("eval/"):].rpartition("_")
            if sep and CONDITION.match(cond):
                names.add(metric)
    return sorted(names)


def eval_conditions(columns: Sequence[str], metric: str) -> dict[str, tuple[str, int | float]]:
    """The columns ``eval/<metric>_<condition>`` whose condition ends in a number -> (prefix, number).
    ``eval/ce_all_blank200`` is ce_all's, not ce's: conditions hold no underscore."""
    out = {}
    head = f"eval/{metric}_"
    for c in columns:
        if c.startswith(head) and CONDITION.match(c[len(head):]):
            out[c] = parse_condition(c[len(head):])
    return out


def ood_curves(runs: pa.Table, metric: str, group_by: list[str], out_dir: str | Path, *,
               name: str | None = None, condition: str | None = None) -> PlotFiles:
    """``eval/<metric>_<condition>`` against the number that ends the condition (blank200 -> 200), one line
    per group of runs equal on ``group_by``: the mean over the group's runs with 95% t-interval error bars
    (none where fewer than 3 runs have the value; clipped to [0, 1] for accuracies). ``condition`` keeps one
    condition prefix (e.g. "balls", leaving out curtain3); otherwise every prefix is drawn, as its own line per
    group when there are several.

    Writes ``<out_dir>/<name>.png/.svg``, name default ``ood_<metric>``. ``data["lines"]``: label ->
    {"x", "mean", "half_width", "low", "high", "n", "columns"}. ValueError listing the eval metrics when none matches.
    """
    check_columns(runs, ["run_id", *group_by], "ood_curves")
    cols = eval_conditions(runs.column_names, metric)
    if condition is not None:
        cols = {c: pn for c, pn in cols.items() if pn[0] == condition}
    if not cols:
        cond = f" with condition {condition!r}" if condition is not None else ""
        raise ValueError(f"ood_curves: no column eval/{metric}_<condition><number>{cond}; available eval metrics: "
                         f"{_eval_metric_names(runs.column_names)}")
    prefixes = sorted({p for p, _ in cols.values()})
    rows = runs.select(["run_id", *group_by, *cols]).to_pylist()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if any(clean(r[c]) is not None for c in cols):
            groups.setdefault(tuple(clean(r[c]) for c in group_by), []).append(r)
    if not groups:
        raise ValueError(f"ood_curves: no run has a value in {sorted(cols)}")
    fig = new_figure(12.0, 4.5)
    ax = fig.add_subplot()
    data: dict[str, Any] = {"lines": {}}
    xs_all: set = set()
    for g in sorted(groups, key=group_sort_key):
        members = groups[g]
        for prefix in prefixes:
            pcols = sorted((c for c, (p, _) in cols.items() if p == prefix), key=lambda c: cols[c][1])
            x = np.asarray([cols[c][1] for c in pcols], dtype=np.float64)
            mat = np.asarray([[np.nan if clean(r[c]) is None else float(r[c]) for c in pcols] for r in members])
            mean, half, n = column_mean_ci(mat)
            low, high = _band(f"eval/{metric}", mat, mean, half)
            has = n > 0
            if not has.any():
                continue
            label = group_label(group_by, g) + (f" ({prefix})" if len(prefixes) > 1 else "")
            (line,) = ax.plot(x[has], mean[has], marker="o", label=label)
            err = has & (n >= MIN_N)
            if err.any():
                ax.errorbar(x[err], mean[err], yerr=[mean[err] - low[err], high[err] - mean[err]], fmt="none",
                            ecolor=line.get_color(), capsize=3)
            xs_all.update(x[has].tolist())
            data["lines"][label] = {"x": x[has], "mean": mean[has], "half_width": half[has], "low": low[has],
                                    "high": high[has], "n": n[has],
                                    "columns": [c for c, h in zip(pcols, has, strict=True) if h]}
    ax.set_xticks(sorted(xs_all))
    ax.set_xlabel(" / ".join(prefixes) or "condition")
    ax.set_ylabel(f"eval/{metric}")
    ax.set_title(f"eval/{metric} by condition: mean over seeds, {CI_LEVEL:.0%} CI where n >= {MIN_N}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: labels are long
    ax.grid(alpha=0.3)
    return save(fig, out_dir, name or f"ood_{slug(metric)}", data)

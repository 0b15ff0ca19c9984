"""RL tasks with evaluation conditions (fetch: ``eval/success_rate_novelcolors2``): per condition and model
family, the mean over seeds with its 95% t interval, the IQM with its stratified bootstrap interval, and the
probability that a run of one family beats a run of the other (rliable's aggregate metrics, Agarwal et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .document import Block
from .metrics import split_metric
from .selection import metric_bounds
from .stats import MIN_N, iqm_ci, mean_ci

__all__ = ["ConditionRow", "PoiRow", "condition_blocks", "condition_rows", "condition_scores", "poi_rows"]


@dataclass(frozen=True)
class ConditionRow:
    """One condition x one group: n runs, mean [low, high] (t), IQM [low, high] (stratified bootstrap)."""

    condition: str
    group: str
    n: int
    mean: float
    low: float
    high: float
    iqm: float
    iqm_low: float
    iqm_high: float


@dataclass(frozen=True)
class PoiRow:
    """P(a run of ``better`` > a run of ``than``) on ``conditions`` (one, or several averaged), with its interval."""

    conditions: tuple[str, ...]
    better: str
    than: str
    poi: float
    low: float
    high: float


def condition_scores(children: pa.Table, base: str, by: str = "model.kind") -> dict[str, dict[str, np.ndarray]]:
    """{condition: {group: final eval/<base>_<condition> of each FINISHED run}} from a runs table (one row per
    trial run, metric columns holding final values). Conditions in column order."""
    done = children.filter(pc.equal(children["status"], "FINISHED")) if "status" in children.column_names \
        else children
    out: dict[str, dict[str, np.ndarray]] = {}
    for col in done.column_names:
        prefix, b, cond = split_metric(col)
        if prefix != "eval" or b != base or cond is None:
            continue
        groups: dict[str, list[float]] = {}
        for g, v in zip(done[by].to_pylist(), done[col].to_pylist(), strict=True):
            if v is not None:
                groups.setdefault(str(g), []).append(float(v))
        out[cond] = {g: np.asarray(v) for g, v in groups.items()}
    return out


def condition_rows(scores: dict[str, dict[str, np.ndarray]],
                   bounds: tuple[float, float] | None = None) -> list[ConditionRow]:
    """A ConditionRow per condition and group (intervals nan below MIN_N runs); ``bounds``: the metric's range
    (selection.metric_bounds), which the t interval of the mean is clipped to."""
    rows = []
    for cond, groups in scores.items():
        for g, v in sorted(groups.items()):
            m, lo, hi = mean_ci(v, method="t", bounds=bounds) if v.size >= MIN_N else (float(v.mean()), np.nan, np.nan)
            q, qlo, qhi = iqm_ci({"runs": v}) if v.size >= MIN_N else (float(np.mean(v)), np.nan, np.nan)
            rows.append(ConditionRow(cond, g, int(v.size), m, lo, hi, q, qlo, qhi))
    return rows


def poi_rows(scores: dict[str, dict[str, np.ndarray]], better: str, than: str,
             pooled: Sequence[str] = ()) -> list[PoiRow]:
    """P(better > than) per condition, then over the ``pooled`` conditions together (rliable's average over
    tasks, with stratified resampling), where both groups have >= MIN_N runs."""
    from .improvement import poi_ci

    out = []
    usable = {c: g for c, g in scores.items() if better in g and than in g and min(g[better].size, g[than].size)
              >= MIN_N}
    for cond, g in usable.items():
        out.append(PoiRow((cond,), better, than, *poi_ci(g[better], g[than])))
    pool = [c for c in pooled if c in usable]
    if len(pool) > 1:
        n = min(min(usable[c][better].size, usable[c][than].size) for c in pool)  # equal runs per task
        x = np.stack([usable[c][better][:n] for c in pool], axis=1)
        y = np.stack([usable[c][than][:n] for c in pool], axis=1)
        out.append(PoiRow(tuple(pool), better, than, *poi_ci(x, y)))
    return out


def _ci(lo: float, hi: float) -> str:
    return "n/a" if np.isnan(lo) else f"[{lo:.2f}, {hi:.2f}]"


def condition_blocks(children: pa.Table, objective: str, train_condition: str | None = None,
                     by: str = "model.kind", baseline: str = "lstm") -> list[Block]:
    """The report's section: a table per condition and group, and P(group > baseline) per condition and over
    the test conditions (every condition but ``train_condition``). Empty when no eval/ conditions exist."""
    if by not in children.column_names:
        return []
    base = split_metric(objective)[1]
    scores = condition_scores(children, base, by)
    if not scores:
        return []
    bounds = metric_bounds(base, np.concatenate([v for groups in scores.values() for v in groups.values()]))
    within = " (clipped to [0, 1], the range of the values)" if bounds else ""
    lines = [f"Final eval/{base}_<condition> per condition: mean over seeds with its 95% t interval{within}, and "
             f"the IQM (mean of the middle 50% of runs) with a 95% stratified bootstrap interval; intervals need >= "
             f"{MIN_N} runs.", "",
             f"| condition | {by} | runs | mean | 95% CI | IQM | IQM 95% CI |", "|---|---|---:|---:|---|---:|---|"]
    for r in condition_rows(scores, bounds):
        lines.append(f"| {r.condition} | {r.group} | {r.n} | {r.mean:.3f} | {_ci(r.low, r.high)} | {r.iqm:.3f} | "
                     f"{_ci(r.iqm_low, r.iqm_high)} |")
    blocks = [Block("h2", f"By condition: {base}"), Block("md_table", "\n".join(lines))]
    groups = sorted({g for gs in scores.values() for g in gs} - {baseline})
    tests = [c for c in scores if c != train_condition]
    poi = [p for g in groups for p in poi_rows(scores, g, baseline, tests)]
    if poi:
        lines = [f"Probability of improvement: P(a run of the row's {by} scores higher than a run of {baseline}), "
                 "ties counting one half, with a 95% stratified bootstrap interval; 0.5 = no difference. The last "
                 "row of each family pools the test conditions (rliable's average over tasks).", "",
                 f"| {by} | condition(s) | P(> {baseline}) | 95% CI |", "|---|---|---:|---|"]
        for p in poi:
            lines.append(f"| {p.better} | {', '.join(p.conditions)} | {p.poi:.2f} | {_ci(p.low, p.high)} |")
        blocks += [Block("h2", f"Probability of improvement over {baseline}: {base}"),
                   Block("md_table", "\n".join(lines))]
    return blocks

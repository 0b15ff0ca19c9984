"""The report's text sections: how to read the numbers, what each metric measures, the warnings and notes of every
table gathered once, the main effects of the RIM factors with their seed noise, and (RL) the interquartile mean."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sweeps.keys import SMNIST_SOURCES

from .document import Block
from .metrics import chance_level, split_metric, task_metrics
from .selection import metric_direction
from .stats import MIN_N, iqm_ci, main_effects, pooled_sd

__all__ = ["Caveats", "how_to_read", "iqm_blocks", "main_effect_blocks", "metrics_blocks", "rim_runs"]


class Caveats:
    """Warnings and notes of every table, each distinct one kept once with the tables it came from."""

    def __init__(self) -> None:
        self.where: dict[str, list[str]] = {}

    def add(self, table: Any, where: str) -> None:
        """Gather a table's warnings and notes; ``where`` names the table."""
        for s in [*(f"warning: {w}" for w in table.warnings), *(f"note: {n}" for n in table.notes)]:
            self.where.setdefault(s, []).append(where)

    def blocks(self) -> list[Block]:
        """The "Warnings and notes" section, warnings first; nothing when there are none."""
        if not self.where:
            return []
        order = sorted(self.where, key=lambda s: (not s.startswith("warning"), list(self.where).index(s)))
        lines = []
        for s in order:
            w = self.where[s]
            lines.append(f"- {s} ({'in ' + w[0] if len(w) == 1 else f'{len(w)} tables: ' + ', '.join(w)})")
        return [Block("h2", "Warnings and notes"),
                Block("p", "Each once, with the tables it concerns (the tables below do not repeat them).\n\n"
                      + "\n".join(lines))]


def how_to_read(level: float = 0.95) -> Block:
    """What intervals, bold, p values and effect sizes mean in this report, and when they are left out."""
    return Block("p", "\n".join([
        "How to read the numbers:",
        f"- mean ± half-width of a {level:.0%} t-interval over seeds; a cell with fewer than {MIN_N} values gives "
        "its mean and n only ('no CI'): an interval from 2 seeds is ±12.7 standard deviations wide (t) or far "
        "too narrow (bootstrap), and says nothing either way;",
        f"- **bold** marks the best group of a column only where that is supported: every group has >= {MIN_N} "
        f"values, and the best group's {level:.0%} interval lies clear of every other group's and of the "
        "metric's chance level (a model at chance is not best at anything); otherwise nothing is bold, and a "
        "note says why;",
        "- p values (permutation tests) are shown only where the test can reach p < 0.05 (paired: 6 seeds or "
        f"more; unpaired: 4 vs 4), effect sizes only with >= {MIN_N} values on each side; otherwise the cell "
        "says n/a and why;",
        "- a metric evaluated for only some runs (e.g. a condition added later with `rims eval`) gives each cell "
        "its own n."]))


def metrics_blocks(task: str | None, children: pa.Table, objective: str) -> list[Block]:
    """What each metric of this sweep measures, its chance level and direction (analysis.metrics)."""
    docs = task_metrics(task)
    seen = sorted({split_metric(c)[1] for c in children.column_names
                   if c.startswith(("val/", "eval/")) and not c.endswith((".min", ".max"))})
    rows = [docs[b] for b in seen if b in docs]
    if not rows:
        return []
    conds = sorted({split_metric(c)[2] for c in children.column_names if c.startswith("eval/")
                    and not c.endswith((".min", ".max")) and split_metric(c)[2]}, key=lambda c: (len(c), c))
    lines = ["| metric | what it measures | chance level | better |", "|---|---|---|---|"]
    lines += [f"| {m.base} | {m.doc} | {m.chance_doc} | {m.better} |" for m in rows]
    text = (f"`val/<metric>`: held-out data at the training setting; `eval/<metric>_<condition>`: fixed evaluation "
            f"data at each condition ({', '.join(conds) or 'none'}); `train/<metric>`: the training batches. The "
            f"search objective is {objective}.")
    if task == "smnist" and "task.source" in children.column_names:  # what data the runs used: a stand-in says so
        used = sorted({str(v) for v in children["task.source"].to_pylist() if v is not None})
        text = "".join(f"Data (task.source={v}): {SMNIST_SOURCES.get(v, v)}. " for v in used) + text
    if task == "copying":
        text += (" Conditions blank<N>: sequences with a blank span of N (length N + 2 x task.num_symbols); the "
                 "training span is task.blank, the others test generalisation to longer sequences.")
    return [Block("h2", "Metrics and chance levels"), Block("p", text), Block("md_table", "\n".join(lines))]


def rim_runs(children: pa.Table) -> pa.Table:
    """The finished RIM trial runs."""
    return children.filter(pc.and_(pc.equal(children["model.kind"], "rims"), pc.equal(children["status"], "FINISHED")))


def main_effect_blocks(children: pa.Table, rows: list[str], objective: str,
                  task: str | None) -> tuple[list[Block], list[str]]:
    """Main effect of each RIM factor on the objective, among finished RIM runs (baselines have no k_T, k_A), with
    the seed noise to read them against. Returns the blocks and the factors."""
    if "model.kind" not in children.column_names or objective not in children.column_names:
        return [], []
    rims = rim_runs(children)
    factors = [r for r in rows if r not in ("model.kind", "seed") and r in rims.column_names
               and len(set(rims[r].to_pylist())) > 1]
    if rims.num_rows == 0 or not factors:
        return [], factors
    effects = main_effects(rims, factors, objective)
    lines = [f"Main effects on {objective} among RIM runs: level mean (an unweighted mean of cell means over the "
             "other factors' combinations) and its difference from the grand mean.", "",
             "| factor | level | mean | effect | cells | runs |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {e.factor} | {e.level} | {e.mean:.3f} | {e.effect:+.3f} | {e.n_cells} | {e.n_runs} |"
              for e in effects]
    sd, df = pooled_sd(rims, factors, objective)
    scale = []
    if df:
        per_level = min(e.n_runs for e in effects)
        scale.append(f"Seed noise, for scale: the standard deviation of {objective} between seeds of one "
                     f"configuration is {sd:.3f} (pooled, {df} degrees of freedom), so a level mean over "
                     f"{per_level} runs carries a standard error of about {sd / math.sqrt(per_level):.3f}; effects "
                     "of that size are noise.")
    chance = chance_level(task, objective)
    if chance is not None:
        d = 1 if metric_direction(objective) == "min" else -1
        cells = rims.group_by(factors, use_threads=False).aggregate([(objective, "mean")])[f"{objective}_mean"]
        if all(v is None or d * v >= d * chance for v in cells.to_pylist()):
            scale.append(f"Every RIM configuration's mean {objective} is at or worse than chance ({chance:.3f}): "
                         "these are differences between models that have not learnt the task.")
    return [Block("h2", f"Main effects: {objective}"), Block("md_table", "\n".join(lines)),
            *([Block("p", " ".join(scale))] if scale else [])], factors


def iqm_blocks(children: pa.Table, rows: list[str], objective: str) -> list[Block]:
    """RL tasks: the interquartile mean of each configuration's final objective over seeds, per game, with a
    stratified bootstrap 95% interval (rliable's recommendation for few runs of noisy returns); no interval
    below MIN_N runs."""
    if objective not in children.column_names:
        return []
    done = children.filter(pc.equal(children["status"], "FINISHED"))
    keys = [r for r in rows if r != "seed" and r in done.column_names]
    if "task.env" in done.column_names and "task.env" not in keys:
        keys = ["task.env", *keys]
    groups: dict[tuple, list[float]] = {}
    for i in range(done.num_rows):
        value = done[objective][i].as_py()
        if value is not None:
            groups.setdefault(tuple(done[k][i].as_py() for k in keys), []).append(float(value))
    if not groups:
        return []
    lines = [f"IQM over seeds of the final {objective} per configuration (the mean of the middle 50% of runs), "
             f"with a 95% stratified bootstrap interval (2,000 resamples) where there are >= {MIN_N} runs.", "",
             "| " + " | ".join(keys) + " | runs | IQM | 95% CI |", "|" + "---|" * len(keys) + "---:|---:|---|"]
    for key, vals in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        point, low, high = iqm_ci({"runs": vals})
        ci = f"[{low:.2f}, {high:.2f}]" if len(vals) >= MIN_N else f"n/a: n={len(vals)}"
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in key)
                     + f" | {len(vals)} | {point:.2f} | {ci} |")
    return [Block("h2", f"Interquartile mean over seeds: {objective}"), Block("md_table", "\n".join(lines))]

"""Ablation tables from the exported runs table (runs.parquet; layout in schema.py): mean and CI over seeds.

- :func:`ablation_table`: one row per configuration (runs that differ only in ``seed``), one column per metric,
  ``mean ± CI half-width`` with n, a last row with each column's chance level where the task defines one
  (analysis.metrics); Markdown, LaTeX (booktabs) and CSV.
- :func:`paper_table`: the RIMs paper's Table 1 layout (model, k_T, k_A, h, train CE, test CE) from a copying sweep.
- :func:`paired_comparisons`: every configuration against a baseline: difference of means, permutation p
  (paired by seed where the two share seeds), effect size.

What the n supports (stats.MIN_N = 3): a cell with fewer values gives its mean and n, no interval; a column marks
a best group only where every group has >= 3 values and the best group's interval is clear of every other's and
of chance (:func:`best_supported`); a comparison prints p only where p < 0.05 is attainable and an effect size
only with >= 3 values a side.

Only child runs (``parent_run_id`` not null: trials, not sweep parents) whose status is FINISHED count; the others
are excluded and counted in a note. Runs stopped early by a scheduler are FINISHED and included by default (their
last report stands), flagged in a note.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sweeps.keys import TAG_STOPPED_EARLY

from .metrics import chance_level
from .schema import BASE_COLUMNS, STAT_SUFFIXES
from .stats import MIN_N, mean_ci, paired_permutation_test, permutation_test, too_few

__all__ = [
    "OBJECTIVES",
    "AblationTable",
    "Cell",
    "Comparison",
    "ComparisonTable",
    "ablation_table",
    "best_supported",
    "metric_direction",
    "paired_comparisons",
    "paper_table",
    "per_run_table",
]

Stat = Literal["final", "best", "min", "max"]
CI = Literal["t", "bootstrap"]
# each task's objective metric (sweeps/tasks/*.py, Task.objective), kept here so tables need no torch import
OBJECTIVES = {"copying": "val/ce", "smnist": "val/acc", "bouncing": "val/bce", "atari": "val/episode_return_mean"}
_MIN_TOKENS = {"ce", "bce", "loss", "nll", "mse"}
_MAX_TOKENS = {"acc", "accuracy", "return"}
_STAT_TEXT = {"final": "final value of each metric", "min": "minimum over each run's history",
              "max": "maximum over each run's history",
              "best": "best value over each run's history (min for ce/bce/loss, max for acc)"}
_KIND_ORDER = {"rims": 0, "lstm": 1, "gru": 2}


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
class _Layout:
    metrics: list[str]  # metric names K (each has columns K, K.min, K.max)
    params: list[str]  # param columns (model.*, task.*, optim.*, seed, ...)
    tags: list[str]  # rims.* / mlflow.* tag columns


def _layout(t: pa.Table) -> _Layout:
    cols = t.column_names
    have = set(cols)
    metrics = sorted(c for c in cols if f"{c}.min" in have and f"{c}.max" in have)
    stat_cols = {m + s for m in metrics for s in STAT_SUFFIXES}
    tags = [c for c in cols if c.startswith(("rims.", "mlflow.")) and c not in stat_cols]
    params = [c for c in cols if c not in BASE_COLUMNS and c not in stat_cols and c not in tags]
    return _Layout(metrics, params, tags)


def _stat_column(metric: str, stat: Stat) -> str:
    if stat == "final":
        return metric
    if stat in ("min", "max"):
        return f"{metric}.{stat}"
    if stat == "best":
        d = metric_direction(metric)
        if d is None:
            raise ValueError(f"stat='best' needs to know whether {metric!r} is minimised or maximised and its name "
                             "does not say (no ce/bce/loss/acc); pass stat='min' or stat='max'")
        return f"{metric}.{d}"
    raise ValueError(f"stat: expected one of 'final', 'best', 'min', 'max', got {stat!r}")


def _check_names(layout: _Layout, rows: Sequence[str] | None, metrics: Sequence[str] | None) -> None:
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


def _select(runs: pa.Table, include_stopped_early: bool) -> tuple[pa.Table, list[str]]:
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


CORE_KEYS = ("model.kind", "model.num_units", "model.top_k", "model.hidden_size")  # the paper's k_T, k_A, h


def _varying(t: pa.Table, cols: Sequence[str]) -> list[str]:
    """Columns whose values differ. Outside the core keys a column needs two distinct non-null values: a key
    that is null only where it does not apply (RIM-only keys of baseline runs) and constant elsewhere is
    explained by model.kind, and listing it would bury the table in constant columns."""
    def distinct(c: str) -> int:
        return len({repr(v) for v in t[c].to_pylist() if c in CORE_KEYS or v is not None})

    return [c for c in cols if distinct(c) > 1]


def _default_rows(t: pa.Table, layout: _Layout) -> list[str]:
    """model.* then task.* params that vary, then any other varying param but seed (so that groups stay
    configurations: runs that differ only in seed)."""
    free = [p for p in layout.params if p != "seed"]
    model = [p for p in free if p.startswith("model.")]
    task = [p for p in free if p.startswith("task.")]
    rest = [p for p in free if p not in model and p not in task]
    return _varying(t, model) + _varying(t, task) + _varying(t, rest)


def _default_metrics(t: pa.Table, layout: _Layout) -> list[str]:
    out = [m for m in layout.metrics if m.startswith("eval/")]
    if "task.name" in t.column_names:
        for name in sorted({n for n in t["task.name"].to_pylist() if n is not None}):
            obj = OBJECTIVES.get(name)
            if obj in layout.metrics and obj not in out:
                out.append(obj)
    if not out:
        raise ValueError(f"no default metrics: the table has no eval/* metric and no task objective; pass metrics= "
                         f"from {layout.metrics}")
    return out


def _sort_key(v: Any) -> tuple:
    return (v is None, str(type(v)), v if v is not None else 0)


def _groups(t: pa.Table, rows: Sequence[str]) -> tuple[list[tuple], list[np.ndarray]]:
    """(group keys, row indices of each group's runs) grouping by the ``rows`` columns, keys sorted (nulls last)."""
    if not rows:
        return [()], [np.arange(t.num_rows)]
    g = (t.select(list(rows)).append_column("__row", pa.array(np.arange(t.num_rows)))
         .group_by(list(rows), use_threads=False).aggregate([("__row", "list")]))
    keys = list(zip(*(g[r].to_pylist() for r in rows), strict=True))
    members = [np.asarray(m, dtype=np.int64) for m in g["__row_list"].to_pylist()]
    order = sorted(range(len(keys)), key=lambda i: tuple(_sort_key(v) for v in keys[i]))
    return [keys[i] for i in order], [members[i] for i in order]


def _key_text(rows: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{r}={v}" for r, v in zip(rows, key, strict=True)) or "all runs"


@dataclass(frozen=True)
class Cell:
    """One group's statistic of one metric: mean over its runs (seeds) and the CI [low, high]; n values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """(high - low) / 2: the ± of a t interval (a bootstrap interval need not be symmetric)."""
        return (self.high - self.low) / 2


def _decimals(c: Cell) -> int:
    """3 decimals, more when needed to show the half-width's first significant digit (at most 6)."""
    hw = c.half_width
    if not math.isfinite(hw) or hw <= 0:
        return 3
    return min(6, max(3, -math.floor(math.log10(hw))))


def _latex_escape(s: str) -> str:
    s = s.replace("\\", "\x00")
    for ch in "&%$#_{}":
        s = s.replace(ch, "\\" + ch)
    s = s.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}").replace("\x00", r"\textbackslash{}")
    return s.replace("±", r"$\pm$")


@dataclass
class AblationTable:
    """Grouped results: one group per distinct value of the ``rows`` columns (a configuration: its runs differ only
    in seed), one Cell per group and metric.

    keys[i] holds group i's values of ``rows``; n[i] its runs and seeds[i] their seeds; cells[metric][i] the
    statistic read from column columns[metric] (low and high are nan where the cell has fewer than MIN_N = 3
    values: no interval is given then); best[metric] the index of the group marked best, only where that is
    supported (see :func:`best_supported`), else empty; chance[metric] the metric's chance level where known
    (analysis.metrics); notes and warnings are the header's lines. Labels only change how things are shown.
    """

    rows: list[str]
    keys: list[tuple]
    metrics: list[str]
    columns: dict[str, str]
    cells: dict[str, list[Cell]]
    best: dict[str, list[int]]
    directions: dict[str, str | None]
    n: list[int]
    seeds: list[list[Any]]
    stat: str
    ci: str
    level: float
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    row_labels: dict[str, str] = field(default_factory=dict)
    metric_labels: dict[str, str] = field(default_factory=dict)
    value_labels: dict[str, dict[Any, str]] = field(default_factory=dict)
    missing: str = "-"  # shown for a null row value (e.g. k_A of an LSTM) and an empty cell
    chance: dict[str, float | None] = field(default_factory=dict)

    def header(self) -> str:
        """The line that says what the numbers are."""
        pct = f"{self.level * 100:g}%"
        how = f"{pct} t-interval" if self.ci == "t" else f"{pct} percentile-bootstrap interval"
        any_ci = self._any_ci()
        any_small = any(0 < c.n < MIN_N for cs in self.cells.values() for c in cs)
        what = (f"mean ± {how} half-width over seeds" + (f" ('no CI' where a cell has fewer than {MIN_N} values)"
                                                          if any_small else "")
                if any_ci else f"mean over seeds (no intervals: no cell has {MIN_N} or more values)")
        best = (f"; bold: the best mean of a column, only where every group has >= {MIN_N} values and the best "
                f"group's {pct} interval lies clear of every other group's and of chance") if any(
            self.best.values()) else ""
        return (f"{what}; {_STAT_TEXT[self.stat]}; {sum(self.n)} finished child runs in "
                f"{len(self.keys)} group{'s' * (len(self.keys) != 1)}{best}")

    def lines(self) -> list[str]:
        """Header, notes and warnings, one per line."""
        return [self.header(), *(f"note: {s}" for s in self.notes), *(f"warning: {s}" for s in self.warnings)]

    def _value(self, row: str, v: Any) -> str:
        if v is None:
            return self.missing
        if v in self.value_labels.get(row, {}):
            return self.value_labels[row][v]
        if isinstance(v, bool):
            return str(v).lower()
        return f"{v:g}" if isinstance(v, float) else str(v)

    def _cell(self, i: int, m: str, decimals: int | None) -> str:
        c = self.cells[m][i]
        if c.n == 0:
            return self.missing
        d = _decimals(c) if decimals is None else decimals
        if c.n < MIN_N:  # an interval from fewer seeds says nothing: the mean and n only
            if c.n == self.n[i] and not self._any_ci():
                return f"{c.mean:.{d}f}"  # the header says that no cell has an interval
            return f"{c.mean:.{d}f} (n={c.n}, no CI)"
        s = f"{c.mean:.{d}f}" if not math.isfinite(c.half_width) else f"{c.mean:.{d}f} ± {c.half_width:.{d}f}"
        return s if c.n == self.n[i] else f"{s} (n={c.n})"

    def _any_ci(self) -> bool:
        return any(c.n >= MIN_N for cs in self.cells.values() for c in cs)

    def _label(self, m: str) -> str:
        return self.metric_labels.get(m, m if self.stat == "final" else f"{m} ({self.stat})")

    def _grid(self, decimals: int | None) -> tuple[list[str], list[list[str]], list[list[bool]]]:
        head = [self.row_labels.get(r, r) for r in self.rows] + ["n"] + [self._label(m) for m in self.metrics]
        body, bold = [], []
        for i, key in enumerate(self.keys):
            body.append([self._value(r, v) for r, v in zip(self.rows, key, strict=True)] + [str(self.n[i])]
                        + [self._cell(i, m, decimals) for m in self.metrics])
            bold.append([False] * (len(self.rows) + 1) + [i in self.best[m] for m in self.metrics])
        if any(self.chance.get(m) is not None for m in self.metrics):  # the level each column is read against
            first = ["chance level"] + [""] * len(self.rows)
            body.append(first + [self.missing if self.chance.get(m) is None else f"{self.chance[m]:.3f}"
                                 for m in self.metrics])
            bold.append([False] * len(first) + [False] * len(self.metrics))
        return head, body, bold

    def to_markdown(self, decimals: int | None = None, notes: bool = True) -> str:
        """The header line, notes and warnings as a list (notes=False leaves them out: a report that gathers them
        in one place), then the table. decimals None: 3, or more where the half-width needs them."""
        head, body, bold = self._grid(decimals)
        out = [self.header(), ""]
        extra = [f"- note: {s}" for s in self.notes] + [f"- warning: {s}" for s in self.warnings]
        if extra and notes:
            out += [*extra, ""]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * len(self.rows) + ["---:"] * (1 + len(self.metrics))) + "|")
        for cells, b in zip(body, bold, strict=True):
            out.append("| " + " | ".join(f"**{c}**" if x else c for c, x in zip(cells, b, strict=True)) + " |")
        return "\n".join(out) + "\n"

    def to_latex(self, decimals: int | None = None) -> str:
        """A booktabs table environment; the header, notes and warnings in its caption; best in \\textbf."""
        head, body, bold = self._grid(decimals)
        cap = " ".join(s if s.endswith(".") else s + "." for s in self.lines())
        out = [r"\begin{table}[t]", r"\centering", r"\caption{" + _latex_escape(cap) + "}",
               r"\begin{tabular}{" + "l" * len(self.rows) + "r" + "c" * len(self.metrics) + "}", r"\toprule",
               " & ".join(_latex_escape(h) for h in head) + r" \\", r"\midrule"]
        for cells, b in zip(body, bold, strict=True):
            out.append(" & ".join(r"\textbf{" + _latex_escape(c) + "}" if x else _latex_escape(c)
                                  for c, x in zip(cells, b, strict=True)) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(out) + "\n"

    def to_arrow(self) -> pa.Table:
        """Machine-readable: the row columns (raw values), n, and per metric ``<m>.mean``, ``.low``, ``.high``,
        ``.n``, ``.best`` (``<m>`` is ``metric.stat`` unless stat is final)."""
        cols: dict[str, Any] = {r: pa.array([k[j] for k in self.keys]) for j, r in enumerate(self.rows)}
        cols["n"] = pa.array(self.n, pa.int64())
        for m in self.metrics:
            name = m if self.stat == "final" else f"{m}.{self.stat}"
            cs = self.cells[m]
            for f in ("mean", "low", "high"):
                cols[f"{name}.{f}"] = pa.array([getattr(c, f) for c in cs], pa.float64())
            cols[f"{name}.n"] = pa.array([c.n for c in cs], pa.int64())
            cols[f"{name}.best"] = pa.array([i in self.best[m] for i in range(len(cs))])
        return pa.table(cols)

    def to_csv(self) -> str:
        """to_arrow() as CSV (a header row, full precision, empty for null)."""
        buf = pa.BufferOutputStream()
        pacsv.write_csv(self.to_arrow(), buf)
        return buf.getvalue().to_pybytes().decode()


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


def _build(sel: pa.Table, rows: list[str], metrics: list[str], stat: Stat, ci: CI, level: float, notes: list[str],
           n_boot: int, seed: int) -> AblationTable:
    keys, members = _groups(sel, rows)
    columns = {m: _stat_column(m, stat) for m in metrics}
    seeds_col = sel["seed"].to_pylist() if "seed" in sel.column_names else [None] * sel.num_rows
    seeds = [[seeds_col[j] for j in idx] for idx in members]
    notes = list(notes)
    pooled = [p for p in _layout(sel).params if p != "seed" and p not in rows
              and any(len({repr(v) for v in sel[p].take(pa.array(idx)).to_pylist()}) > 1 for idx in members)]
    if pooled:
        notes.append(f"rows pool runs that differ in {', '.join(pooled)}: n counts runs, not seeds")
    for key, s in zip(keys, seeds, strict=True):
        dup = sorted({x for x, c in Counter(s).items() if c > 1 and x is not None})
        if dup and not pooled:
            notes.append(f"{_key_text(rows, key)}: several runs with seed {', '.join(map(str, dup))}")
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
                cells[m].append(Cell(*mean_ci(x, level, ci, n_boot, seed), int(x.size)))
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
            small.setdefault(n[i], []).append(_key_text(rows, key))
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
    best -> K.min for ce/bce/loss-like names and K.max for acc-like ones. ci: "t" or "bootstrap" (n_boot
    resamples, seed) at ``level``.

    Raises ValueError for an unknown row key or metric (listing what exists) and when no finished child run is
    left.
    """
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"ci: expected 't' or 'bootstrap', got {ci!r}")
    layout = _layout(runs)
    _check_names(layout, rows, metrics)
    for m in metrics or []:
        _stat_column(m, stat)  # an unknown stat or an undirected metric with stat="best" fails before any work
    sel, notes = _select(runs, include_stopped_early)
    rows = list(rows) if rows is not None else _default_rows(sel, layout)
    metrics = list(metrics) if metrics is not None else _default_metrics(sel, layout)
    if stat == "best":
        metrics = [m for m in metrics if metric_direction(m) is not None] or metrics
    return _build(sel, rows, metrics, stat, ci, level, notes, n_boot, seed)


_PAPER_ROWS = ("model.kind", "model.num_units", "model.top_k", "model.hidden_size")


def paper_table(runs: pa.Table, which: Literal["ce", "ce_all"] = "ce", stat: Stat = "final", ci: CI = "t",
                level: float = 0.95, include_stopped_early: bool = True) -> AblationTable:
    """The RIMs paper's Table 1 from a copying sweep: model (RIMs / LSTM / GRU), k_T (model.num_units), k_A
    (model.top_k; blank for baselines), h (model.hidden_size), n, then train CE at the training blank
    (``eval/<which>_blank<task.blank>``, else ``val/<which>``) and test CE at every other evaluated blank.

    which: "ce" = mean cross-entropy over the recall positions (task.num_symbols, 10 by default; what the model is
    trained on); "ce_all" = over every position, the official script's definition (the one the paper's numbers
    use). Rows: RIMs first
    (k_T, then k_A descending), then LSTM, GRU by h.
    """
    if which not in ("ce", "ce_all"):
        raise ValueError(f"which: expected 'ce' or 'ce_all', got {which!r}")
    layout = _layout(runs)
    for r in ("model.kind", "model.hidden_size"):
        if r not in runs.column_names:
            raise ValueError(f"paper_table: expected column {r!r}; param columns in the table: {layout.params}")
    sel, notes = _select(runs, include_stopped_early)
    if "task.name" in sel.column_names:
        names = {n for n in sel["task.name"].to_pylist() if n is not None}
        if names - {"copying"}:
            raise ValueError(f"paper_table: expected runs of the copying task, got task.name {sorted(names)}")
    for r in _PAPER_ROWS:
        if r not in sel.column_names:  # a baselines-only sweep has no RIM columns
            sel = sel.append_column(r, pa.nulls(sel.num_rows, pa.int64()))
    blanks = sorted({b for b in sel["task.blank"].to_pylist() if b is not None}) if "task.blank" in sel.column_names \
        else []
    if len(blanks) > 1:
        raise ValueError(f"paper_table: runs trained at several blank spans {blanks}; filter the table to one")
    train = f"eval/{which}_blank{blanks[0]}" if blanks else None
    if train not in layout.metrics:
        train = f"val/{which}"
        if train not in layout.metrics:
            raise ValueError(f"paper_table: no train metric (eval/{which}_blank<task.blank> or val/{which}); metrics "
                             f"in the table: {layout.metrics}")
    pat = re.compile(rf"^eval/{which}_blank(\d+)$")
    tests = sorted((int(mt.group(1)), m) for m in layout.metrics if (mt := pat.match(m))
                    and (not blanks or int(mt.group(1)) != blanks[0]))
    name = "CE" if which == "ce" else "CE_all"
    at = f" ({blanks[0]})" if blanks else ""
    labels = {train: f"train {name}{at}", **{m: f"test {name} ({b})" for b, m in tests}}
    notes.append("CE: mean cross-entropy over the recall positions" if which == "ce" else
                 "CE_all: mean cross-entropy over every position (the official RIMs script's definition)")
    tab = _build(sel, list(_PAPER_ROWS), [train, *(m for _, m in tests)], stat, ci, level, notes, 10_000, 0)
    order = sorted(range(len(tab.keys)), key=lambda i: (
        _KIND_ORDER.get(tab.keys[i][0], 3), str(tab.keys[i][0]), -(tab.keys[i][1] or 0), -(tab.keys[i][2] or 0),
        tab.keys[i][3] or 0))
    pos = {old: new for new, old in enumerate(order)}
    return replace(
        tab, keys=[tab.keys[i] for i in order], n=[tab.n[i] for i in order], seeds=[tab.seeds[i] for i in order],
        cells={m: [c[i] for i in order] for m, c in tab.cells.items()},
        best={m: sorted(pos[i] for i in b) for m, b in tab.best.items()},
        row_labels={"model.kind": "model", "model.num_units": "k_T", "model.top_k": "k_A", "model.hidden_size": "h"},
        metric_labels=labels, value_labels={"model.kind": {"rims": "RIMs", "lstm": "LSTM", "gru": "GRU"}}, missing="")


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
        return _grouped([(c.warning, _key_text(self.rows, c.key)) for c in self.comparisons if c.warning],
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
    layout = _layout(runs)
    _check_names(layout, [*(rows or []), *baseline], [metric])
    col = _stat_column(metric, stat)
    sel, notes = _select(runs, include_stopped_early)
    rows = list(rows) if rows is not None else _default_rows(sel, layout)
    keys, members = _groups(sel, rows)
    match = np.ones(sel.num_rows, dtype=bool)
    for k, v in baseline.items():
        match &= np.array([x == v for x in sel[k].to_pylist()], dtype=bool)
    hits = [i for i, idx in enumerate(members) if match[idx].any()]
    if len(hits) != 1 or not match[members[hits[0]]].all():
        found = "; ".join(_key_text(rows, keys[i]) for i in hits) or "none"
        raise ValueError(f"baseline {baseline} must pick exactly one group of rows {rows}; it matches: {found}. "
                         f"Groups: {[_key_text(rows, k) for k in keys]}")
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
            notes.append(f"{_key_text(rows, keys[i])}: no value of {col!r}, skipped")
            continue
        g_seed = _by_seed(vals[g_idx], [seeds_col[j] for j in g_idx])
        shared = sorted(set(g_seed) & set(b_seed), key=_sort_key)
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



def per_run_table(runs: pa.Table, rows: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                  stat: Stat = "final", include_stopped_early: bool = True) -> pa.Table:
    """One row per finished child run (the per-seed values behind an ablation table, so it can be recomputed):
    run_id, the row keys, seed, then each metric's ``stat`` value, with the same defaults as ablation_table."""
    agg = ablation_table(runs, rows, metrics, stat=stat, include_stopped_early=include_stopped_early)
    sel, _ = _select(runs, include_stopped_early)
    keys = [r for r in agg.rows if r != "seed"] + (["seed"] if "seed" in sel.column_names else [])
    cols = {"run_id": sel["run_id"], **{k: sel[k] for k in keys},
            **{m: sel[_stat_column(m, stat) if stat != "best" else m] for m in agg.metrics}}
    if stat == "best":
        cols.update({m: sel[_stat_column(m, "min" if metric_direction(m) == "min" else "max")] for m in agg.metrics})
    order = sorted(range(sel.num_rows), key=lambda i: tuple(str(cols[k][i].as_py()) for k in keys))
    return pa.table(cols).take(pa.array(order, pa.int64()))

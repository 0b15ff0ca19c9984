"""An ablation table's numbers and how they are shown: :class:`Cell` (mean, CI, n of one group and metric) and
:class:`AblationTable` with its three renderers, Markdown, LaTeX (booktabs) and Arrow/CSV.

What the n supports (stats.MIN_N = 3): a cell with fewer values gives its mean and n, no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from .selection import metric_bounds
from .stats import MIN_N

__all__ = ["AblationTable", "Cell"]

_STAT_TEXT = {"final": "final value of each metric", "min": "minimum over each run's history",
              "max": "maximum over each run's history",
              "best": "best value over each run's history (min for ce/bce/loss, max for acc)"}


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

    @property
    def symmetric(self) -> bool:
        """Whether the interval is centred on the mean (a t interval that no bound clipped)."""
        return math.isclose(self.mean - self.low, self.high - self.mean, rel_tol=1e-9, abs_tol=1e-12)


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
        centre = "geometric mean" if self.ci == "log" else "mean"
        how = {"t": f"mean ± {pct} t-interval half-width",
               "bootstrap": f"mean [{pct} percentile-bootstrap interval]",
               "log": f"geometric mean [{pct} t-interval of the mean log value, mapped back]"}[self.ci]
        any_ci = self._any_ci()
        any_small = any(0 < c.n < MIN_N for cs in self.cells.values() for c in cs)
        what = (f"{how} over seeds" + (f" ('no CI' where a cell has fewer than {MIN_N} values)" if any_small else "")
                if any_ci else f"{centre} over seeds (no intervals: no cell has {MIN_N} or more values)")
        best = (f"; bold: the best mean of a column, only where every group has >= {MIN_N} values and the best "
                f"group's {pct} interval lies clear of every other group's and of chance") if any(
            self.best.values()) else ""
        clipped = [m for m in self.metrics if (b := metric_bounds(m)) and any(  # an end on a bound: clipped
            c.n >= MIN_N and c.low < c.high and (c.low == b[0] or c.high == b[1]) for c in self.cells[m])]
        clipped_text = (f"; intervals that leave [0, 1] clipped to it, shown as [low, high] ({', '.join(clipped)})"
                        if clipped else "")
        return (f"{what}{clipped_text}; {_STAT_TEXT[self.stat]}; {sum(self.n)} finished child runs in "
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
        if not math.isfinite(c.half_width):
            s = f"{c.mean:.{d}f}"
        elif self.ci == "t" and c.symmetric:
            s = f"{c.mean:.{d}f} ± {c.half_width:.{d}f}"
        else:  # bootstrap, log and clipped t intervals are not symmetric about the centre: both ends
            s = f"{c.mean:.{d}f} [{c.low:.{d}f}, {c.high:.{d}f}]"
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

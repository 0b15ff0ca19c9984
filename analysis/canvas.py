"""What every figure shares: the Agg canvas (no pyplot, no global figure state, no display), writing
``<out_dir>/<name>.png`` and ``.svg``, :class:`PlotFiles`, group labels, and the column-wise mean and t-interval
over runs that curves draw (stats.mean_ci)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .stats import MIN_N, mean_ci

__all__ = [
    "CI_LEVEL",
    "PlotFiles",
    "check_columns",
    "clean",
    "column_mean_ci",
    "group_label",
    "group_sort_key",
    "new_figure",
    "run_groups",
    "save",
    "slug",
]

CI_LEVEL = 0.95


class PlotFiles(list):
    """The written files ``[<name>.png, <name>.svg]`` (a list of Paths), with ``figure`` (the matplotlib
    Figure) and ``data`` (the arrays drawn, per function) attached."""

    def __init__(self, paths: Sequence[Path], figure: Figure, data: dict[str, Any]) -> None:
        super().__init__(paths)
        self.figure = figure
        self.data = data


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A Figure of width x height inches on its own Agg canvas, constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, whatever the configured backend
    return fig


def save(fig: Figure, out_dir: str | Path, name: str, data: dict[str, Any]) -> PlotFiles:
    """Write ``<out_dir>/<name>.png`` (150 dpi) and ``.svg`` (no timestamp) and return them as PlotFiles."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=150)
    fig.savefig(svg, metadata={"Date": None})  # no timestamp: the same figure gives the same file
    return PlotFiles([png, svg], fig, data)


def slug(text: str) -> str:
    """"val/ce" -> "val_ce": a file-name-safe form of a metric name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "plot"


def check_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    """ValueError naming the columns the runs table lacks, and the ones it has."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{what}: unknown column(s) {missing}; the runs table has: {sorted(table.column_names)}")


def clean(v: Any) -> Any:
    """NaN read as missing (None); any other value as it is."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def group_label(group_by: Sequence[str], key: tuple) -> str:
    """("model.num_units",), (6,) -> "model.num_units=6"; "all runs" without group_by."""
    if not group_by:
        return "all runs"
    return ", ".join(f"{c}={_fmt(v)}" for c, v in zip(group_by, key, strict=True))


def group_sort_key(key: tuple) -> tuple:
    """Sorts group keys, missing values last."""
    return tuple((v is None, "" if v is None else v) for v in key)


def run_groups(runs: pa.Table, group_by: Sequence[str]) -> dict[str, tuple]:
    """run_id -> its tuple of group_by values (NaN read as missing)."""
    rows = runs.select(["run_id", *group_by]).to_pylist()
    return {r["run_id"]: tuple(clean(r[c]) for c in group_by) for r in rows}



def column_mean_ci(x: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise over the rows of x (R, C) (NaN = missing): mean (C,), half-width (C,) of the t-interval of
    stats.mean_ci (NaN where n < MIN_N = 3: an interval from 2 seeds is 12.7 standard deviations wide and says
    nothing; NaN mean where n = 0), n (C,)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    mean = np.full(x.shape[1], np.nan)
    half = np.full(x.shape[1], np.nan)
    for j in np.flatnonzero(n):
        v = x[ok[:, j], j]
        if v.size >= MIN_N:
            m, low, high = mean_ci(v, level)
            mean[j], half[j] = m, (high - low) / 2
        else:
            mean[j] = v.mean()
    return mean, half, n

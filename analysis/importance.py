"""Which params matter for an objective: Optuna's fANOVA importance over the finished child runs, as a bar chart."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from .canvas import PlotFiles, check_columns, clean, new_figure, save, slug
from .schema import BASE_COLUMNS

__all__ = ["SMALL_INT_SET", "param_importance"]

SMALL_INT_SET = 5  # an int param with at most this many distinct values is treated as categorical


def _param_columns(runs: pa.Table) -> list[str]:
    """The param columns of a runs table: not a base column, not a tag (rims.*, mlflow.*), not a metric
    (K with K.min and K.max, and those two)."""
    cols = set(runs.column_names)
    metrics = {c for c in cols if f"{c}.min" in cols and f"{c}.max" in cols}
    metrics |= {f"{c}{s}" for c in metrics for s in (".min", ".max")}
    return sorted(c for c in cols - metrics - set(BASE_COLUMNS) if not c.startswith(("rims.", "mlflow.")))


def _distribution(name: str, values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distinct = sorted(set(values), key=lambda v: (type(v).__name__, v))
    if all(isinstance(v, bool | str) for v in values):
        return CategoricalDistribution(distinct)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if len(distinct) <= SMALL_INT_SET:
            return CategoricalDistribution(distinct)
        lo, hi = min(values), max(values)
        return IntDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        lo, hi = float(min(values)), float(max(values))
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100)
    raise ValueError(f"param_importance: param {name!r} mixes types {sorted({type(v).__name__ for v in values})}")


def param_importance(runs: pa.Table, objective: str, params: list[str] | None,
                     direction: Literal["minimize", "maximize"], out_dir: str | Path, *,
                     name: str | None = None, seed: int = 0) -> tuple[PlotFiles, dict[str, float]]:
    """fANOVA importance (optuna.importance with FanovaImportanceEvaluator) of ``params`` for the ``objective``
    column (e.g. "val/ce") over the finished child runs (status FINISHED, with a parent run), as a bar chart.

    The runs become the trials of an in-memory Optuna study: strings, bools and ints with at most 5 distinct
    values are categorical, other numbers Int/FloatDistribution over their observed range (log when positive
    and spanning 100x or more). params None: every param column (not ``seed``) set in all those runs;
    runs missing a named param or the objective are left out; a param with one value is left out with a
    warning. ValueError when no param has two values. Importances are normalised to sum to 1.

    Writes ``<out_dir>/<name>.png/.svg``, name default ``param_importance_<objective>``. Returns
    (the files, {param: importance}, largest first).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    if direction not in ("minimize", "maximize"):
        raise ValueError(f"param_importance: direction must be 'minimize' or 'maximize', got {direction!r}")
    check_columns(runs, ["run_id", objective], "param_importance")
    if params is not None:
        check_columns(runs, params, "param_importance")
    keep = np.ones(runs.num_rows, dtype=bool)
    if "status" in runs.column_names:
        keep &= np.asarray([s == "FINISHED" for s in runs["status"].to_pylist()])
    if "parent_run_id" in runs.column_names:
        keep &= np.asarray([p is not None for p in runs["parent_run_id"].to_pylist()])
    table = runs.filter(pa.array(keep))
    names = params if params is not None else [c for c in _param_columns(table) if c not in ("seed", objective)]
    rows = [r for r in table.select([objective, *names]).to_pylist()
            if isinstance(r[objective], int | float) and math.isfinite(r[objective])]
    if params is None:  # the params every run has
        names = [c for c in names if rows and all(clean(r[c]) is not None for r in rows)]
    else:
        rows = [r for r in rows if all(clean(r[c]) is not None for c in names)]
    if len(rows) < 2:
        raise ValueError(f"param_importance: need at least 2 finished child runs with {objective!r} and the "
                         f"params set, got {len(rows)}")
    varying = [c for c in names if len({r[c] for r in rows}) >= 2]
    if not varying:
        raise ValueError(f"param_importance: no param takes two or more values over the {len(rows)} runs "
                         f"(params: {names})")
    if len(varying) < len(names):
        warnings.warn(f"param_importance: left out params with a single value: "
                      f"{[c for c in names if c not in varying]}", stacklevel=2)
    if len({float(r[objective]) for r in rows}) < 2:  # fANOVA divides by the objective's variance
        raise ValueError(f"param_importance: {objective} is {float(rows[0][objective])} in all {len(rows)} runs; "
                         "nothing to attribute to the params")
    dists = {c: _distribution(c, [r[c] for r in rows]) for c in varying}
    trials = [optuna.trial.create_trial(params={c: r[c] for c in varying}, distributions=dists,
                                        value=float(r[objective])) for r in rows]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=direction)
        study.add_trials(trials)
        imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varying)
    finally:
        optuna.logging.set_verbosity(verbosity)
    imp = {k: float(v) for k, v in sorted(imp.items(), key=lambda kv: -kv[1])}
    fig = new_figure(7.0, max(2.5, 0.4 * len(imp) + 1.5))
    ax = fig.add_subplot()
    labels = list(imp)[::-1]
    ax.barh(labels, [imp[k] for k in labels], color="tab:blue")
    ax.set_xlabel("fANOVA importance (normalised)")
    ax.set_title(f"param importance for {objective} ({direction}, {len(rows)} runs)")
    ax.grid(axis="x", alpha=0.3)
    files = save(fig, out_dir, name or f"param_importance_{slug(objective)}",
                  {"importances": imp, "n_runs": len(rows)})
    return files, imp

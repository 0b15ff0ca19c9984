"""Figures from the exported tables (see analysis/schema.py) and from trained models.

Every plotting function writes ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.svg`` and returns a
:class:`PlotFiles`: the list of the two paths, which also carries the figure (``.figure``) and the numbers
drawn (``.data``) for checks and further use. Figures are built on matplotlib's Agg canvas directly (no
pyplot, no global figure state, no display needed).

- :func:`learning_curves`: a metric's history, mean over seeds per group with a 95% t-interval band.
- :func:`ood_curves`: ``eval/<metric>_<condition>`` against the condition's number (blank200 -> 200).
- :func:`activation_heatmap`, :func:`activation_by_symbol`: which RIM units are active, per step and per
  input symbol, from the core's trace hook; :func:`load_trial_model` rebuilds a finished trial's model.
- :func:`param_importance`: Optuna's fANOVA importance of the params for an objective.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats
from torch import Tensor, nn

from rims_core.rim import RIM

from .schema import BASE_COLUMNS
from .stats import MIN_N

__all__ = [
    "MAX_POINTS",
    "PlotFiles",
    "activation_by_symbol",
    "activation_heatmap",
    "downsample_minmax",
    "eval_conditions",
    "learning_curves",
    "load_trial_model",
    "ood_curves",
    "param_importance",
    "parse_condition",
    "symbol_frequency",
    "trace_activity",
]

MAX_POINTS = 500  # points drawn per run of a learning curve, at most
MAX_EXAMPLES = 4  # panels of the activation heatmap
CI_LEVEL = 0.95
SMALL_INT_SET = 5  # an int param with at most this many distinct values is treated as categorical


class PlotFiles(list):
    """The written files ``[<name>.png, <name>.svg]`` (a list of Paths), with ``figure`` (the matplotlib
    Figure) and ``data`` (the arrays drawn, per function) attached."""

    def __init__(self, paths: Sequence[Path], figure: Figure, data: dict[str, Any]) -> None:
        super().__init__(paths)
        self.figure = figure
        self.data = data


# ---------------------------------------------------------------------------------------------- helpers
def _new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, whatever the configured backend
    return fig


def _save(fig: Figure, out_dir: str | Path, name: str, data: dict[str, Any]) -> PlotFiles:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=150)
    fig.savefig(svg, metadata={"Date": None})  # no timestamp: the same figure gives the same file
    return PlotFiles([png, svg], fig, data)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "plot"


def _check_columns(table: pa.Table, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{what}: unknown column(s) {missing}; the runs table has: {sorted(table.column_names)}")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _group_label(group_by: Sequence[str], key: tuple) -> str:
    if not group_by:
        return "all runs"
    return ", ".join(f"{c}={_fmt(v)}" for c, v in zip(group_by, key, strict=True))


def _sort_key(key: tuple) -> tuple:
    return tuple((v is None, "" if v is None else v) for v in key)


def _run_groups(runs: pa.Table, group_by: Sequence[str]) -> dict[str, tuple]:
    """run_id -> its tuple of group_by values (NaN read as missing)."""
    rows = runs.select(["run_id", *group_by]).to_pylist()
    return {r["run_id"]: tuple(_clean(r[c]) for c in group_by) for r in rows}


def _mean_ci(x: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise over the rows of x (NaN = missing): mean, half-width of the t-interval (NaN where n < MIN_N = 3:
    an interval from 2 seeds is 12.7 standard deviations wide and says nothing), n."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    filled = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        dev = np.where(ok, x - mean, 0.0)
        var = (dev**2).sum(axis=0) / (n - 1)
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * np.sqrt(var / n)
    half = np.where(n >= MIN_N, half, np.nan)
    return mean, half, n


# ---------------------------------------------------------------------------------------------- learning curves
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


def learning_curves(metrics: pa.Table, runs: pa.Table, key: str, group_by: list[str], out_dir: str | Path,
                    *, name: str | None = None, max_points: int = MAX_POINTS) -> PlotFiles:
    """The history of metric ``key`` (e.g. "val/ce"), one line per group of runs equal on ``group_by``
    (differing in seed): the mean over the group's runs at each step, with a 95% t-interval band over them
    (none for a group of fewer than 3 runs). Each run's history is cut to at most max_points by
    :func:`downsample_minmax`; the group is drawn at the union of the steps its runs keep.

    Writes ``<out_dir>/<name>.png/.svg``, name default ``learning_curves_<key>``. ``data["groups"]``: label ->
    {"steps", "mean", "half_width", "n", "run_ids"}.
    """
    _check_columns(runs, ["run_id", *group_by], "learning_curves")
    hist = _histories(metrics, key)
    groups: dict[tuple, list[str]] = {}
    for rid, g in _run_groups(runs, group_by).items():
        if rid in hist:
            groups.setdefault(g, []).append(rid)
    if not groups:
        raise ValueError(f"learning_curves: no run of the runs table has a history of {key!r}")
    fig = _new_figure(12.0, 4.5)
    ax = fig.add_subplot()
    data: dict[str, Any] = {"groups": {}}
    for g in sorted(groups, key=_sort_key):
        rids = sorted(groups[g])
        all_steps = np.unique(np.concatenate([hist[r][0] for r in rids]))
        kept = np.unique(np.concatenate([hist[r][0][_minmax_indices(hist[r][1], max_points)] for r in rids]))
        mat = np.full((len(rids), len(all_steps)), np.nan)
        for i, r in enumerate(rids):
            s, v = hist[r]
            mat[i, np.searchsorted(all_steps, s)] = v
        mat = mat[:, np.searchsorted(all_steps, kept)]
        mean, half, n = _mean_ci(mat)
        label = _group_label(group_by, g)
        (line,) = ax.plot(kept, mean, label=f"{label} (n={len(rids)})", linewidth=1.2)
        if len(rids) >= MIN_N:
            ax.fill_between(kept, mean - half, mean + half, color=line.get_color(), alpha=0.25, linewidth=0)
        data["groups"][label] = {"steps": kept, "mean": mean, "half_width": half, "n": n, "run_ids": rids}
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key}: mean over seeds, {CI_LEVEL:.0%} CI band where n >= {MIN_N}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: labels are long
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, name or f"learning_curves_{_slug(key)}", data)


# ---------------------------------------------------------------------------------------------- OOD curves
_CONDITION = re.compile(r"^([A-Za-z]*)(\d+(?:\.\d+)?)$")


def parse_condition(condition: str) -> tuple[str, int | float]:
    """"blank200" -> ("blank", 200), "res24" -> ("res", 24), "balls6" -> ("balls", 6); ValueError when the
    condition does not end in a number (or holds an underscore)."""
    m = _CONDITION.match(condition)
    if m is None:
        raise ValueError(f"parse_condition: expected letters then a number (e.g. blank200), got {condition!r}")
    num = m.group(2)
    return m.group(1), (float(num) if "." in num else int(num))


def _eval_metric_names(columns: Sequence[str]) -> list[str]:
    names = set()
    for c in columns:
        if c.startswith("eval/") and not c.endswith((".min", ".max")):
            metric, sep, cond = c[len("eval/"):].rpartition("_")
            if sep and _CONDITION.match(cond):
                names.add(metric)
    return sorted(names)


def eval_conditions(columns: Sequence[str], metric: str) -> dict[str, tuple[str, int | float]]:
    """The columns ``eval/<metric>_<condition>`` whose condition ends in a number -> (prefix, number).
    ``eval/ce_all_blank200`` is ce_all's, not ce's: conditions hold no underscore."""
    out = {}
    head = f"eval/{metric}_"
    for c in columns:
        if c.startswith(head) and _CONDITION.match(c[len(head):]):
            out[c] = parse_condition(c[len(head):])
    return out


def ood_curves(runs: pa.Table, metric: str, group_by: list[str], out_dir: str | Path, *,
               name: str | None = None, condition: str | None = None) -> PlotFiles:
    """``eval/<metric>_<condition>`` against the number that ends the condition (blank200 -> 200), one line
    per group of runs equal on ``group_by``: the mean over the group's runs with 95% t-interval error bars
    (none where fewer than 3 runs have the value). ``condition`` keeps one condition prefix (e.g. "balls", leaving out
    curtain3); otherwise every prefix is drawn, as its own line per group when there are several.

    Writes ``<out_dir>/<name>.png/.svg``, name default ``ood_<metric>``. ``data["lines"]``: label ->
    {"x", "mean", "half_width", "n", "columns"}. ValueError listing the eval metrics when none matches.
    """
    _check_columns(runs, ["run_id", *group_by], "ood_curves")
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
        if any(_clean(r[c]) is not None for c in cols):
            groups.setdefault(tuple(_clean(r[c]) for c in group_by), []).append(r)
    if not groups:
        raise ValueError(f"ood_curves: no run has a value in {sorted(cols)}")
    fig = _new_figure(12.0, 4.5)
    ax = fig.add_subplot()
    data: dict[str, Any] = {"lines": {}}
    xs_all: set = set()
    for g in sorted(groups, key=_sort_key):
        members = groups[g]
        for prefix in prefixes:
            pcols = sorted((c for c, (p, _) in cols.items() if p == prefix), key=lambda c: cols[c][1])
            x = np.asarray([cols[c][1] for c in pcols], dtype=np.float64)
            mat = np.asarray([[np.nan if _clean(r[c]) is None else float(r[c]) for c in pcols] for r in members])
            mean, half, n = _mean_ci(mat)
            has = n > 0
            if not has.any():
                continue
            label = _group_label(group_by, g) + (f" ({prefix})" if len(prefixes) > 1 else "")
            (line,) = ax.plot(x[has], mean[has], marker="o", label=label)
            err = has & (n >= MIN_N)
            if err.any():
                ax.errorbar(x[err], mean[err], yerr=half[err], fmt="none", ecolor=line.get_color(), capsize=3)
            xs_all.update(x[has].tolist())
            data["lines"][label] = {"x": x[has], "mean": mean[has], "half_width": half[has], "n": n[has],
                                    "columns": [c for c, h in zip(pcols, has, strict=True) if h]}
    ax.set_xticks(sorted(xs_all))
    ax.set_xlabel(" / ".join(prefixes) or "condition")
    ax.set_ylabel(f"eval/{metric}")
    ax.set_title(f"eval/{metric} by condition: mean over seeds, {CI_LEVEL:.0%} CI where n >= {MIN_N}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: labels are long
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, name or f"ood_{_slug(metric)}", data)


# ---------------------------------------------------------------------------------------------- unit activity
def trace_activity(model: nn.Module, inputs: Tensor, layer: int = 0) -> Tensor:
    """Run model(inputs) once (eval mode, no grad) with a trace hook on its RIM core ``model.rnn`` and return
    which unit was active at each step: (N, K, L) bool, for ``layer`` (an index into the trace's S = layers x
    directions; 0 is the first layer's forward direction). Several core calls in one forward are joined in time.
    """
    core = getattr(model, "rnn", None)
    if not isinstance(core, RIM):
        raise ValueError(f"unit activity needs a RIM recurrent core at model.rnn, got {type(core).__name__}")
    seen: list[Tensor] = []
    handle = core.register_trace_hook(lambda _m, tr: seen.append(tr.active.detach().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise RuntimeError("unit activity: the model's forward did not call model.rnn")
    active = torch.cat(seen, dim=1) if len(seen) > 1 else seen[0]  # (S, L, N, K)
    if active.dim() == 3:  # unbatched input
        active = active.unsqueeze(2)
    if not 0 <= layer < active.shape[0]:
        raise ValueError(f"unit activity: layer {layer} out of range; the trace has {active.shape[0]} "
                         "(layers x directions)")
    return active[layer].permute(1, 2, 0).contiguous()


def _check_tokens(tokens: Tensor, active: Tensor, what: str) -> Tensor:
    tokens = torch.as_tensor(tokens).detach().cpu()
    if tokens.dim() != 2 or tuple(tokens.shape) != (active.shape[0], active.shape[2]):
        raise ValueError(f"{what}: tokens must be (N, L) = {(active.shape[0], active.shape[2])} like the trace, "
                         f"got {tuple(tokens.shape)}")
    return tokens


def activation_heatmap(model: nn.Module, inputs: Tensor, out_dir: str | Path, name: str = "unit_activation",
                       tokens: Tensor | None = None, *, layer: int = 0) -> PlotFiles:
    """Which unit of the RIM core ``model.rnn`` is active at each step (units x steps, dark = active) for the
    first (up to 4) sequences of ``inputs`` (the model's input, batch first), one panel per sequence; the
    input token of each step (``tokens``, (N, L)) labels the x axis when given.

    Writes ``<out_dir>/<name>.png/.svg``. ``data["active"]``: the (n, K, L) bool matrices drawn.
    """
    inputs = inputs[:MAX_EXAMPLES]
    active = trace_activity(model, inputs, layer)
    n, K, L = active.shape
    tok = _check_tokens(tokens[:MAX_EXAMPLES], active, "activation_heatmap") if tokens is not None else None
    fig = _new_figure(min(max(6.0, 0.14 * L + 2), 24.0), 0.9 + n * (0.8 + 0.25 * K))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        ax.imshow(active[i].numpy().astype(np.float64), aspect="auto", interpolation="nearest", cmap="Greys",
                  vmin=0, vmax=1)
        ax.set_yticks(range(K))
        ax.set_ylabel("unit")
        ax.set_title(f"example {i}", fontsize="small", loc="left")
        every = max(1, math.ceil(L / 60))
        ticks = list(range(0, L, every))
        ax.set_xticks(ticks)
        if tok is not None:
            ax.set_xticklabels([str(int(tok[i, t])) for t in ticks], fontsize="x-small")
        else:
            ax.tick_params(axis="x", labelsize="x-small")
    axes[-1].set_xlabel("input token per step" if tok is not None else "step")
    fig.suptitle(f"active units (top_k={int(model.rnn.config.top_k)} of {K})")
    return _save(fig, out_dir, name, {"active": active.numpy()})


def symbol_frequency(active: Tensor, tokens: Tensor) -> tuple[list[int], np.ndarray, np.ndarray]:
    """active (N, K, L) bool, tokens (N, L) -> (symbols seen, sorted; freq (K, V): the fraction of the steps
    with input symbol v at which unit k was active; count (V,): steps per symbol)."""
    tokens = _check_tokens(tokens, active, "symbol_frequency")
    act = active.permute(0, 2, 1).reshape(-1, active.shape[1]).numpy().astype(np.float64)  # (N*L, K)
    tok = tokens.reshape(-1).numpy()
    symbols = sorted(int(s) for s in np.unique(tok))
    freq = np.stack([act[tok == s].mean(axis=0) for s in symbols], axis=1)
    count = np.asarray([(tok == s).sum() for s in symbols])
    return symbols, freq, count


def activation_by_symbol(model: nn.Module, inputs: Tensor, tokens: Tensor, out_dir: str | Path,
                         name: str = "activation_by_symbol", *, layer: int = 0) -> PlotFiles:
    """How often each unit of the RIM core ``model.rnn`` is active when the input symbol is v (units x symbols
    heatmap over every sequence of ``inputs``; tokens (N, L) give each step's symbol): does a unit fire for
    particular inputs? Each column sums to top_k under top-k selection.

    Writes ``<out_dir>/<name>.png/.svg``. ``data``: {"symbols", "frequency" (K, V), "count" (V,)}.
    """
    active = trace_activity(model, inputs, layer)
    symbols, freq, count = symbol_frequency(active, tokens)
    K, V = freq.shape
    fig = _new_figure(max(4.0, 0.6 * V + 2.5), max(3.0, 0.45 * K + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(freq, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    if K * V <= 400:
        for k in range(K):
            for j in range(V):
                ax.text(j, k, f"{freq[k, j]:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if freq[k, j] < 0.5 else "black")
    ax.set_xticks(range(V))
    ax.set_xticklabels([str(s) for s in symbols])
    ax.set_yticks(range(K))
    ax.set_xlabel("input symbol")
    ax.set_ylabel("unit")
    ax.set_title("P(unit active | input symbol)")
    fig.colorbar(im, ax=ax, label="activation frequency")
    return _save(fig, out_dir, name, {"symbols": symbols, "frequency": freq, "count": count})


def load_trial_model(run_id: str, tracking_uri: str) -> tuple[Any, nn.Module]:
    """Rebuild a finished trial's task and trained model (eval mode, CPU) from its MLflow artifacts
    config.json and state.pt, as ``rims eval`` does (sweeps.evaluate.load_trial)."""
    from sweeps.evaluate import load_trial

    try:
        task, model, _ = load_trial(run_id, tracking_uri)
    except ValueError as e:
        raise ValueError(f"load_trial_model: {e}") from None
    return task, model


# ---------------------------------------------------------------------------------------------- importance
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
    _check_columns(runs, ["run_id", objective], "param_importance")
    if params is not None:
        _check_columns(runs, params, "param_importance")
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
        names = [c for c in names if rows and all(_clean(r[c]) is not None for r in rows)]
    else:
        rows = [r for r in rows if all(_clean(r[c]) is not None for c in names)]
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
    fig = _new_figure(7.0, max(2.5, 0.4 * len(imp) + 1.5))
    ax = fig.add_subplot()
    labels = list(imp)[::-1]
    ax.barh(labels, [imp[k] for k in labels], color="tab:blue")
    ax.set_xlabel("fANOVA importance (normalised)")
    ax.set_title(f"param importance for {objective} ({direction}, {len(rows)} runs)")
    ax.grid(axis="x", alpha=0.3)
    files = _save(fig, out_dir, name or f"param_importance_{_slug(objective)}",
                  {"importances": imp, "n_runs": len(rows)})
    return files, imp

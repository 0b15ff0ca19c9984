"""The report's figures: learning curves, OOD curves, parameter importance and, for copying sweeps with RIMs, the
unit activation of the best RIM trial, each with a caption, or a sentence saying why it is not drawn.

The unit figures need a trained model traced; the report does not load models itself. Its caller passes
``unit_activations(run_id, n) -> (tokens (N, T) int, active (N, T, K) bool) | None`` (None: the run has no RIM
core); ``sweeps.activations.unit_activations`` is the one `rims analyze report` passes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .canvas import slug
from .curves import learning_curves, ood_curves
from .document import Block
from .importance import param_importance
from .metrics import split_metric, task_metrics
from .sections import rim_runs
from .stats import MIN_N
from .units import MAX_EXAMPLES, activation_by_symbol, activation_heatmap

__all__ = ["UNIT_EXAMPLES", "UnitActivations", "figure_blocks", "unit_figure_blocks"]

# run_id, number of sequences -> (tokens (N, T) int, active (N, T, K) bool), or None for a run without a RIM core
UnitActivations = Callable[[str, int], tuple[np.ndarray, np.ndarray] | None]
UNIT_EXAMPLES = 64  # sequences traced for the by-symbol frequencies; the heatmap shows the first MAX_EXAMPLES


def figure_blocks(runs: pa.Table, metrics: pa.Table, children: pa.Table, rows: list[str], factors: list[str],
                  objective: str, mode: str, task: str | None, kinds: set, unit_activations: UnitActivations | None,
                  figs: Path, out: Path) -> tuple[list[Path], list[Block]]:
    """Every figure with a caption that says what it shows; a sentence instead of a figure that cannot be drawn.
    Figures go to ``figs``; image blocks name them relative to ``out`` (the report's folder)."""
    docs = task_metrics(task)
    group = [r for r in rows if r != "seed"]
    direction = "minimize" if mode == "min" else "maximize"
    attempts: list[tuple[str, Any, str]] = [
        ("learning curves", lambda: learning_curves(metrics, runs, objective, group, figs),
         f"{objective} over training steps, mean over the seeds of each configuration; band: 95% t-interval where a "
         f"configuration has >= {MIN_N} seeds.")]
    bases = sorted({split_metric(c)[1] for c in children.column_names
                    if c.startswith("eval/") and not c.endswith((".min", ".max")) and split_metric(c)[2]})
    for base in bases:
        what = f" {docs[base].doc}; chance: {docs[base].chance_doc}." if base in docs else ""
        attempts.append((f"OOD {base}", lambda base=base: ood_curves(runs, base, group, figs),
                         f"eval/{base} at each evaluated condition (x: the number in the condition's name), mean "
                         f"over seeds; error bars where >= {MIN_N} runs have the value.{what}"))
    done = children.filter(pc.equal(children["status"], "FINISHED"))
    shared = [r for r in group if r in done.column_names and done[r].null_count == 0
              and len(set(done[r].to_pylist())) > 1]
    about = ("fANOVA importance (Optuna): the share of the variance of the objective across these runs that each "
             "param explains, normalised to sum to 1; it sums to 1 even when the objective is seed noise, so read it "
             "with the main effects and their seed noise.")
    blocks: list[Block] = [Block("h2", "Figures")]
    if len(shared) >= 2:
        attempts.append(("parameter importance", lambda: param_importance(
            runs, objective, shared, direction, figs)[0], f"{about} Over all runs: {', '.join(shared)}."))
    else:
        blocks.append(Block("p", f"No importance over all runs: among the params every run sets, only "
                                 f"{', '.join(shared) or 'none'} varies, and an importance over one param is 1 by "
                                 "construction (RIM-only params such as model.top_k are unset for baselines)."))
    if "rims" in kinds and len(factors) >= 2:
        attempts.append(("RIM parameter importance", lambda: param_importance(
            rim_runs(children), objective, factors, direction, figs,
            name=f"param_importance_rims_{slug(objective)}")[0],
            f"{about} Among the RIM runs (those of the main effects): {', '.join(factors)}."))
    figures: list[Path] = []
    for label, make, caption in attempts:
        try:
            files = make()
        except ValueError as e:
            blocks.append(Block("p", f"No {label} figure: {e}"))
            continue
        figures += [Path(f) for f in files]
        png = next(Path(f) for f in files if str(f).endswith(".png"))
        blocks += [Block("img", str(png.relative_to(out))), Block("caption", caption)]
    if task == "copying" and "rims" in kinds:
        figures += unit_figure_blocks(children, objective, mode, unit_activations, figs, out, blocks)
    return figures, blocks


def unit_figure_blocks(children: pa.Table, objective: str, mode: str, unit_activations: UnitActivations | None,
                       figs: Path, out: Path, blocks: list[Block]) -> list[Path]:
    """Which unit is active when, and for which symbol, in the best RIM trial (copying); appends the figures'
    blocks (or why there are none) to ``blocks`` and returns the files written."""
    rims = children.filter(pc.equal(children["model.kind"], "rims"))
    if objective not in rims.column_names or rims.num_rows == 0:
        return []
    values = rims[objective].to_pylist()
    valid = [i for i, v in enumerate(values) if v is not None]
    if not valid:
        return []
    best = (min if mode == "min" else max)(valid, key=lambda i: values[i])
    run_id = rims["run_id"][best].as_py()
    if unit_activations is None:
        blocks.append(Block("p", "No unit figures: build_report was given no unit_activations function to trace "
                                 "the best RIM trial with (`rims analyze report` passes "
                                 "sweeps.activations.unit_activations)."))
        return []
    try:
        traced = unit_activations(run_id, UNIT_EXAMPLES)
    except ValueError as e:
        blocks.append(Block("p", f"No unit figures: {e}"))
        return []
    if traced is None:
        blocks.append(Block("p", f"No unit figures: run {run_id} has no RIM core to trace."))
        return []
    tokens, active = traced  # (N, T), (N, T, K)
    blank = rims["task.blank"][best].as_py() if "task.blank" in rims.column_names else None
    blocks.append(Block("p", f"Unit activation of the RIM trial with the best {objective} (run {run_id}), on "
                             f"fixed sequences at the training blank span {blank}:"))
    files = [*activation_heatmap(active[:MAX_EXAMPLES], figs, tokens=tokens[:MAX_EXAMPLES]),
             *activation_by_symbol(active, tokens, figs)]
    captions = {"unit_activation": "Which units are active (dark) at each step of 4 sequences; x: the input token "
                                   "(1-8 symbols, 0 blank, 9 the marker).",
                "activation_by_symbol": "How often each unit is active when the input is a given token: a unit "
                                        "that specialises fires for some tokens more than others."}
    for f in files:
        if str(f).endswith(".png"):
            blocks.append(Block("img", str(Path(f).relative_to(out))))
            if Path(f).stem in captions:
                blocks.append(Block("caption", captions[Path(f).stem]))
    return [Path(f) for f in files]

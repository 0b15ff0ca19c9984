"""The sweep report: tables, statistics and figures in one Markdown + HTML document, logged to the sweep's parent
run so it opens from the MLflow UI.

The document is built as a list of blocks (heading, paragraph, table, image, code) rendered twice, to Markdown
and to HTML, so both always say the same.
"""

from __future__ import annotations

import html
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .export import export_experiment
from .schema import METRICS_FILE, RUNS_FILE
from .tables import ablation_table, paired_comparisons, paper_table

__all__ = ["Block", "ReportResult", "build_report", "select_sweep"]


@dataclass
class Block:
    kind: str  # "h1", "h2", "p", "md_table", "img", "code"
    text: str


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    parent_run_id: str | None
    sweep_id: str | None


def select_sweep(runs: pa.Table, sweep_id: str | None) -> tuple[pa.Table, str | None, str | None]:
    """The runs of one sweep (default: the newest) and its parent run id. Experiments can hold several sweeps;
    sweep_id "all" takes every run of the experiment, "ID1,ID2" those sweeps together (no single parent then)."""
    if "rims.sweep_id" not in runs.column_names or sweep_id == "all":
        return runs, sweep_id, None
    parents = runs.filter(pc.is_null(runs["parent_run_id"]))
    ids = [s for s in parents["rims.sweep_id"].to_pylist() if s]
    if sweep_id is None:
        if not ids:
            return runs, None, None
        newest = pc.index(parents["start_time"], pc.max(parents["start_time"])).as_py()
        sweep_id = parents["rims.sweep_id"][newest].as_py()
    elif "," in sweep_id:
        wanted = [w.strip() for w in sweep_id.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in ids]
        if unknown:
            raise ValueError(f"rims analyze: no sweep {unknown[0]!r} in this experiment; it holds {sorted(ids)}")
        return runs.filter(pc.is_in(runs["rims.sweep_id"], pa.array(wanted))), sweep_id, None
    elif sweep_id not in ids:
        raise ValueError(f"rims analyze: no sweep {sweep_id!r} in this experiment; it holds {sorted(ids)} (or "
                         "give 'all', or several ids separated by commas)")
    chosen = runs.filter(pc.equal(runs["rims.sweep_id"], sweep_id))
    parent = chosen.filter(pc.is_null(chosen["parent_run_id"]))
    return chosen, sweep_id, (parent["run_id"][0].as_py() if parent.num_rows else None)


def _md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind in ("p", "md_table"):
            out.append(b.text)
        elif b.kind == "img":
            out.append(f"![{Path(b.text).stem}]({b.text})")
        elif b.kind == "code":
            out.append(f"```\n{b.text}\n```")
    return "\n\n".join(out) + "\n"


def _md_table_to_html(text: str) -> str:
    """Our own Markdown tables (header line(s), | rows |) to HTML; other lines become paragraphs."""
    rows, paras = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif line.strip():
            paras.append(f"<p>{html.escape(line)}</p>")

    def cell(c: str, tag: str) -> str:
        bold = c.startswith("**") and c.endswith("**")
        c = html.escape(c.strip("*") if bold else c)
        return f"<{tag}>{'<b>' + c + '</b>' if bold else c}</{tag}>"

    table = ""
    if rows:
        head = "".join(cell(c, "th") for c in rows[0])
        body = "".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows[1:])
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return "\n".join(paras) + table


def _html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:8px;overflow-x:auto}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "md_table":
            parts.append(_md_table_to_html(b.text))
        elif b.kind == "img":
            parts.append(f"<p><img src='{html.escape(b.text)}' alt='{html.escape(Path(b.text).stem)}'></p>")
        elif b.kind == "code":
            parts.append(f"<pre>{html.escape(b.text)}</pre>")
    return "\n".join(parts) + "</body></html>\n"


def _spec_text(uri: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    from mlflow.tracking import MlflowClient

    try:
        return Path(MlflowClient(uri).download_artifacts(parent, "spec.yaml")).read_text()
    except Exception:
        return None


def build_report(experiment: str, tracking_uri: str | None = None, out_dir: str | Path | None = None, *,
                 sweep_id: str | None = None, log: bool = True) -> ReportResult:
    """Export the experiment, build tables and figures for one sweep (default: the newest), write report.md
    and report.html under out_dir (default reports/<experiment>), and log them to the sweep's parent run."""
    from sweeps.tasks import TASKS, RLTask
    from sweeps.tracking import absolute_tracking_uri

    from . import plots

    uri = absolute_tracking_uri(tracking_uri)
    out = Path(out_dir or Path("reports") / experiment).resolve()
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    exp = export_experiment(experiment, out / "export", uri)
    runs_all = pq.read_table(out / "export" / RUNS_FILE)
    metrics = pq.read_table(out / "export" / METRICS_FILE)
    runs, sweep, parent = select_sweep(runs_all, sweep_id)
    children = runs.filter(pc.invert(pc.is_null(runs["parent_run_id"])))
    if children.num_rows == 0:
        raise ValueError(f"rims analyze: experiment {experiment!r} has no trial runs to report on")
    task_name = children["task.name"][0].as_py() if "task.name" in children.column_names else None
    objective, mode = TASKS[task_name].objective if task_name in TASKS else ("val/ce", "min")
    blocks = [Block("h1", f"Sweep report: {experiment}"),
              Block("p", f"Sweep {sweep or '(all runs)'}; task {task_name}; {children.num_rows} trial runs; "
                         f"objective {objective} ({mode}). Exported {exp.n_runs} runs ({exp.method_used} path).")]
    table = ablation_table(runs)
    blocks += [Block("h2", "Ablation table"), Block("md_table", table.to_markdown())]
    figures: list[Path] = []
    if task_name == "copying":
        try:
            blocks += [Block("h2", "The paper's Table 1 layout (copying)"),
                       Block("md_table", paper_table(runs).to_markdown()),
                       Block("md_table", paper_table(runs, which="ce_all").to_markdown())]
        except ValueError as e:
            blocks.append(Block("p", f"Paper layout not available: {e}"))
    kinds = set(children["model.kind"].to_pylist()) if "model.kind" in children.column_names else set()
    blocks += _main_effects(children, table.rows, objective)
    if task_name in TASKS and issubclass(TASKS[task_name], RLTask):
        blocks += _iqm_blocks(children, table.rows, objective)
    if {"rims"} < kinds and "lstm" in kinds:
        base = objective.split("/", 1)[1]  # the objective's measure at every evaluated condition
        for metric in [objective, *[m for m in table.metrics if m.startswith(f"eval/{base}_")]]:
            try:
                comp = paired_comparisons(runs, {"model.kind": "lstm"}, metric, table.rows)
                blocks += [Block("h2", f"Against the LSTM baseline: {metric}"), Block("md_table", comp.to_markdown())]
            except ValueError as e:
                blocks.append(Block("p", f"No comparison on {metric}: {e}"))
    blocks.append(Block("h2", "Figures"))
    group = [r for r in table.rows if r != "seed"]
    attempts: list[tuple[str, Any]] = [
        ("learning curves", lambda: plots.learning_curves(metrics, runs, objective, group, figs)),
    ]
    bases = sorted({c.split("/", 1)[1].rsplit("_", 1)[0] for c in children.column_names
                    if c.startswith("eval/") and not c.endswith((".min", ".max")) and "_" in c.split("/", 1)[1]})
    for base in bases:
        attempts.append((f"OOD {base}", lambda base=base: plots.ood_curves(runs, base, group, figs)))
    attempts.append(("parameter importance", lambda: plots.param_importance(
        runs, objective, None, "minimize" if mode == "min" else "maximize", figs)[0]))
    for label, make in attempts:
        try:
            files = make()
            figures += [Path(f) for f in files]
            png = next(Path(f) for f in files if str(f).endswith(".png"))
            blocks.append(Block("img", str(png.relative_to(out))))
        except ValueError as e:
            blocks.append(Block("p", f"No {label} figure: {e}"))
    if task_name == "copying" and "rims" in kinds:
        figures += _unit_figures(children, objective, mode, uri, figs, out, blocks)
    spec = _spec_text(uri, parent)
    if spec:
        blocks += [Block("h2", "The spec"), Block("code", spec.strip())]
    blocks += [Block("h2", "Reproduce"), Block("code", "\n".join([
        f"rims sweep run SPEC.yaml --mlflow-uri {shlex.quote(uri)}   # the spec above",
        f"rims analyze report --experiment {shlex.quote(experiment)} --mlflow-uri {shlex.quote(uri)}"
        + (f" --sweep-id {shlex.quote(sweep)}" if sweep else "")]))]
    md, page = out / "report.md", out / "report.html"
    md.write_text(_md(blocks))
    page.write_text(_html(blocks, f"Sweep report: {experiment}"))
    (out / "report.json").write_text(json.dumps({"experiment": experiment, "sweep_id": sweep, "parent_run_id": parent,
                                                 "tracking_uri": uri}, indent=2))
    if log and parent is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        for f in (md, page):
            client.log_artifact(parent, str(f), "report")
        for f in figures:
            client.log_artifact(parent, str(f), "report/figures")
    return ReportResult(md, page, figures, parent, sweep)


def _main_effects(children: pa.Table, rows: list[str], objective: str) -> list[Block]:
    """Main effect of each RIM factor on the objective, among finished RIM runs (baselines have no k_T, k_A)."""
    from .stats import main_effects

    if "model.kind" not in children.column_names or objective not in children.column_names:
        return []
    rims = children.filter(pc.and_(pc.equal(children["model.kind"], "rims"), pc.equal(children["status"], "FINISHED")))
    factors = [r for r in rows if r not in ("model.kind", "seed") and r in rims.column_names
               and len(set(rims[r].to_pylist())) > 1]
    if rims.num_rows == 0 or not factors:
        return []
    effects = main_effects(rims, factors, objective)
    lines = [f"Main effects on {objective} among RIM runs: level mean (an unweighted mean of cell means over the "
             "other factors' combinations) and its difference from the grand mean.", "",
             "| factor | level | mean | effect | cells | runs |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {e.factor} | {e.level} | {e.mean:.3f} | {e.effect:+.3f} | {e.n_cells} | {e.n_runs} |"
              for e in effects]
    return [Block("h2", f"Main effects: {objective}"), Block("md_table", "\n".join(lines))]


def _iqm_blocks(children: pa.Table, rows: list[str], objective: str) -> list[Block]:
    """RL tasks: the interquartile mean of each configuration's final objective over seeds, per game, with a
    stratified bootstrap 95% interval (rliable's recommendation for few runs of noisy returns)."""
    from .stats import iqm_ci

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
             "with a 95% stratified bootstrap interval (2,000 resamples).", "",
             "| " + " | ".join(keys) + " | runs | IQM | 95% CI |", "|" + "---|" * len(keys) + "---:|---:|---|"]
    for key, vals in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        point, low, high = iqm_ci({"runs": vals})
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in key)
                     + f" | {len(vals)} | {point:.2f} | [{low:.2f}, {high:.2f}] |")
    return [Block("h2", f"Interquartile mean over seeds: {objective}"), Block("md_table", "\n".join(lines))]


def _unit_figures(children: pa.Table, objective: str, mode: str, uri: str, figs: Path, out: Path,
                  blocks: list[Block]) -> list[Path]:
    """Which unit is active when, and for which symbol, in the best RIM trial (copying)."""
    import torch

    from sweeps.tasks.copying import make_batch

    from . import plots

    rims = children.filter(pc.equal(children["model.kind"], "rims"))
    if objective not in rims.column_names or rims.num_rows == 0:
        return []
    values = rims[objective].to_pylist()
    valid = [i for i, v in enumerate(values) if v is not None]
    if not valid:
        return []
    best = (min if mode == "min" else max)(valid, key=lambda i: values[i])
    run_id = rims["run_id"][best].as_py()
    try:
        task, model = plots.load_trial_model(run_id, uri)
    except ValueError as e:
        blocks.append(Block("p", f"No unit figures: {e}"))
        return []
    x, _ = make_batch(64, task.settings.blank, torch.Generator().manual_seed(0))
    blocks.append(Block("p", f"Unit activation of the best RIM trial by {objective} (run {run_id}):"))
    files = [*plots.activation_heatmap(model, x[:4], figs, tokens=x[:4]),
             *plots.activation_by_symbol(model, x, x, figs)]
    for f in files:
        if str(f).endswith(".png"):
            blocks.append(Block("img", str(Path(f).relative_to(out))))
    return [Path(f) for f in files]

"""The sweep report: tables, statistics and figures in one Markdown + HTML document, logged to the sweep's parent
run so it opens from the MLflow UI (report/report.html: self-contained, figures embedded; see document.py).

The document is built as a list of blocks (heading, paragraph, table, image, code) rendered twice, to Markdown
and to HTML, so both always say the same. What the report decides, and says in its "How to read" section:

- intervals only where a cell has >= 3 values; with fewer, the mean and n (an interval from 2 seeds says nothing);
- bold ("best") only where it is supported: every group has >= 3 values, the best group's interval is clear of
  every other group's and of the metric's chance level (analysis.metrics); never for a model at chance;
- p values only where the test can reach p < 0.05, effect sizes only with >= 3 values a side;
- each distinct warning or note once, with the tables it concerns, instead of under every table.
"""

from __future__ import annotations

import json
import math
import shlex
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweeps.keys import TAG_GIT_DIRTY, TAG_GIT_SHA, TAG_SPEC_PATH, TAG_SWEEP

from .document import Block, to_html, to_markdown
from .export import export_experiment
from .metrics import chance_level, split_metric, task_metrics
from .schema import METRICS_FILE, RUNS_FILE
from .stats import MIN_N
from .tables import ablation_table, metric_direction, paired_comparisons, paper_table

__all__ = ["Block", "ReportResult", "build_report", "select_sweep"]


@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    parent_run_id: str | None
    sweep_id: str | None
    where: str = ""  # how to open the report in the MLflow UI (a URL, or the `mlflow ui` command and a URL)


def select_sweep(runs: pa.Table, sweep_id: str | None) -> tuple[pa.Table, str | None, str | None]:
    """The runs of one sweep (default: the newest) and its parent run id. Experiments can hold several sweeps;
    sweep_id "all" takes every run of the experiment, "ID1,ID2" those sweeps together (no single parent then)."""
    if TAG_SWEEP not in runs.column_names or sweep_id == "all":
        return runs, sweep_id, None
    parents = runs.filter(pc.is_null(runs["parent_run_id"]))
    ids = [s for s in parents[TAG_SWEEP].to_pylist() if s]
    if sweep_id is None:
        if not ids:
            return runs, None, None
        newest = pc.index(parents["start_time"], pc.max(parents["start_time"])).as_py()
        sweep_id = parents[TAG_SWEEP][newest].as_py()
    elif "," in sweep_id:
        wanted = [w.strip() for w in sweep_id.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in ids]
        if unknown:
            raise ValueError(f"rims analyze: no sweep {unknown[0]!r} in this experiment; it holds {sorted(ids)}")
        return runs.filter(pc.is_in(runs[TAG_SWEEP], pa.array(wanted))), sweep_id, None
    elif sweep_id not in ids:
        raise ValueError(f"rims analyze: no sweep {sweep_id!r} in this experiment; it holds {sorted(ids)} (or "
                         "give 'all', or several ids separated by commas)")
    chosen = runs.filter(pc.equal(runs[TAG_SWEEP], sweep_id))
    parent = chosen.filter(pc.is_null(chosen["parent_run_id"]))
    return chosen, sweep_id, (parent["run_id"][0].as_py() if parent.num_rows else None)


class _Caveats:
    """Warnings and notes of every table, each distinct one kept once with the tables it came from."""

    def __init__(self) -> None:
        self.where: dict[str, list[str]] = {}

    def add(self, table: Any, where: str) -> None:
        for s in [*(f"warning: {w}" for w in table.warnings), *(f"note: {n}" for n in table.notes)]:
            self.where.setdefault(s, []).append(where)

    def blocks(self) -> list[Block]:
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


def _spec_text(uri: str, parent: str | None) -> str | None:
    if parent is None:
        return None
    from mlflow.tracking import MlflowClient

    try:
        return Path(MlflowClient(uri).download_artifacts(parent, "spec.yaml")).read_text()
    except Exception:
        return None


def _parent_info(uri: str, parent: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(tags, params) of the sweep's parent run; empty when there is none or it cannot be read."""
    if parent is None:
        return {}, {}
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(uri).get_run(parent)
    except Exception:
        return {}, {}
    return dict(run.data.tags), dict(run.data.params)


def _how_to_read(level: float = 0.95) -> Block:
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


def _metrics_blocks(task: str | None, children: pa.Table, objective: str) -> list[Block]:
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
    if task == "copying":
        text += (" Conditions blank<N>: sequences with a blank span of N (length N + 2 x task.num_symbols); the "
                 "training span is task.blank, the others test generalisation to longer sequences.")
    return [Block("h2", "Metrics and chance levels"), Block("p", text), Block("md_table", "\n".join(lines))]


def build_report(experiment: str, tracking_uri: str | None = None, out_dir: str | Path | None = None, *,
                 sweep_id: str | None = None, log: bool = True) -> ReportResult:
    """Export the experiment, build tables and figures for one sweep (default: the newest), write report.md,
    report.html (self-contained) and spec.yaml under out_dir (default reports/<experiment>), and log the report
    and its figures to the sweep's parent run (artifacts report/)."""
    from sweeps.tasks import TASKS, RLTask
    from sweeps.tracking import absolute_tracking_uri

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
    exp_id = children["experiment_id"][0].as_py() if "experiment_id" in children.column_names else None
    caveats = _Caveats()
    body: list[Block] = []
    table = ablation_table(runs)
    caveats.add(table, "ablation table")
    body += [Block("h2", "Ablation table"), Block("md_table", table.to_markdown(notes=False))]
    if task_name == "copying":
        body.append(Block("h2", "The paper's Table 1 layout (copying)"))
        for which in ("ce", "ce_all"):
            try:
                pt = paper_table(runs, which=which)
                caveats.add(pt, f"Table 1 layout ({which})")
                body.append(Block("md_table", pt.to_markdown(notes=False)))
            except ValueError as e:
                body.append(Block("p", f"Paper layout ({which}) not available: {e}"))
    kinds = set(children["model.kind"].to_pylist()) if "model.kind" in children.column_names else set()
    effects, factors = _main_effects(children, table.rows, objective, task_name)
    body += effects
    if task_name in TASKS and issubclass(TASKS[task_name], RLTask):
        body += _iqm_blocks(children, table.rows, objective)
    if {"rims"} < kinds and "lstm" in kinds:
        from .plots import eval_conditions

        base = objective.split("/", 1)[1]  # the objective's measure at every evaluated condition
        conds = eval_conditions(table.metrics, base)
        for metric in [objective, *sorted(conds, key=lambda c: conds[c])]:
            try:
                comp = paired_comparisons(runs, {"model.kind": "lstm"}, metric, table.rows)
                caveats.add(comp, f"LSTM comparison on {metric}")
                body += [Block("h2", f"Against the LSTM baseline: {metric}"),
                         Block("md_table", comp.to_markdown(notes=False))]
            except ValueError as e:
                body.append(Block("p", f"No comparison on {metric}: {e}"))
    figures, fig_blocks = _figures(runs, metrics, children, table.rows, factors, objective, mode, task_name, kinds,
                                   uri, figs, out)
    body += fig_blocks
    tags, params = _parent_info(uri, parent)
    spec = _spec_text(uri, parent)
    if spec:
        (out / "spec.yaml").write_text(spec)
        body += [Block("h2", "The spec"), Block("code", spec.strip())]
    body += _reproduce(experiment, uri, sweep, parent, out, spec is not None, tags, params)
    blocks = [Block("h1", f"Sweep report: {experiment}"),
              Block("p", f"Sweep {sweep or '(all runs)'}; task {task_name}; {children.num_rows} trial runs; objective "
                         f"{objective} ({mode}). Exported {exp.n_runs} runs ({exp.method_used} path)."),
              Block("p", _where_text(uri, exp_id, parent)),
              *_metrics_blocks(task_name, children, objective), _how_to_read(), *caveats.blocks(), *body]
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"Sweep report: {experiment}", out))
    (out / "report.json").write_text(json.dumps({"experiment": experiment, "sweep_id": sweep, "parent_run_id": parent,
                                                 "tracking_uri": uri}, indent=2))
    if log and parent is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        client.log_artifact(parent, str(page), "report")
        if uri.startswith(("http://", "https://")):  # MLflow's Markdown preview draws absolute http(s) images only
            client.log_text(parent, to_markdown(blocks, lambda rel: _artifact_url(uri, parent, f"report/{rel}")),
                            "report/report.md")
        else:
            client.log_artifact(parent, str(md), "report")
        for f in figures:
            client.log_artifact(parent, str(f), "report/figures")
    return ReportResult(md, page, figures, parent, sweep, _mlflow_address(uri, exp_id, parent))


def _artifact_url(uri: str, run_id: str, path: str) -> str:
    """The tracking server's address of one artifact of a run (its /get-artifact endpoint)."""
    return f"{uri.rstrip('/')}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


def _mlflow_address(uri: str, exp_id: str | None, parent: str | None) -> str:
    """Where report.html opens in the MLflow UI: its URL on a tracking server, else the `mlflow ui` command and
    the URL it serves; empty without a parent run."""
    if parent is None or exp_id is None:
        return ""
    route = f"#/experiments/{exp_id}/runs/{parent}/artifacts/report/report.html"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{route}"
    return f"`mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000`, then http://127.0.0.1:5000/{route}"


def _where_text(uri: str, exp_id: str | None, parent: str | None) -> str:
    """Which of the report's two files to open where."""
    files = ("report.html is self-contained (figures embedded): open it in MLflow's artifact view; report.md "
             "names its figures as files")
    address = _mlflow_address(uri, exp_id, parent)
    if not address:
        return files + "."
    if uri.startswith(("http://", "https://")):
        return f"{files} (in MLflow by their server address). In MLflow: {address}"
    return (f"{files} (MLflow's Markdown preview shows images with an http(s) address only, so there they show as "
            f"links). In MLflow: {address}")


def _reproduce(experiment: str, uri: str, sweep: str | None, parent: str | None, out: Path, have_spec: bool,
               tags: dict[str, str], params: dict[str, str]) -> list[Block]:
    """The commands that rerun this sweep from the spec it ran (as logged to its parent run) and rebuild this
    report; the code's commit where the parent run recorded it."""
    q = shlex.quote
    smoke = " --smoke" if params.get("smoke", "").lower() == "true" else ""
    lines = []
    sha = tags.get(TAG_GIT_SHA)
    if sha and sha != "unknown":
        dirty = tags.get(TAG_GIT_DIRTY, "").lower() == "true"
        lines.append(f"git checkout {sha}" + ("   # the sweep ran from a tree with uncommitted changes: they are not "
                                              "recorded" if dirty else "   # the commit the sweep ran from"))
    if have_spec:
        lines.append(f"rims sweep run {q(str(out / 'spec.yaml'))}{smoke} --mlflow-uri {q(uri)}   # the spec it ran, "
                     "as logged to its parent run (spec.yaml)")
        if tags.get(TAG_SPEC_PATH):
            lines.append(f"# submitted as: rims sweep run {q(tags[TAG_SPEC_PATH])}")
        if parent:
            lines.append(f"# elsewhere: MLFLOW_TRACKING_URI={q(uri)} mlflow artifacts download --run-id {parent} "
                         "--artifact-path spec.yaml --dst-path .   # then rims sweep run spec.yaml")
    else:
        lines.append("# the sweep's parent run holds no spec.yaml: rerun it from the spec file it was started with")
    lines.append(f"rims analyze report --experiment {q(experiment)} --mlflow-uri {q(uri)}"
                 + (f" --sweep-id {q(sweep)}" if sweep else ""))
    return [Block("h2", "Reproduce"), Block("code", "\n".join(lines))]


def _rim_runs(children: pa.Table) -> pa.Table:
    return children.filter(pc.and_(pc.equal(children["model.kind"], "rims"), pc.equal(children["status"], "FINISHED")))


def _main_effects(children: pa.Table, rows: list[str], objective: str,
                  task: str | None) -> tuple[list[Block], list[str]]:
    """Main effect of each RIM factor on the objective, among finished RIM runs (baselines have no k_T, k_A), with
    the seed noise to read them against. Returns the blocks and the factors."""
    from .stats import main_effects, pooled_sd

    if "model.kind" not in children.column_names or objective not in children.column_names:
        return [], []
    rims = _rim_runs(children)
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


def _iqm_blocks(children: pa.Table, rows: list[str], objective: str) -> list[Block]:
    """RL tasks: the interquartile mean of each configuration's final objective over seeds, per game, with a
    stratified bootstrap 95% interval (rliable's recommendation for few runs of noisy returns); no interval
    below MIN_N runs."""
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
             f"with a 95% stratified bootstrap interval (2,000 resamples) where there are >= {MIN_N} runs.", "",
             "| " + " | ".join(keys) + " | runs | IQM | 95% CI |", "|" + "---|" * len(keys) + "---:|---:|---|"]
    for key, vals in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        point, low, high = iqm_ci({"runs": vals})
        ci = f"[{low:.2f}, {high:.2f}]" if len(vals) >= MIN_N else f"n/a: n={len(vals)}"
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in key)
                     + f" | {len(vals)} | {point:.2f} | {ci} |")
    return [Block("h2", f"Interquartile mean over seeds: {objective}"), Block("md_table", "\n".join(lines))]


def _figures(runs: pa.Table, metrics: pa.Table, children: pa.Table, rows: list[str], factors: list[str],
             objective: str, mode: str, task: str | None, kinds: set, uri: str, figs: Path,
             out: Path) -> tuple[list[Path], list[Block]]:
    """Every figure with a caption that says what it shows; a sentence instead of a figure that cannot be drawn."""
    from . import plots

    docs = task_metrics(task)
    group = [r for r in rows if r != "seed"]
    direction = "minimize" if mode == "min" else "maximize"
    attempts: list[tuple[str, Any, str]] = [
        ("learning curves", lambda: plots.learning_curves(metrics, runs, objective, group, figs),
         f"{objective} over training steps, mean over the seeds of each configuration; band: 95% t-interval where a "
         f"configuration has >= {MIN_N} seeds.")]
    bases = sorted({split_metric(c)[1] for c in children.column_names
                    if c.startswith("eval/") and not c.endswith((".min", ".max")) and split_metric(c)[2]})
    for base in bases:
        what = f" {docs[base].doc}; chance: {docs[base].chance_doc}." if base in docs else ""
        attempts.append((f"OOD {base}", lambda base=base: plots.ood_curves(runs, base, group, figs),
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
        attempts.append(("parameter importance", lambda: plots.param_importance(
            runs, objective, shared, direction, figs)[0], f"{about} Over all runs: {', '.join(shared)}."))
    else:
        blocks.append(Block("p", f"No importance over all runs: among the params every run sets, only "
                                 f"{', '.join(shared) or 'none'} varies, and an importance over one param is 1 by "
                                 "construction (RIM-only params such as model.top_k are unset for baselines)."))
    if "rims" in kinds and len(factors) >= 2:
        attempts.append(("RIM parameter importance", lambda: plots.param_importance(
            _rim_runs(children), objective, factors, direction, figs,
            name=f"param_importance_rims_{plots._slug(objective)}")[0],
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
        figures += _unit_figures(children, objective, mode, uri, figs, out, blocks)
    return figures, blocks


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
    x, _ = make_batch(64, task.settings.blank, torch.Generator().manual_seed(0), num_symbols=task.settings.num_symbols)
    blocks.append(Block("p", f"Unit activation of the RIM trial with the best {objective} (run {run_id}), on "
                             f"fixed sequences at the training blank span {task.settings.blank}:"))
    files = [*plots.activation_heatmap(model, x[:4], figs, tokens=x[:4]),
             *plots.activation_by_symbol(model, x, x, figs)]
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

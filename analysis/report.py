"""The sweep report: tables, statistics and figures in one Markdown + HTML document, logged to the sweep's parent
run so it opens from the MLflow UI (report/report.html: self-contained, figures embedded; see document.py).

The document is built as a list of blocks (heading, paragraph, table, image, code) rendered twice, to Markdown
and to HTML, so both always say the same. What the report decides, and says in its "How to read" section:

- intervals only where a cell has >= 3 values; with fewer, the mean and n (an interval from 2 seeds says nothing);
- bold ("best") only where it is supported: every group has >= 3 values, the best group's interval is clear of
  every other group's and of the metric's chance level (analysis.metrics); never for a model at chance;
- p values only where the test can reach p < 0.05, effect sizes only with >= 3 values a side;
- each distinct warning or note once, with the tables it concerns, instead of under every table.

The report reads what sweeps wrote (MLflow, its Parquet export) and imports nothing from sweeps but sweeps.keys:
no torch, ray or rims_core. Its sections are in sections.py, its figures in report_figures.py; the unit figures
come from a caller-given ``unit_activations`` function (see report_figures.py).
"""

from __future__ import annotations

import json
import shlex
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweeps.keys import TAG_GIT_DIRTY, TAG_GIT_SHA, TAG_SPEC_PATH, TAG_SWEEP, TASK_KEYS, TaskKeys

from .ablation import ablation_table
from .comparisons import paired_comparisons
from .conditions import condition_blocks
from .curves import eval_conditions
from .document import Block, to_html, to_markdown
from .export import check_tracking_uri, export_experiment
from .paper import paper_table
from .report_figures import UnitActivations, figure_blocks
from .schema import METRICS_FILE, RUNS_FILE
from .sections import Caveats, how_to_read, iqm_blocks, main_effect_blocks, metrics_blocks

__all__ = ["Block", "ReportResult", "UnitActivations", "build_report", "select_sweep"]


@dataclass
class ReportResult:
    """What build_report wrote: report.md, report.html, the figure files, and the parent run it logged them to."""

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


def build_report(experiment: str, tracking_uri: str, out_dir: str | Path | None = None, *,
                 sweep_id: str | None = None, log: bool = True,
                 unit_activations: UnitActivations | None = None) -> ReportResult:
    """Export the experiment, build tables and figures for one sweep (default: the newest), write report.md,
    report.html (self-contained) and spec.yaml under out_dir (default reports/<experiment>), and log the report
    and its figures to the sweep's parent run (artifacts report/).

    tracking_uri: an absolute URI (sqlite:////abs/mlflow.db, file:///abs/mlruns, http://host:port), as
    ``sweeps.tracking.absolute_tracking_uri`` gives; a relative sqlite or file URI raises ValueError, so that the
    report, its Reproduce commands and the export manifest never hold a path that depends on the working
    directory. unit_activations: ``(run_id, n) -> (tokens (N, T), active (N, T, K)) | None`` for the unit figures of a
    copying sweep (``functools.partial(sweeps.activations.unit_activations, tracking_uri=uri)``); None: those
    figures are left out, and the report says why.
    """
    uri = check_tracking_uri(tracking_uri, "build_report")
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
    objective, mode = TASK_KEYS[task_name].objective if task_name in TASK_KEYS else ("val/ce", "min")
    exp_id = children["experiment_id"][0].as_py() if "experiment_id" in children.column_names else None
    caveats = Caveats()
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
    effects, factors = main_effect_blocks(children, table.rows, objective, task_name)
    body += effects
    if task_name in TASK_KEYS and TASK_KEYS[task_name].rl:
        body += iqm_blocks(children, table.rows, objective)
        body += condition_blocks(children, objective, _train_condition(children, TASK_KEYS[task_name]))
    if {"rims"} < kinds and "lstm" in kinds:
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
    figures, fig_blocks = figure_blocks(runs, metrics, children, table.rows, factors, objective, mode, task_name,
                                        kinds, unit_activations, figs, out)
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
              *metrics_blocks(task_name, children, objective), how_to_read(), *caveats.blocks(), *body]
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


def _train_condition(children: pa.Table, keys: TaskKeys) -> str | None:
    """The training condition's name from the first run's task.* params (TaskKeys.train_condition)."""
    if not keys.train_condition:
        return None
    params = {c.removeprefix("task."): children[c][0].as_py() for c in children.column_names if c.startswith("task.")}
    try:
        return keys.train_condition.format(**params)
    except (KeyError, IndexError):
        return None


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

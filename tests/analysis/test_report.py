"""The sweep report from real runs: written as Markdown and self-contained HTML, with tables and non-empty figures,
metrics explained with their chance levels, each warning once, a runnable Reproduce block, and logged to the
sweep's parent run. The report in a real browser inside the MLflow UI: test_report_browser.py."""

from __future__ import annotations

import base64
import functools
import math
import re

import pytest
from mlflow.tracking import MlflowClient

from analysis.report import build_report
from sweeps.activations import unit_activations
from sweeps.evaluate import evaluate_run
from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial

pytestmark = pytest.mark.slow  # real trials and a real report: about 30 s here

SPEC = {"name": "rep", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}}
SPEC_TEXT = "name: rep\ntask: {name: copying}\n"


def make_sweep(root, rim_configs=((3, 2),), seeds=(0, 1), uri=None):
    """A sweep of tiny copying trials: the RIM configurations (num_units, top_k) and an LSTM, each seed; in a
    sqlite store under root unless uri names a store. Returns (uri, parent run id, experiment id)."""
    uri = uri or f"sqlite:///{root / 'mlflow.db'}"
    sweeper = SweepTracker(uri, "rep")
    parent = sweeper.start("rep-1", {"search.algorithm": "grid", "smoke": False}, {"rims.git_sha": "abc123"},
                           SPEC_TEXT)
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
           "sweep_id": "rep-1", "seeds": list(seeds), "tags": {}, "cpus": 1}
    base = base_config(load_spec(SPEC))
    points = [{"model.kind": "rims", "model.num_units": u, "model.top_k": k} for u, k in rim_configs]
    for i, point in enumerate([*points, {"model.kind": "lstm"}]):
        for seed in seeds:
            run_trial(resolve({**base, **point, "seed": seed}), ctx, trial_id=f"{i}-{seed}", checkpoint_dir=None,
                      report=lambda m, d: None)
    return uri, parent, sweeper.experiment_id


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri, parent, _ = make_sweep(root, rim_configs=((3, 1), (3, 2), (4, 1), (4, 2)))
    traced = functools.partial(unit_activations, tracking_uri=uri)  # as `rims analyze report` passes it
    return root, uri, parent, build_report("rep", uri, root / "out", unit_activations=traced)


def test_report_is_written_with_tables_and_figures_and_logged_to_the_parent(sweep):
    _, uri, parent, res = sweep
    md = res.markdown.read_text()
    assert "Unit activation of the RIM trial with the best val/ce (run " in md
    assert "on fixed sequences at the training blank span 3:" in md
    assert "## Ablation table" in md and "| model.kind |" in md
    assert "| model | k_T | k_A | h | n | train CE (3) | test CE (6) |" in md  # the paper's layout
    assert "Against the LSTM baseline: val/ce" in md and "Against the LSTM baseline: eval/ce_blank6" in md
    assert "Against the LSTM baseline: eval/ce_all" not in md  # the objective's measure (ce) only, not ce_all
    assert "name: rep" in md  # the spec
    pngs = [f for f in res.figures if f.suffix == ".png"]
    assert any("learning_curves" in f.name for f in pngs) and any("unit_activation" in f.name for f in pngs)
    assert all(f.stat().st_size > 1000 for f in pngs)
    assert res.parent_run_id == parent
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/figures"} <= logged
    figures = {a.path.rsplit("/", 1)[1] for a in MlflowClient(uri).list_artifacts(parent, "report/figures")}
    assert {f.name for f in res.figures} <= figures


def test_html_is_self_contained_with_every_figure_embedded(sweep):
    res = sweep[3]
    md, page = res.markdown.read_text(), res.html.read_text()
    shown = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(shown) == 7  # learning curves, 3 OOD curves (acc, ce, ce_all), RIM importance, 2 unit figures
    srcs = re.findall(r"<img src='([^']+)' alt='[^']*' data-file='([^']+)'>", page)
    assert [f for _, f in srcs] == shown, "every Markdown figure is in the HTML, in the same order"
    for src, rel in srcs:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"  # MLflow shows the HTML from a blob: URL: relative paths break
        assert base64.b64decode(data) == (res.markdown.parent / rel).read_bytes()
    assert "src='figures/" not in page and "<table>" in page and "<figcaption>" in page


def test_metrics_are_explained_with_their_chance_levels(sweep):
    md = sweep[3].markdown.read_text()
    section = md.split("## Metrics and chance levels", 1)[1].split("\n## ", 1)[0]
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in section.splitlines() if ln.startswith("| ") and "--" not in ln}
    assert {"ce", "ce_all", "acc"} <= set(rows)
    assert f"ln 8 = {math.log(8):.3f}" in rows["ce"] and "1/8 = 0.125" in rows["acc"]
    assert "n ln 8 / (blank + 2n)" in rows["ce_all"] and "no upper bound" in rows["ce_all"]
    # each table ends with the chance level of its columns: ce_all at blank 6 (L = 26): 10 ln 8 / 26
    chance = next(ln for ln in md.splitlines() if ln.startswith("| chance level |"))
    assert f"{10 * math.log(8) / 26:.3f}" in chance and f"{math.log(8):.3f}" in chance and "0.125" in chance


def test_warnings_are_listed_once_and_unsupported_statistics_are_not_printed(sweep):
    md = sweep[3].markdown.read_text()
    warnings = [ln for ln in md.splitlines() if ln.startswith("- warning:")]
    assert warnings and len(warnings) == len(set(warnings))
    head, tables = md.split("## Ablation table", 1)
    assert "## Warnings and notes" in head and "- warning:" not in tables and "- note:" not in tables
    assert any("all 4 comparisons" in w and "3 tables" in w for w in warnings)  # 3 metrics x 4 comparisons
    # 2 seeds: no interval, no bold, no p (it cannot go below 0.5), no effect size
    assert "±" not in tables.split("## Figures")[0] and "**" not in tables.split("## Figures")[0]
    assert "n/a: min p 0.5" in md and "n/a: n=2" in md and "d_z =" not in md
    assert "no best marked (n < 3 in some group): every column" in md


def test_importance_is_drawn_among_the_rim_runs_with_the_main_effects(sweep):
    res = sweep[3]
    md = res.markdown.read_text()
    assert "## Main effects: val/ce" in md and "Seed noise, for scale:" in md
    assert "No importance over all runs: among the params every run sets, only model.kind varies" in md
    assert "figures/param_importance_rims_val_ce.png" in md
    assert "Among the RIM runs (those of the main effects): model.num_units, model.top_k." in md
    assert not any(f.name == "param_importance_val_ce.png" for f in res.figures)  # 1 by construction: not drawn


def test_reproduce_names_the_spec_the_sweep_ran(sweep):
    root, uri, parent, res = sweep
    md = res.markdown.read_text()
    block = md.split("## Reproduce", 1)[1]
    spec = root / "out" / "spec.yaml"
    assert spec.read_text() == SPEC_TEXT  # the parent run's spec.yaml, written beside the report
    assert f"rims sweep run {spec} --mlflow-uri {uri}" in block and "SPEC.yaml" not in md
    assert f"mlflow artifacts download --run-id {parent} --artifact-path spec.yaml" in block
    assert "git checkout abc123" in block
    assert f"rims analyze report --experiment rep --mlflow-uri {uri} --sweep-id rep-1" in block


def test_report_after_rims_eval_of_some_runs(tmp_path):
    """`rims eval` adds a condition to one run: its cells say n=1 (no CI, never bold), no group reads n=0."""
    uri, _, exp = make_sweep(tmp_path)
    client = MlflowClient(uri)
    rims = client.search_runs([exp], "tags.`rims.trial_id` = '0-0'")[0]
    history = [m.step for m in client.get_metric_history(rims.info.run_id, "val/ce")]
    res = evaluate_run(rims.info.run_id, {"task.test_blanks": [12]}, uri)
    assert set(res.logged) == {"eval/ce_blank12", "eval/ce_all_blank12", "eval/acc_blank12"} and res.step == 4
    assert [m.step for m in client.get_metric_history(rims.info.run_id, "val/ce")] == history  # no duplicate
    md = build_report("rep", uri, tmp_path / "out").markdown.read_text()
    table = md.split("## Ablation table", 1)[1].split("\n## ", 1)[0]
    row = next(ln for ln in table.splitlines() if ln.startswith("| rims |"))
    value = res.logged["eval/ce_blank12"]
    assert f"| {value:.3f} (n=1, no CI) |" in row and f"**{value:.3f}" not in md
    lstm = next(ln for ln in table.splitlines() if ln.startswith("| lstm |"))
    assert lstm.split(" | ")[3] == "2"  # the n column: 2 runs
    assert "n=0" not in md and "no runs" not in md
    assert "eval/ce_blank12 (1 of 4 runs)" in md
    assert "figures/ood_ce.png" in md
    # built without a unit_activations function: the unit figures are left out, and the report says why
    assert "No unit figures: build_report was given no unit_activations function" in md
    assert "unit_activation.png" not in md and "activation_by_symbol" not in md


def test_unknown_experiment_names_those_that_exist(sweep):
    root, uri, _, _ = sweep
    with pytest.raises(ValueError, match="rep"):
        build_report("nope", uri, root / "nope")


def test_select_sweep_takes_one_several_or_all_sweeps():
    import pyarrow as pa

    from analysis.report import select_sweep

    runs = pa.table({"run_id": ["p1", "a", "p2", "b", "c"], "parent_run_id": [None, "p1", None, "p2", "p2"],
                     "rims.sweep_id": ["s1", "s1", "s2", "s2", "s2"], "start_time": [1, 2, 3, 4, 5]})
    chosen, sweep, parent = select_sweep(runs, None)
    assert sweep == "s2" and parent == "p2" and chosen["run_id"].to_pylist() == ["p2", "b", "c"]
    chosen, _, parent = select_sweep(runs, "s1,s2")
    assert chosen.num_rows == 5 and parent is None
    assert select_sweep(runs, "all")[0].num_rows == 5
    with pytest.raises(ValueError, match=r"no sweep 's3'.*'s1', 's2'"):
        select_sweep(runs, "s1,s3")

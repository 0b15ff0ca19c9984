"""The sweep report from real runs: written as Markdown and HTML, with tables and non-empty figures, and logged
to the sweep's parent run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from analysis.report import build_report
from sweeps.space import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial

SPEC = {"name": "rep", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sweeper = SweepTracker(uri, "rep")
    parent = sweeper.start("rep-1", {"search.algorithm": "grid"}, {}, "name: rep\ntask: {name: copying}\n")
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
           "sweep_id": "rep-1", "seeds": [0, 1], "tags": {}, "cpus": 1}
    base = base_config(load_spec(SPEC))
    for kind in ("rims", "lstm"):
        for seed in (0, 1):
            flat = resolve({**base, "model.kind": kind, "seed": seed})
            run_trial(flat, ctx, trial_id=f"{kind}-{seed}", checkpoint_dir=None, report=lambda m, d: None)
    return root, uri, parent


def test_report_is_written_with_tables_and_figures_and_logged_to_the_parent(sweep):
    root, uri, parent = sweep
    res = build_report("rep", uri, root / "out")
    md = res.markdown.read_text()
    assert "## Ablation table" in md and "| model.kind |" in md
    assert "| model | k_T | k_A | h | n | train CE (3) | test CE (6) |" in md  # the paper's layout
    assert "Against the LSTM baseline" in md
    assert "## Main effects: val/ce" not in md  # one RIM configuration: no factor to speak of
    assert "name: rep" in md  # the spec
    html = res.html.read_text()
    assert "<table>" in html and "<img src='figures/" in html
    pngs = [f for f in res.figures if f.suffix == ".png"]
    assert any("learning_curves" in f.name for f in pngs) and any("unit_activation" in f.name for f in pngs)
    assert all(f.stat().st_size > 1000 for f in pngs)
    assert res.parent_run_id == parent
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/figures"} <= logged


def test_unknown_experiment_names_those_that_exist(sweep):
    root, uri, _ = sweep
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

"""Real sweeps on a local Ray instance, tracked in a real MLflow store: the hierarchy, names, tags and
failure handling; and a bad spec that starts nothing."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from sweeps.runner import run_sweep
from sweeps.spec import load_spec

pytestmark = pytest.mark.integration

TASK = {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16}
MODEL = {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2}
OPTIM = {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def children(uri: str, experiment_id: str, sweep_id: str):
    return MlflowClient(uri).search_runs(
        [experiment_id], filter_string=f"tags.`rims.sweep_id` = '{sweep_id}' and tags.`mlflow.parentRunId` != ''")


def test_grid_sweep_hierarchy_names_tags_and_failures(tmp_path, local_ray):
    raw = {"name": "grid", "task": TASK, "model": MODEL, "optim": {**OPTIM, "grad_clip": 1e30},
           "stop": {"time_budget_s": 600},
           "space": {"model.kind": {"grid": ["rims", "lstm"]}, "optim.lr": {"grid": [0.01, 1e30]}}}
    text = yaml.safe_dump(raw)
    res = run_sweep(load_spec(raw), text, mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", quiet=True)
    # lr 1e30 overflows the RIM's attention scores to NaN within a step; the LSTM's saturating gates stay finite
    assert res.counts["trials"] == 4 and res.counts["errored"] == 0 and res.counts["failed"] >= 1
    assert res.counts["completed"] + res.counts["failed"] == 4
    assert len(res.failures) == res.counts["failed"] and all("non-finite loss" in f for f in res.failures)
    client = MlflowClient(res.tracking_uri)
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["search.algorithm"] == "grid"
    assert parent.data.metrics["sweep/failed"] == res.counts["failed"]
    assert {a.path for a in client.list_artifacts(res.parent_run_id)} == {"spec.yaml", "summary.json"}
    runs = children(res.tracking_uri, res.experiment_id, res.sweep_id)
    assert len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {res.parent_run_id}
    statuses = {(r.data.params["model.kind"], r.data.params["optim.lr"]): r for r in runs}
    assert set(statuses) == {("rims", "0.01"), ("rims", "1e+30"), ("lstm", "0.01"), ("lstm", "1e+30")}
    assert statuses[("rims", "1e+30")].info.status == "FAILED"
    assert "non-finite loss" in statuses[("rims", "1e+30")].data.tags["rims.failure"]
    for key in (("rims", "0.01"), ("lstm", "0.01")):
        r = statuses[key]
        assert r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/ce")] == [2, 4]
    for r in runs:
        assert r.data.tags["rims.version.torch"] and r.data.tags["rims.git_sha"]
    assert (res.path / "sweep.json").exists()


def test_optuna_with_asha_and_seeds(tmp_path, local_ray):
    raw = {"name": "tpe", "task": TASK, "model": MODEL, "optim": {**OPTIM, "max_steps": 6}, "seeds": 2,
           "space": {"model.top_k": {"int": [1, 3]}, "optim.lr": {"loguniform": [1e-3, 1e-1]}},
           "search": {"algorithm": "optuna", "num_samples": 3}, "scheduler": {"name": "asha"}, "max_concurrent": 2}
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", quiet=True)
    assert res.counts["trials"] == 6 and res.counts["errored"] == 0
    assert res.counts["completed"] + res.counts["stopped_early"] == 6
    runs = children(res.tracking_uri, res.experiment_id, res.sweep_id)
    assert len(runs) == 6
    by_config: dict[str, list[str]] = {}
    for r in runs:
        assert 1 <= int(r.data.params["model.top_k"]) <= 3
        by_config.setdefault(r.data.tags["rims.config_id"], []).append(r.data.params["seed"])
    assert all(sorted(seeds) == ["0", "1"] for seeds in by_config.values())  # every configuration x every seed
    assert (res.path / "optuna.db").exists()


def test_bad_spec_starts_nothing_and_creates_no_run(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "task": TASK, "model": {**MODEL, "top_k": 4}}))
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", "run", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert "model.hidden_size" in proc.stderr or "model.top_k" in proc.stderr, proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_validate_prints_the_trials(tmp_path):
    spec = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "copying_demo.yaml"
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", "validate", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "18 trials (9 configurations x 2 seeds)" in proc.stdout
    assert "model.kind=lstm  seed=1" in proc.stdout


def test_missing_mnist_dir_is_refused_before_any_run(tmp_path):
    spec = tmp_path / "smnist.yaml"
    spec.write_text(yaml.safe_dump({"name": "sm", "task": {"name": "smnist", "source": "mnist",
                                                           "data_dir": str(tmp_path / "nowhere")}}))
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", "run", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert "task.data_dir" in proc.stderr and "no such directory" in proc.stderr and "yann.lecun.com" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_stopping_rule_ends_trials_early_and_marks_their_runs(tmp_path, local_ray):
    raw = {"name": "stop", "task": TASK, "model": MODEL, "optim": OPTIM, "seeds": 2,
           "stop": {"metric": "val/ce", "threshold": 100.0, "mode": "min"}}  # met at the first report
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", quiet=True)
    assert res.counts == {"trials": 2, "completed": 0, "stopped_early": 2, "failed": 0, "errored": 0}
    client = MlflowClient(res.tracking_uri)
    for r in children(res.tracking_uri, res.experiment_id, res.sweep_id):
        assert r.data.tags["rims.stopped_early"] == "true" and r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/ce")] == [2]


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_sweep_goes_on(tmp_path, local_ray):
    # blank 10**11 asks for terabytes when the task builds its evaluation data: the trial raises at its start
    raw = {"name": "raises", "task": TASK, "model": MODEL, "optim": OPTIM, "max_failures": 0,
           "space": {"task.blank": {"grid": [3, 10**11]}}}
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", quiet=True)
    assert res.counts["trials"] == 2 and res.counts["completed"] == 1 and res.counts["errored"] == 1
    assert len(res.failures) == 1 and "allocate" in res.failures[0]
    runs = {r.data.params["task.blank"]: r for r in children(res.tracking_uri, res.experiment_id, res.sweep_id)}
    assert runs["3"].info.status == "FINISHED"
    assert runs[str(10**11)].info.status == "FAILED" and "allocate" in runs[str(10**11)].data.tags["rims.failure"]
    summary = json.loads(Path(MlflowClient(res.tracking_uri).download_artifacts(
        res.parent_run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["counts"]["errored"] == 1 and "allocate" in summary["failures"][0]


def test_max_concurrent_limits_a_grid_sweep(tmp_path, local_ray):
    # resources allow 4 trials at once (0.5 CPU each on 2 CPUs); max_concurrent 1 must run them one by one
    raw = {"name": "one", "task": TASK, "model": MODEL, "optim": OPTIM, "seeds": 3, "max_concurrent": 1,
           "resources": {"cpu": 0.5}}
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", quiet=True)
    assert res.counts["completed"] == 3
    runs = sorted(children(res.tracking_uri, res.experiment_id, res.sweep_id), key=lambda r: r.info.start_time)
    assert all(a.info.end_time <= b.info.start_time for a, b in itertools.pairwise(runs)), \
        [(r.info.start_time, r.info.end_time) for r in runs]

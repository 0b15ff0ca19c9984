"""Real sweeps on a local Ray instance, tracked in a real MLflow store: the hierarchy, names, tags and
failure handling; and a bad spec that starts nothing."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from rims_cli.main import main
from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.tracking import run_name

from .servers import free_port, wait_http, wait_until

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


def test_a_clean_sweep_names_runs_after_what_differs_and_fails_none(tmp_path, local_ray, capsys):
    """Every run, the parent's included, ends FINISHED without a failure tag; trial runs are named after the
    varied keys and the seed (unique, a function of the configuration); the progress shows those keys as
    columns under their dotted names and stays short."""
    raw = {"name": "clean", "task": TASK, "model": MODEL, "optim": OPTIM, "seeds": 2,
           "space": {"model.kind": {"grid": ["rims", "lstm"]}, "model.comm.enabled": {"grid": [True, False]}}}
    before = set(ray._private.state.actors())
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", spec_path="specs/clean.yaml")
    out = capsys.readouterr().out
    # the trials' actors end themselves when Tune stops them: none is SIGTERMed (a SIGTERM that lands while the
    # worker runs Python prints a "SystemExit: 1" traceback before the summary)
    def ended() -> dict:
        actors = {k: a for k, a in ray._private.state.actors().items() if k not in before}
        return actors if actors and all(a["State"] == "DEAD" for a in actors.values()) else {}

    causes = [str(a.get("DeathCause")) for a in wait_until(ended, "the trials' actors to end").values()]
    assert causes and all("INTENDED_USER_EXIT" in c and "SIGTERM" not in c for c in causes), causes
    assert res.counts == {"trials": 6, "completed": 6, "stopped_early": 0, "failed": 0, "errored": 0}
    client = MlflowClient(res.tracking_uri)
    runs = client.search_runs([res.experiment_id], filter_string=f"tags.`rims.sweep_id` = '{res.sweep_id}'")
    assert len(runs) == 7
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert [r.data.tags["rims.failure"] for r in runs if "rims.failure" in r.data.tags] == []
    assert client.get_run(res.parent_run_id).info.status == "FINISHED"
    assert client.get_run(res.parent_run_id).data.tags["rims.spec_path"] == "specs/clean.yaml"  # the report's Reproduce
    kids = children(res.tracking_uri, res.experiment_id, res.sweep_id)
    names = {r.info.run_name for r in kids}
    assert names == {"rims comm.enabled=true seed=0", "rims comm.enabled=true seed=1",
                     "rims comm.enabled=false seed=0", "rims comm.enabled=false seed=1",
                     "lstm seed=0", "lstm seed=1"}
    for r in kids:  # the name is a function of what the run's params say
        params = {k: yaml.safe_load(v) for k, v in r.data.params.items()}
        assert r.info.run_name == run_name(params, ["model.kind", "model.comm.enabled"])
    # the progress: one line per change of statuses, then one table with the dotted keys as columns
    header = next(line for line in out.splitlines() if line.startswith("trial "))
    assert header.split() == ["trial", "status", "model.kind", "model.comm.enabled", "seed", "step", "val/ce"]
    assert all(sum(line.startswith(name + " ") for line in out.splitlines()) == 1 for name in names)
    assert "'seed': 0}" not in out and "train_trial_" not in out
    assert len(out.splitlines()) < 25, out


def test_optuna_with_asha_and_seeds(tmp_path, local_ray, capsys):
    raw = {"name": "tpe", "task": TASK, "model": MODEL, "optim": {**OPTIM, "max_steps": 6}, "seeds": 2,
           "space": {"model.top_k": {"int": [1, 3]}, "optim.lr": {"loguniform": [1e-3, 1e-1]}},
           "search": {"algorithm": "optuna", "num_samples": 3}, "scheduler": {"name": "asha"}, "max_concurrent": 2}
    spec = tmp_path / "tpe.yaml"
    spec.write_text(yaml.safe_dump(raw))
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
    # the study, as `rims sweep dashboard` shows it, opens with Optuna's own loader under the spec's names
    assert main(["sweep", "dashboard", str(spec), "--storage-path", str(tmp_path / "results"), "--print-only"]) == 0
    shown = capsys.readouterr().out
    url = next(w for w in shown.split() if w.startswith("sqlite:///"))
    assert res.study == (url, "tpe") and f"optuna-dashboard {url}" in shown
    study = optuna.load_study(study_name="tpe", storage=url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert {k for t in complete for k in t.params} == {"model.top_k", "optim.lr"}
    assert {(str(t.params["model.top_k"]), repr(t.params["optim.lr"])) for t in complete} == {
        (top_k, repr(float(lr))) for top_k, lr in {(r.data.params["model.top_k"], r.data.params["optim.lr"])
                                                   for r in runs}}
    # and optuna-dashboard itself serves it, as `rims sweep dashboard` starts it
    port = free_port()
    dash = subprocess.Popen([str(Path(sys.executable).parent / "rims"), "sweep", "dashboard", str(spec),
                             "--storage-path", str(tmp_path / "results"), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/studies", alive=dash)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
            (summary,) = json.load(r)["study_summaries"]
        assert summary["study_name"] == "tpe"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0",
                                    timeout=30) as r:
            shown = json.load(r)["trials"]
        assert {p["name"] for t in shown for p in t["params"]} == {"model.top_k", "optim.lr"}
    finally:
        os.killpg(dash.pid, signal.SIGKILL)
        dash.wait()


def test_bad_spec_starts_nothing_and_creates_no_run(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "bad", "task": TASK, "model": {**MODEL, "top_k": 4}}))
    proc = subprocess.run([sys.executable, "-m", "rims_cli", "sweep", "run", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert "model.hidden_size" in proc.stderr or "model.top_k" in proc.stderr, proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_validate_prints_the_trials(tmp_path):
    spec = Path(__file__).resolve().parents[2] / "sweeps" / "specs" / "copying_demo.yaml"
    proc = subprocess.run([sys.executable, "-m", "rims_cli", "sweep", "validate", str(spec)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "18 trials (3 configurations x 6 seeds)" in proc.stdout
    assert "model.kind=lstm  seed=5" in proc.stdout


def test_missing_mnist_dir_is_refused_before_any_run(tmp_path):
    spec = tmp_path / "smnist.yaml"
    spec.write_text(yaml.safe_dump({"name": "sm", "task": {"name": "smnist", "source": "mnist",
                                                           "data_dir": str(tmp_path / "nowhere")}}))
    proc = subprocess.run([sys.executable, "-m", "rims_cli", "sweep", "run", str(spec)], cwd=tmp_path,
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


def test_max_concurrent_limits_a_grid_sweep(tmp_path, local_ray, capsys):
    # resources allow 4 trials at once (0.5 CPU each on 2 CPUs); max_concurrent 1 must run them one by one
    raw = {"name": "one", "task": TASK, "model": MODEL, "optim": OPTIM, "seeds": 3, "max_concurrent": 1,
           "resources": {"cpu": 0.5}}
    res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                    storage_path=tmp_path / "results", verbose=True)
    assert res.counts["completed"] == 3
    tables = [ln for ln in capsys.readouterr().out.splitlines() if ln.split()[:2] == ["trial", "status"]]
    assert len(tables) >= 2, "verbose: the table at the start and at every report, not only at the end"
    runs = sorted(children(res.tracking_uri, res.experiment_id, res.sweep_id), key=lambda r: r.info.start_time)
    assert all(a.info.end_time <= b.info.start_time for a, b in itertools.pairwise(runs)), \
        [(r.info.start_time, r.info.end_time) for r in runs]

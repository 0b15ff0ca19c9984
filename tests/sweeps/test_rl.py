"""RL through the sweep machinery: an atari spec on Ray Tune and ``rims rl train``, logged to a real
``mlflow server`` under the same names as supervised sweeps; bad RL input refused before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from analysis.export import export_experiment
from analysis.report import build_report
from analysis.tables import ablation_table
from sweeps.evaluate import evaluate_run
from sweeps.runner import run_sweep
from sweeps.spec import SpecError, load_spec

from .servers import mlflow_server

pytestmark = pytest.mark.integration
RIMS = str(Path(sys.executable).parent / "rims")
SPEC = {"name": "pong_smoke", "task": {"name": "atari", "env": "ALE/Pong-v5"},
        "model": {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2},
        "space": {"model.kind": {"grid": ["rims", "lstm"]}}}


@pytest.mark.slow
def test_atari_spec_on_tune_logs_like_a_supervised_sweep(tmp_path):
    with mlflow_server(tmp_path / "store") as uri:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            res = run_sweep(load_spec(SPEC), yaml.safe_dump(SPEC), mlflow_uri=uri, storage_path=tmp_path / "results",
                            smoke=True, quiet=True)
        finally:
            ray.shutdown()
        assert res.counts["completed"] == 2 and res.counts["errored"] == 0, res.failures
        client = MlflowClient(uri)
        parent = client.get_run(res.parent_run_id)
        assert parent.data.params["task.name"] == "atari"
        assert parent.data.params["search.metric"] == "val/episode_return_mean" and parent.data.params[
            "search.mode"] == "max"
        runs = {r.data.params["model.kind"]: r for r in client.search_runs(
            [res.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")}
        assert set(runs) == {"rims", "lstm"}
        for kind, run in runs.items():
            assert run.info.status == "FINISHED"
            p = run.data.params
            # every PPO setting is a param, defaults included, under the spec's names
            assert (p["task.env"], p["task.clip_param"], p["task.num_envs"], p["optim.lr"]) == \
                ("ALE/Pong-v5", "0.1", "2", "0.00025")
            m = run.data.metrics
            assert m["step"] == 64 and -21 <= m["val/episode_return_mean"] <= 21
            assert {"sys/env_steps_per_s", "train/policy_loss", "model/num_params"} <= set(m)
            assert any(k.startswith("rims/active_frac/") for k in m) == (kind == "rims")
            assert [h.step for h in client.get_metric_history(run.info.run_id, "val/episode_return_mean")] == [64]
        # the analysis path reads RL sweeps as it reads the others
        export_experiment("pong_smoke", tmp_path / "export", uri)
        import pyarrow.parquet as pq

        table = ablation_table(pq.read_table(tmp_path / "export" / "runs.parquet"),
                               metrics=["val/episode_return_mean"])
        assert sorted(k[0] for k in table.keys) == ["lstm", "rims"] and table.n == [1, 1]
        assert table.directions["val/episode_return_mean"] == "max", "a return is maximised"
        with pytest.raises(ValueError, match="trained by reinforcement learning"):
            evaluate_run(runs["rims"].info.run_id, {}, uri)
        report = build_report("pong_smoke", uri, tmp_path / "report")
        text = Path(report.markdown).read_text()
        assert "objective val/episode_return_mean (max)" in text
        assert "## Interquartile mean over seeds: val/episode_return_mean" in text
        iqm_rows = [ln for ln in text.splitlines() if ln.startswith("| ALE/Pong-v5 |")]
        assert sorted(r.split(" | ")[1] for r in iqm_rows) == ["lstm", "rims"]


@pytest.mark.slow
def test_rims_rl_train_smoke_and_resume(tmp_path):
    with mlflow_server(tmp_path / "store") as uri:
        out = tmp_path / "pong"
        cmd = [RIMS, "rl", "train", "--env", "ALE/Pong-v5", "--model", "rims", "--num-units", "4", "--top-k", "2",
               "--hidden-size", "32", "--mlflow-uri", uri, "--out", str(out), "--smoke"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "pong-rims-s0: completed" in done.stdout
        assert (out / "trials" / "00000" / "checkpoint" / "algo").is_dir()
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("atari")
        runs = client.search_runs([exp.experiment_id])
        child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId"))
        assert child.info.status == "FINISHED" and child.data.params["model.top_k"] == "2"
        assert child.data.metrics["step"] == 64
        assert child.info.run_name == "rims seed=0"
        # where the run is: experiment, run id, and the runs table of the server (not its GenAI overview)
        where = (f"MLflow: experiment 'atari' (id {exp.experiment_id}), run {child.info.run_id} 'rims seed=0' "
                 f"under parent run {child.data.tags['mlflow.parentRunId']}")
        assert where in done.stdout, done.stdout
        assert f"browse: {uri}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}" in done.stdout
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (f"pong-rims-s0: already finished at step 64; nothing trained (delete {out} or use a new --out to "
                "train again)") in again.stdout, again.stdout
        assert where in again.stdout
        assert len(client.search_runs([exp.experiment_id])) == 2, "a finished run is not trained or logged again"


@pytest.mark.slow
def test_rims_rl_train_says_where_a_local_store_is(tmp_path):
    """With the default store (sqlite in the working directory) the run's file and the `mlflow ui` command
    that serves it are printed; a rerun after the run finished trains nothing and says so."""
    out = tmp_path / "pong"
    cmd = [RIMS, "rl", "train", "--model", "lstm", "--hidden-size", "16", "--out", str(out), "--smoke"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    (child,) = [r for r in client.search_runs([client.get_experiment_by_name("atari").experiment_id])
                if r.data.tags.get("mlflow.parentRunId")]
    assert f"run {child.info.run_id} 'lstm seed=0'" in done.stdout
    assert f"store: {db}" in done.stdout
    assert (f"browse: mlflow ui --backend-store-uri sqlite:///{db} --host 127.0.0.1 --port 5000, then "
            f"http://127.0.0.1:5000/#/experiments/") in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert "already finished at step 64; nothing trained" in again.stdout and "completed" not in again.stdout


@pytest.mark.parametrize("args,expected", [
    (["--env", "ALE/Pongg-v5"], "--env (task.env): Expected an ALE game id like 'ALE/Pong-v5', got 'ALE/Pongg-v5'; "
                                "did you mean 'ALE/Pong-v5'"),
    (["--env", "CartPole-v1"], "--env (task.env): Expected an ALE game id"),
    (["--top-k", "7"], "--top-k (model.top_k): top_k must be <= num_units, got top_k=7 > num_units=6"),
    (["--hidden-size", "100"], "--hidden-size (model.hidden_size): Expected hidden_size to be divisible by num_units"),
    (["--minibatch-size", "2048"], "--minibatch-size (optim.batch_size): Expected a PPO minibatch <= num_envs x "
                                   "rollout_length = 1024, got 2048"),
    (["--num-envs", "0"], "--num-envs (task.num_envs): Input should be greater than or equal to 1"),
])
def test_bad_rl_input_fails_before_anything_starts(tmp_path, args, expected):
    out = tmp_path / "out"
    done = subprocess.run([RIMS, "rl", "train", *args, "--out", str(out), "--mlflow-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr
    assert not out.exists() and not (tmp_path / "m.db").exists(), "no results folder, no tracking store"


def test_an_atari_spec_with_a_gru_baseline_or_bad_task_key_is_refused():
    with pytest.raises(SpecError, match=r"model.kind: Expected 'rims' or 'lstm' for PPO"):
        load_spec({**SPEC, "space": {"model.kind": {"grid": ["rims", "gru"]}}})
    with pytest.raises(SpecError, match=r"task.clip: unknown key, not permitted \(value 0.2\); did you mean "
                                        r"'task.clip_param'\?"):
        load_spec({**SPEC, "task": {**SPEC["task"], "clip": 0.2}})
    spec = load_spec(SPEC)
    assert (spec.optim.lr, spec.optim.batch_size, spec.optim.grad_clip) == (2.5e-4, 256, 0.5), "PPO's defaults"

"""``rims rl train``: PPO as a one-trial sweep, logged to a real ``mlflow server`` and resumed by running the same
command again; bad input refused before anything starts, naming the flag typed; ``--kind`` (``--model`` is its
deprecated alias)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rims_cli.main import build_parser
from rims_cli.rl import train_spec
from tests.sweeps.servers import mlflow_server

pytestmark = pytest.mark.integration
RIMS = str(Path(sys.executable).parent / "rims")


def test_kind_is_model_kind_and_a_baseline_gets_no_rim_keys():
    args = build_parser().parse_args(["rl", "train", "--kind", "lstm", "--hidden-size", "64", "--seed", "3"])
    spec = train_spec(args)
    assert spec["model"] == {"kind": "lstm", "hidden_size": 64}
    assert spec["name"] == "pong-lstm-s3" and spec["seeds"] == [3]
    rims = train_spec(build_parser().parse_args(["rl", "train"]))
    assert rims["model"] == {"kind": "rims", "hidden_size": 600, "num_units": 6, "top_k": 4, "cell": "lstm"}


def test_model_is_a_deprecated_alias_of_kind(capsys):
    args = build_parser().parse_args(["rl", "train", "--model", "lstm"])
    assert args.kind == "lstm"
    assert ("rims rl train: --model is deprecated and will be removed in the next release; use --kind"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rl", "train", "--model", "gru"])
    assert "argument --model: invalid choice: 'gru'" in capsys.readouterr().err


@pytest.mark.slow
def test_rims_rl_train_smoke_and_resume(tmp_path):
    with mlflow_server(tmp_path / "store") as uri:
        out = tmp_path / "pong"
        cmd = [RIMS, "rl", "train", "--env", "ALE/Pong-v5", "--kind", "rims", "--num-units", "4", "--top-k", "2",
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
    cmd = [RIMS, "rl", "train", "--kind", "lstm", "--hidden-size", "16", "--out", str(out), "--smoke"]
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
    (["--kind", "lstm", "--hidden-size", "0"], "--hidden-size (model.hidden_size): Input should be greater than or "
                                                "equal to 1"),
])
def test_bad_rl_input_fails_before_anything_starts(tmp_path, args, expected):
    out = tmp_path / "out"
    done = subprocess.run([RIMS, "rl", "train", *args, "--out", str(out), "--mlflow-uri",
                           f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr
    assert not out.exists() and not (tmp_path / "m.db").exists(), "no results folder, no tracking store"


# RLlib's StatelessCartPole example settings (tests/rllib_models/test_stateless_cartpole.py), the LSTM baseline
CARTPOLE = ["--env", "StatelessCartPole", "--kind", "lstm", "--hidden-size", "64", "--num-envs", "8",
            "--rollout-length", "128", "--num-epochs", "6", "--max-seq-len", "20", "--lr", "9e-4", "--vf-coeff",
            "0.001", "--entropy-coeff", "0", "--clip-param", "0.2", "--gae-lambda", "1.0", "--grad-clip", "10",
            "--minibatch-size", "256"]


@pytest.mark.slow
@pytest.mark.learning
def test_rims_rl_train_stateless_cartpole_return_rises(tmp_path):
    """A real local run of `rims rl train --env StatelessCartPole` (task atari) on a tiny budget: 16 iterations of
    1,024 env steps, a report every 2; the run records train/episode_return_mean at each report and it rises (the
    random policy's is ~23; measured: 20 -> ~40 over these 16 iterations)."""
    db = tmp_path / "m.db"
    cmd = [RIMS, "rl", "train", *CARTPOLE, "--timesteps", "16384", "--eval-every", "2048", "--eval-episodes", "1",
           "--out", str(tmp_path / "out"), "--mlflow-uri", f"sqlite:///{db}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "statelesscartpole-lstm-s0: completed" in done.stdout, done.stdout
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("atari")
    (child,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    assert child.data.params["task.env"] == "StatelessCartPole" and child.data.params["task.name"] == "atari"
    history = sorted(client.get_metric_history(child.info.run_id, "train/episode_return_mean"), key=lambda m: m.step)
    steps, returns = [m.step for m in history], [m.value for m in history]
    # a report every 2 iterations; an iteration samples a few steps over its 1,024 when episodes end mid-way
    assert len(history) == 8 and steps == sorted(set(steps)) and steps[-1] >= 16384, steps
    assert returns[0] < 30, f"starts near the random policy's ~23: {returns}"
    assert max(returns[-3:]) > returns[0] + 5, f"the return did not rise: {returns}"

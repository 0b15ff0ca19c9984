"""The trial: resumes from a checkpoint to the same result, continues its MLflow run, fails cleanly on NaN."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.flat import nest, resolve
from sweeps.keys import TAG_CUDA_GRAPH, TAG_TRITON
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import CHECKPOINT_FILE, StopTrial, run_trial
from tests.sweeps.servers import GUARD_S

SPEC = {"name": "t", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 6, "eval_every": 2}}


def config(**over):
    flat = {**base_config(load_spec(SPEC)), "seed": 0, **over}
    return resolve(flat)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One sqlite store for the module (creating one runs MLflow's migrations: seconds on a loaded machine)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def ctx(store, request):
    """A sweep of the test's own, in an experiment of its own."""
    uri = store
    sweeper = SweepTracker(uri, f"trainable-{request.node.name}")
    parent = sweeper.start("sweep-1", {"search.algorithm": "grid"}, {}, "name: t\n")
    return {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
            "sweep_id": "sweep-1", "seeds": [0], "tags": {"rims.git_sha": "abc"}, "cpus": 1}


def collect(tmp_path: Path, name: str):
    reports, ckpts = [], {}

    def report(metrics, d):
        reports.append(metrics)
        if d is not None:
            dest = tmp_path / f"{name}-{metrics['step']}"
            shutil.copytree(d, dest)
            ckpts[metrics["step"]] = dest

    return reports, ckpts, report


def comparable(m):
    return {k: v for k, v in m.items() if not k.startswith("sys/")}


def test_nest_turns_dotted_keys_into_settings():
    assert nest({"model.comm.enabled": False, "model.kind": "rims", "optim.lr": 1}, "model") == {
        "comm": {"enabled": False}, "kind": "rims"}


def test_resume_from_a_checkpoint_gives_the_same_run(tmp_path, ctx):
    reports, ckpts, report = collect(tmp_path, "a")
    run_trial(config(), ctx, trial_id="a", checkpoint_dir=None, report=report)
    assert [r["step"] for r in reports] == [2, 4, 6]
    assert (ckpts[2] / CHECKPOINT_FILE).exists()
    resumed, _, report_b = collect(tmp_path, "b")
    run_trial(config(), ctx, trial_id="b", checkpoint_dir=ckpts[2], report=report_b)
    assert [r["step"] for r in resumed] == [4, 6]
    assert comparable(resumed[-1]) == comparable(reports[-1])  # bit-for-bit: batches, dropout, Adam state
    other, _, report_c = collect(tmp_path, "c")
    run_trial(config(seed=1), ctx, trial_id="c", checkpoint_dir=None, report=report_c)
    assert comparable(other[-1]) != comparable(reports[-1])  # and the seed does matter


def test_a_restarted_trial_continues_its_mlflow_run_without_duplicate_steps(tmp_path, ctx):
    _reports, ckpts, report = collect(tmp_path, "a")
    run_trial(config(), ctx, trial_id="a", checkpoint_dir=None, report=report)
    run_trial(config(), ctx, trial_id="a", checkpoint_dir=ckpts[2], report=lambda m, d: None)  # a restart
    client = MlflowClient(ctx["tracking_uri"])
    runs = client.search_runs([ctx["experiment_id"]], filter_string="tags.`rims.trial_id` = 'a'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == ctx["parent_run_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/ce")] == [2, 4, 6]
    assert run.data.params["model.num_units"] == "3" and run.data.params["task.test_blanks"] == "[6]"
    assert {"rims.sweep_id", "rims.trial_id", "rims.seed", "rims.config_id", "rims.git_sha"} <= set(run.data.tags)
    assert run.data.metrics["model/num_params"] > 0 and run.data.metrics["model/macs_per_step"] > 0
    assert {"rims/active_frac/0", "eval/ce_blank6", "val/acc", "train/ce"} <= set(run.data.metrics)
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.json", CHECKPOINT_FILE]


def test_baseline_trial_logs_no_rim_only_params(tmp_path, ctx):
    run_trial(config(**{"model.kind": "lstm"}), ctx, trial_id="l", checkpoint_dir=None, report=lambda m, d: None)
    run = MlflowClient(ctx["tracking_uri"]).search_runs([ctx["experiment_id"]])[0]
    assert run.data.params["model.kind"] == "lstm"
    assert not any(k.startswith(("model.num_units", "model.top_k", "model.comm")) for k in run.data.params)
    assert not any(k.startswith("rims/") for k in run.data.metrics)


def test_non_finite_loss_ends_the_trial_as_failed_with_its_reason(tmp_path, ctx):
    reports, _, report = collect(tmp_path, "nan")
    run_trial(config(**{"optim.lr": 1e30, "optim.grad_clip": 1e30}), ctx, trial_id="n", checkpoint_dir=None,
              report=report)
    assert reports[-1]["failed"] == 1.0
    run = MlflowClient(ctx["tracking_uri"]).search_runs([ctx["experiment_id"]])[0]
    assert run.info.status == "FAILED"
    assert "non-finite loss" in run.data.tags["rims.failure"]


def test_a_non_finite_rl_loss_ends_the_trial_as_a_supervised_one_does(tmp_path, ctx, monkeypatch):
    """PPO raises NonFiniteLossError at a report (here a stand-in for train_ppo, in-process): the trial returns
    (no exception, so Tune has nothing to retry) after a failed report, and its run is FAILED with the reason."""
    from rims_core.errors import NonFiniteLossError

    def train_ppo(settings, model, optim, seed, *, checkpoint_dir, log, report, **_):
        log({"train/loss": 0.5}, 64)
        report({"train/loss": 0.5, "step": 64.0, "failed": 0.0}, None)
        raise NonFiniteLossError("non-finite PPO loss (nan) at env step 128")

    monkeypatch.setattr("rllib_models.ppo.train_ppo", train_ppo)  # PPOTask.train imports it when called
    rl = {"name": "rl", "task": {"name": "atari", "env": "ALE/Pong-v5"}, "model": {"kind": "lstm", "hidden_size": 32}}
    reports = []
    run_trial(resolve({**base_config(load_spec(rl)), "seed": 0}), ctx, trial_id="rl", checkpoint_dir=None,
              report=lambda m, d: reports.append(m))
    assert reports[-1] == {"failed": 1.0, "step": 64}  # the error carries no step: the last report's
    run = MlflowClient(ctx["tracking_uri"]).search_runs([ctx["experiment_id"]])[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["rims.failure"] == "non-finite PPO loss (nan) at env step 128"


@pytest.mark.parametrize(("resources", "expected"),
                         [({}, (True, False, False)),
                          ({"triton": False, "cuda_graph": True, "recompute": True}, (False, True, True))])
def test_an_rl_trial_passes_its_resources_settings_to_ppo(tmp_path, ctx, monkeypatch, resources, expected):
    """resources.triton, resources.cuda_graph and resources.recompute reach train_ppo (here a stand-in,
    in-process), which puts them in the RIM policy's model_config (tests/rllib_models/test_ppo.py); the fast
    paths' status it gives becomes the run's rims.cuda_graph and rims.triton tags, as a supervised trial's."""
    seen = []

    def train_ppo(settings, model, optim, seed, *, checkpoint_dir, log, report, triton, cuda_graph, recompute,
                  status, **_):
        seen.append((triton, cuda_graph, recompute))
        status({"cuda_graph": "learner: graphs, 2 captured; env runners: graphs, 1 captured", "triton": "on"})
        report({"train/loss": 0.5, "step": 64.0}, None)

    monkeypatch.setattr("rllib_models.ppo.train_ppo", train_ppo)
    rl = {"name": "rl", "task": {"name": "atari", "env": "ALE/Pong-v5"}, "model": {"hidden_size": 36},
          "resources": resources}
    spec = load_spec(rl)
    run_trial(resolve({**base_config(spec), "seed": 0}),
              {**ctx, "triton": spec.resources.triton, "cuda_graph": spec.resources.cuda_graph,
               "recompute": spec.resources.recompute}, trial_id="rl",
              checkpoint_dir=None, report=lambda m, d: None)
    assert seen == [expected]
    tags = MlflowClient(ctx["tracking_uri"]).search_runs([ctx["experiment_id"]])[0].data.tags
    assert tags[TAG_CUDA_GRAPH] == "learner: graphs, 2 captured; env runners: graphs, 1 captured"
    assert tags[TAG_TRITON] == "on"


@pytest.mark.slow
def test_rims_eval_reevaluates_a_finished_trial_on_new_conditions(tmp_path, ctx):
    import subprocess
    import sys

    run_trial(config(), ctx, trial_id="e", checkpoint_dir=None, report=lambda m, d: None)
    client = MlflowClient(ctx["tracking_uri"])
    run = client.search_runs([ctx["experiment_id"]], filter_string="tags.`rims.trial_id` = 'e'")[0]
    before = run.data.metrics["eval/ce_blank6"]
    proc = subprocess.run([sys.executable, "-m", "rims_cli", "eval", run.info.run_id, "--set",
                           "task.test_blanks=6,12", "--mlflow-uri", ctx["tracking_uri"]],
                          capture_output=True, text=True, timeout=GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert "eval/ce_blank12" in proc.stdout
    after = client.get_run(run.info.run_id)
    assert "eval/ce_blank12" in after.data.metrics
    assert after.data.metrics["eval/ce_blank6"] == pytest.approx(before)  # same checkpoint, same fixed data
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/ce_blank12")] == [6]
    bad = subprocess.run([sys.executable, "-m", "rims_cli", "eval", run.info.run_id, "--set", "model.top_k=3",
                          "--mlflow-uri", ctx["tracking_uri"]], capture_output=True, text=True, timeout=GUARD_S)
    assert bad.returncode == 2 and "expected task.<key>=<value>" in bad.stderr


def test_a_stopping_rule_closes_the_run_as_stopped_early_at_once(ctx):
    """A report that raises StopTrial (the local runner's stop rule) ends the run FINISHED and tagged, in the
    trial itself: a sweep interrupted before its end leaves no stopped trial FAILED or RUNNING."""
    def report(m, d):
        if m["step"] == 4:
            raise StopTrial

    with pytest.raises(StopTrial):
        run_trial(config(), ctx, trial_id="s", checkpoint_dir=None, report=report)
    client = MlflowClient(ctx["tracking_uri"])
    (run,) = client.search_runs([ctx["experiment_id"]], filter_string="tags.`rims.trial_id` = 's'")
    assert run.info.status == "FINISHED" and run.data.tags["rims.stopped_early"] == "true"
    assert "rims.failure" not in run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/ce")] == [2, 4]

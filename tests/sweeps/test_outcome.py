"""A trial's outcome, one definition for both runners: how a result maps to one, how its run is closed, the
sweep's counts; and a non-finite loss in an RL trial ends it FAILED once, not retried by Tune."""

from __future__ import annotations

import os

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from sweeps.outcome import ERRORED, FAILED, OUTCOMES, STOPPED_EARLY, Tally, closing, tune_outcome
from sweeps.runner import run_sweep
from sweeps.spec import load_spec

from .nonfinite import ATTEMPTS


def test_a_tune_result_maps_to_one_outcome_error_first():
    boom = RuntimeError("boom")
    assert tune_outcome(boom, {"failed": 1.0, "step": 2}, 6) == ERRORED
    assert tune_outcome(None, {"failed": 1.0, "step": 6}, 6) == FAILED  # a failure at the last step is a failure
    assert tune_outcome(None, {"failed": 0.0, "step": 4}, 6) == STOPPED_EARLY
    assert tune_outcome(None, {"failed": 0.0, "step": 6}, 6) == "completed"
    assert tune_outcome(None, {"failed": 0.0, "step": 64}, 50) == "completed"  # RL: whole iterations overshoot


def test_runs_left_open_are_closed_by_outcome():
    tags, status = closing(ERRORED, "x" * 600)
    assert status == "FAILED" and tags == {"rims.failure": "x" * 500}
    assert closing(ERRORED) == ({"rims.failure": "error"}, "FAILED")
    assert closing(STOPPED_EARLY) == ({"rims.stopped_early": "true"}, "FINISHED")
    assert closing(FAILED, "non-finite loss") is None and closing("completed") is None  # they closed their own


def test_the_tally_counts_and_says_why():
    tally = Tally()
    for tid, outcome, reason in [("0", "completed", None), ("1", FAILED, None), ("2", FAILED, "non-finite loss"),
                                 ("3", ERRORED, "MemoryError: x"), ("4", STOPPED_EARLY, None)]:
        tally.add(tid, outcome, reason)
    assert tally.counts == {"trials": 5, "completed": 1, "stopped_early": 1, "failed": 2, "errored": 1}
    assert list(tally.counts)[1:] == list(OUTCOMES)
    assert tally.failures == ["1: failed", "2: non-finite loss", "3: MemoryError: x"]
    assert tally.summary == {"counts": tally.counts, "failures": tally.failures}
    assert tally.status == "FINISHED"
    with pytest.raises(ValueError, match=r"expected one of .*got 'crashed'"):
        tally.add("5", "crashed")  # type: ignore[arg-type]


def test_the_parent_run_fails_only_when_every_trial_errored():
    assert Tally().status == "FINISHED"  # nothing ran (a resumed sweep with nothing left)
    errored = Tally()
    errored.add("0", ERRORED, "e")
    errored.add("1", ERRORED, "e")
    assert errored.status == "FAILED"
    errored.add("2", FAILED, "non-finite loss")
    assert errored.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.integration
def test_an_rl_trial_whose_loss_goes_non_finite_fails_once_and_is_not_retried(tmp_path):
    """PPO's learner results are monkeypatched in every Ray worker to report a NaN loss (tests/sweeps/nonfinite.py),
    so train_ppo's own check raises at the first report. max_failures 2 would let Tune run the trial 3 times; it
    runs once, ends FAILED with the reason, and both the sweep's counts and its run say so."""
    attempts = tmp_path / "attempts"
    raw = {"name": "nan_rl", "task": {"name": "atari", "env": "ALE/Pong-v5", "eval_episodes": 0},
           "model": {"kind": "lstm", "hidden_size": 32}, "max_failures": 2}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, runtime_env={
        "worker_process_setup_hook": "tests.sweeps.nonfinite.poison_ppo_loss",
        "env_vars": {ATTEMPTS: str(attempts),
                     "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}})
    try:
        res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}",
                        storage_path=tmp_path / "results", smoke=True, quiet=True)
    finally:
        ray.shutdown()
    assert attempts.read_text().splitlines() == ["report"], "one attempt: Tune did not retry the trial"
    assert res.counts == {"trials": 1, "completed": 0, "stopped_early": 0, "failed": 1, "errored": 0}
    client = MlflowClient(res.tracking_uri)
    (run,) = client.search_runs([res.experiment_id], filter_string=(
        f"tags.`rims.sweep_id` = '{res.sweep_id}' and tags.`rims.trial_id` != ''"))
    reason = run.data.tags["rims.failure"]
    assert run.info.status == "FAILED" and "non-finite PPO loss (nan)" in reason
    assert res.failures == [f"{run.data.tags['rims.trial_id']}: {reason}"]
    assert client.get_run(res.parent_run_id).data.metrics["sweep/failed"] == 1

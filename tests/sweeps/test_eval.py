"""`rims eval`: the real command on a finished trial. It logs only the eval/* metrics the run does not have (no
second val/ce point at the final step), says what it does condition by condition, and ends with the run id and
the step it logged to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.sweeps.logged import logged_trial

pytestmark = pytest.mark.slow  # a real trial, then the real command in a subprocess, three times

SPEC = {"name": "ev", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}}


@pytest.fixture
def trial(tmp_path):
    return logged_trial(tmp_path, SPEC, "e", "eval-test")


def histories(client, run_id):
    keys = client.get_run(run_id).data.metrics
    return {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in keys}


def rims_eval(*args):
    return subprocess.run([sys.executable, "-m", "rims_cli", "eval", *args], capture_output=True, text=True,
                          timeout=600)


def test_eval_logs_only_new_eval_metrics_and_reports_progress(trial):
    uri, client, run = trial
    rid = run.info.run_id
    before = histories(client, rid)
    assert [s for s, _ in before["val/ce"]] == [2, 4]
    proc = rims_eval(rid, "--set", "task.test_blanks=6,12,24", "--mlflow-uri", uri)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    # progress, in order: fetch, load, each condition started and done, the metrics, where they went
    expect = [f"rims eval: run {rid} in {uri}: fetching its config and final checkpoint",
              "rims eval: loaded rims at step 4; 3 conditions to evaluate",
              "  [1/3] task.test_blanks=6: evaluating ...", "  [1/3] task.test_blanks=6: done in ",
              "  [2/3] task.test_blanks=12: evaluating ...", "  [2/3] task.test_blanks=12: done in ",
              "  [3/3] task.test_blanks=24: evaluating ...", "  [3/3] task.test_blanks=24: done in "]
    progress = [ln for ln in out if ln.startswith(("rims eval:", "  ["))]
    assert len(progress) == len(expect), proc.stdout
    for line, prefix in zip(progress, expect, strict=True):
        assert line.startswith(prefix), (line, prefix)
    assert progress[3].endswith("nothing new")  # blank 6 was evaluated by the trial itself
    assert "eval/ce_blank12=" in progress[5] and "eval/ce_blank24=" in progress[7]
    assert out.index(progress[-1]) < out.index(
        f"logged 6 new metrics to run {rid} (experiment 'eval-test') at step 4, in {uri}"), proc.stdout
    assert any(ln.startswith("eval/ce_blank6") and "already in the run, not logged again (same)" in ln for ln in out)

    after = histories(client, rid)
    new = {f"eval/{m}_blank{b}" for m in ("ce", "ce_all", "acc") for b in (12, 24)}
    assert set(after) == set(before) | new
    assert {k: v for k, v in after.items() if k in before} == before  # val/*, train/*, eval/*_blank6: untouched
    assert all([s for s, _ in after[k]] == [4] for k in new)  # one point each, at the run's final step
    assert json.loads(client.get_run(rid).data.tags["rims.reevaluated"]) == [{"task.test_blanks": [6, 12, 24]}]

    again = rims_eval(rid, "--set", "task.test_blanks=12", "--mlflow-uri", uri)
    assert again.returncode == 0, again.stderr
    assert (f"nothing logged: run {rid} already has every metric evaluated (step 4, {uri})"
            in again.stdout.splitlines()), again.stdout
    assert histories(client, rid) == after


def test_eval_refuses_what_it_cannot_do(trial):
    uri, _, run = trial
    bad = rims_eval(run.info.run_id, "--set", "model.top_k=3", "--mlflow-uri", uri)
    assert bad.returncode == 2 and "expected task.<key>=<value>" in bad.stderr
    unknown = rims_eval(run.info.run_id, "--set", "task.test_blank=12", "--mlflow-uri", uri)
    assert unknown.returncode == 2 and "test_blank" in unknown.stderr and "Traceback" not in unknown.stderr

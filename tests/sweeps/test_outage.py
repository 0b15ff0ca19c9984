"""Fault: the MLflow server is killed in the middle of a sweep and restarted on the same store once the trials
have gone on reporting without it. Training goes on through the outage, and every report Tune received is in
MLflow afterwards, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.sweeps.servers import GUARD_S, free_port, start_mlflow, stop_mlflow, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
EVERY, REPORTS = 25, 16  # a trial reports every 25 steps, 16 times
DURING = 3  # the outage lasts until every trial has made 3 more reports (or has made all of them)
SECRET = "rims-test-secret-4f1c9a"  # planted in the driver's environment: must not reach the tracking store


def tune_reports(results: Path) -> dict[str, list[int]]:
    """trial id -> the steps of every report Tune recorded (its result.json, one line per report)."""
    out = {}
    for f in results.rglob("result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = sorted(int(r["step"]) for r in rows if not r.get("failed"))
    return out


def reports_made(experiment: Path) -> dict[str, int]:
    """trial folder -> how many reports its trial has made, read from its newest checkpoint folder
    (checkpoint_<k> is written for the k+1-th report after the trial logged that report to MLflow and before it
    logs the next one)."""
    made: dict[str, int] = {}
    for ckpt in experiment.glob("*/checkpoint_*"):
        made[ckpt.parent.name] = max(made.get(ckpt.parent.name, 0), int(ckpt.name.rsplit("_", 1)[1]) + 1)
    return made


def test_sweep_survives_a_tracking_outage(tmp_path):
    spec = tmp_path / "outage.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "outage", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": EVERY * REPORTS, "eval_every": EVERY}, "seeds": 2,
        "resources": {"cpu": 0.5}}))
    experiment = tmp_path / "results" / "outage"
    port = free_port()
    server = start_mlflow(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    # a trial that ends during the outage waits for the store (the bounds are failure guards here, not paces)
    env = {**os.environ, "RAY_ADDRESS": "", "RIMS_TRACKING_FINISH_S": str(GUARD_S),
           "RIMS_TRACKING_OUTAGE_S": str(GUARD_S), "AWS_SECRET_ACCESS_KEY": SECRET,
           "MLFLOW_TRACKING_PASSWORD": SECRET}
    try:
        log = tmp_path / "driver.log"
        with open(log, "w") as sink:
            driver = subprocess.Popen(
                [str(BIN / "rims"), "sweep", "run", str(spec), "--mlflow-uri", uri, "--storage-path",
                 str(tmp_path / "results"), "--quiet"], cwd=tmp_path, env=env, stdout=sink,
                stderr=subprocess.STDOUT)
        try:
            # both trials have logged a report: take the server away
            wait_until(lambda: len(reports_made(experiment)) == 2, "a first report from both trials",
                       alive=driver)
            stop_mlflow(server)
            down = int(time.time() * 1000)
            # read after the kill: each trial's next-but-one report is logged after it
            before = reports_made(experiment)
            assert min(before.values()) < REPORTS - DURING, f"the trials were almost done before the outage: {before}"
            wait_until(lambda: all(reports_made(experiment).get(t, 0) >= min(n + DURING, REPORTS)
                                   for t, n in before.items()),
                       f"{DURING} more reports from each trial during the outage", alive=driver)
            outage_reports = reports_made(experiment)
            server = start_mlflow(tmp_path, port)
            up = time.time() * 1000
            driver.wait(timeout=GUARD_S)
        except BaseException as e:
            e.add_note(f"driver output:\n{log.read_text()[-3000:]}")
            raise
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        out = log.read_text()
        assert driver.returncode == 0, out[-3000:]
        assert "2 trials" in out and "0 errored" in out, out[-3000:]
        reported = tune_reports(tmp_path / "results")
        assert len(reported) == 2
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string="tags.`rims.trial_id` != ''")
        assert len(runs) == 2, "one run per trial, none duplicated"
        every_step = list(range(EVERY, EVERY * REPORTS + 1, EVERY))
        during = 0
        for r in runs:
            hist = client.get_metric_history(r.info.run_id, "val/ce")
            steps = sorted(m.step for m in hist)
            assert reported[r.data.tags["rims.trial_id"]] == every_step, "Tune received every report"
            assert steps == every_step, "every report Tune received is in MLflow, once: no gap, no duplicate"
            during += sum(down <= m.timestamp <= up for m in hist)
        # each trial whose checkpoints showed k more reports during the outage logged at least k - 1 of them
        # after the kill (the first may have been logged just before it)
        assert during >= sum(max(0, outage_reports[t] - before[t] - 1) for t in before) >= DURING - 1, \
            "the trials went on reporting during the outage"
        assert not list((tmp_path / "results").rglob("*.jsonl")), "nothing was left in a spill file"
        stored = [tmp_path / "mlflow.db", *(tmp_path / "artifacts").rglob("*")]
        assert not [p for p in stored if p.is_file() and SECRET.encode() in p.read_bytes()], "no secret logged"
        total = sum(len(v) for v in reported.values())
        found = sum(len(client.get_metric_history(r.info.run_id, "val/ce")) for r in runs)
        print(f"\nRELIABILITY outage {(up - down) / 1000:.0f} s (from the trials' reports {sorted(before.values())} of "
              f"{REPORTS} until each had made {DURING} more): trials 2/2, runs 2, val/ce points in Tune {total}, in "
              f"MLflow {found}, reported during the outage {during}")
    finally:
        stop_mlflow(server)

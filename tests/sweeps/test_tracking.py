"""Tracking that loses nothing: a real `mlflow server` is killed and restarted under a trial's tracker; the
points logged during the outage arrive after it (buffered), or past the bound go to a spill file that
`rims tracking replay` sends, once (replaying twice adds nothing)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from sweeps.cli import main
from sweeps.tracking import SweepTracker, TrialTracker, is_transient, read_ops
from tests.sweeps.servers import free_port, start_mlflow, stop_mlflow

pytestmark = pytest.mark.integration

KEYS = ("loss", "acc", "val/ce")


def metrics(step: int) -> dict[str, float]:
    return {k: step + i / 10 for i, k in enumerate(KEYS)}


def open_trial(uri: str, tmp_path: Path, **kw) -> tuple[TrialTracker, str]:
    sweeper = SweepTracker(uri, "outage")
    parent = sweeper.start("sw1", {"search.algorithm": "grid"}, {}, "name: sw1\n")
    tracker = TrialTracker(uri, sweeper.experiment_id, parent, "sw1", "t0", {"seed": 0, "model.kind": "rims"},
                           {}, experiment="outage", spill_dir=tmp_path / "spill", **kw)
    tracker.retry_every_s = 0.2
    return tracker, sweeper.experiment_id


def history(uri: str, run_id: str) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in KEYS}


def test_points_logged_during_an_outage_arrive_after_it(tmp_path):
    port = free_port()
    server = start_mlflow(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        tracker, _ = open_trial(uri, tmp_path)
        for step in range(1, 6):
            tracker.log(metrics(step), step)
        stop_mlflow(server)  # the outage
        for step in range(6, 16):
            tracker.log(metrics(step), step)  # returns: training goes on
        tracker.set_tags({"rims.note": "during the outage"})
        assert len(tracker._queue) == 11, "the outage's operations are queued, in order"
        assert not tracker.spill_path.exists(), "within the bound nothing is spilled"
        server = start_mlflow(tmp_path, port)
        time.sleep(0.3)
        tracker.log(metrics(16), 16)  # the next report sends the queue first
        assert tracker._queue == []
        tracker.finish()
        run = MlflowClient(uri).get_run(tracker.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["rims.note"] == "during the outage"
        assert history(uri, tracker.run_id) == {k: list(range(1, 17)) for k in KEYS}
    finally:
        stop_mlflow(server)


def test_past_the_bound_the_queue_spills_and_replay_sends_it_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("RIMS_TRACKING_FINISH_S", "0")  # do not wait at finish: the store stays down
    port = free_port()
    server = start_mlflow(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        tracker, _ = open_trial(uri, tmp_path, max_outage_s=0.0)
        tracker.log(metrics(1), 1)
        stop_mlflow(server)
        ckpt = tmp_path / "tmp" / "state.pt"
        ckpt.parent.mkdir()
        ckpt.write_bytes(b"weights")
        with caplog.at_level(logging.WARNING, logger="rims.tracking"):
            for step in range(2, 8):
                time.sleep(0.01)
                tracker.log(metrics(step), step)
            tracker.artifact(ckpt)
            ckpt.unlink()  # a temporary checkpoint: the spill keeps its own copy
            tracker.finish()
        assert tracker.spilling and tracker.spill_path.exists()
        assert str(tracker.spill_path) in caplog.text, "the spill path is logged"
        ops = read_ops(tracker.spill_path)
        assert ops[0]["op"] == "open" and ops[-1] == {"op": "finish", "status": "FINISHED"}
        assert sorted(o["step"] for o in ops if o["op"] == "metrics") == list(range(2, 8))
        server = start_mlflow(tmp_path, port)
        assert main(["tracking", "replay", str(tracker.spill_path.parent), "--mlflow-uri", uri]) == 0
        assert history(uri, tracker.run_id) == {k: list(range(1, 8)) for k in KEYS}
        client = MlflowClient(uri)
        assert client.get_run(tracker.run_id).info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["config.json", "state.pt"]
        assert main(["tracking", "replay", str(tracker.spill_path), "--mlflow-uri", uri]) == 0
        assert history(uri, tracker.run_id) == {k: list(range(1, 8)) for k in KEYS}, "a second replay adds nothing"
    finally:
        stop_mlflow(server)


def test_a_trial_that_spilled_sends_its_file_itself_once_the_store_is_back(tmp_path):
    port = free_port()
    server = start_mlflow(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        tracker, _ = open_trial(uri, tmp_path, max_outage_s=0.0)
        tracker.log(metrics(1), 1)
        stop_mlflow(server)
        for step in range(2, 5):
            time.sleep(0.01)
            tracker.log(metrics(step), step)
        assert tracker.spilling
        server = start_mlflow(tmp_path, port)
        time.sleep(0.3)
        tracker.log(metrics(5), 5)  # appended to the spill file, which is then sent: back to live logging
        assert not tracker.spilling and not tracker.spill_path.exists()
        tracker.log(metrics(6), 6)
        tracker.finish()
        assert history(uri, tracker.run_id) == {k: list(range(1, 7)) for k in KEYS}
        assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FINISHED"
    finally:
        stop_mlflow(server)


def test_an_operation_the_store_refuses_is_kept_with_its_reason_and_the_rest_goes_on(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker, _ = open_trial(uri, tmp_path)
    tracker.log(metrics(1), 1)
    tracker.set_tags({"x" * 300: "a key longer than MLflow allows"})
    tracker.log(metrics(2), 2)
    tracker.finish()
    assert history(uri, tracker.run_id) == {k: [1, 2] for k in KEYS}
    ops = read_ops(tracker.spill_path)
    kept = [o for o in ops if o["op"] == "tags"]
    assert len(kept) == 1 and "x" * 300 in kept[0]["tags"] and kept[0]["refused"]
    assert ops[0]["op"] == "open", "the file names its run"
    assert main(["tracking", "replay", str(tracker.spill_path), "--mlflow-uri", uri]) == 0, "replay skips it"
    assert history(uri, tracker.run_id) == {k: [1, 2] for k in KEYS}


def test_offline_tracker_writes_the_spill_file_only(tmp_path):
    tracker = TrialTracker(None, "", "", "sw2", "t9", {"seed": 3}, {"rims.config_id": "c"}, experiment="offline",
                           spill_dir=tmp_path)
    tracker.log(metrics(1), 1)
    tracker.finish()
    ops = [json.loads(line) for line in tracker.spill_path.read_text().splitlines()]
    assert [o["op"] for o in ops] == ["open", "metrics", "finish"]
    assert ops[0]["experiment"] == "offline" and ops[0]["config"] == {"seed": 3}


def test_a_torn_last_line_is_ignored(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"op": "open"}) + "\n" + '{"op": "metr')
    assert read_ops(f) == [{"op": "open"}]


def test_transient_errors_are_told_from_refusals():
    assert is_transient(ConnectionRefusedError("Connection refused"))
    assert is_transient(MlflowException("API request failed: Max retries exceeded with url"))
    assert is_transient(MlflowException("(sqlite3.OperationalError) database is locked"))
    assert not is_transient(MlflowException("Param value too long", error_code=INVALID_PARAMETER_VALUE))
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))


def test_replay_of_a_missing_path_names_it(tmp_path, capsys):
    assert main(["tracking", "replay", str(tmp_path / "nope"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "nope" in capsys.readouterr().err

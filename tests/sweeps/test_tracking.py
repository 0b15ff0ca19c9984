"""Tracking that loses nothing: a real `mlflow server` is killed and restarted under a trial's tracker; the
points logged during the outage arrive after it (buffered), or past the bound go to a spill file that
`rims tracking replay` sends, once (replaying twice adds nothing)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from rims_cli.main import main
from sweeps.tracking import SweepTracker, TrialTracker, is_transient, read_ops
from tests.sweeps.servers import free_port, start_mlflow, stop_mlflow, wait_until

pytestmark = pytest.mark.integration

KEYS = ("loss", "acc", "val/ce")


class Store:
    """One `mlflow server` on one port and store, taken down and brought back by the tests (an outage)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = start_mlflow(root, self.port)

    def down(self) -> None:
        stop_mlflow(self.proc)

    def up(self) -> None:
        if self.proc.poll() is not None:
            self.proc = start_mlflow(self.root, self.port)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("store"))
    try:
        yield store
    finally:
        store.down()


@pytest.fixture
def store(server: Store) -> Store:
    """The module's server, up (a test before may have left it down by failing)."""
    server.up()
    return server


def metrics(step: int) -> dict[str, float]:
    return {k: step + i / 10 for i, k in enumerate(KEYS)}


def open_trial(uri: str, tmp_path: Path, **kw) -> tuple[TrialTracker, str]:
    """A trial's tracker under a sweep of its own (tmp_path's name: the tests share a store)."""
    sweep = tmp_path.name
    sweeper = SweepTracker(uri, "outage")
    parent = sweeper.start(sweep, {"search.algorithm": "grid"}, {}, f"name: {sweep}\n")
    tracker = TrialTracker(uri, sweeper.experiment_id, parent, sweep, "t0", {"seed": 0, "model.kind": "rims"},
                           {}, experiment="outage", spill_dir=tmp_path / "spill", **kw)
    tracker.retry_every_s = 0.2
    return tracker, sweeper.experiment_id


def retry_due(tracker: TrialTracker) -> None:
    """Until the tracker's next try at the store is due (it tries at most every retry_every_s)."""
    wait_until(lambda: time.monotonic() >= tracker._next_try, "the tracker's next try")


def past_the_bound(tracker: TrialTracker) -> None:
    """Until the tracker's outage has lasted longer than its bound (its next operation then spills)."""
    wait_until(lambda: tracker._outage_since is None or time.monotonic() - tracker._outage_since
               > tracker.max_outage_s, "an outage past the bound")


def history(uri: str, run_id: str) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in KEYS}


@pytest.mark.slow
def test_points_logged_during_an_outage_arrive_after_it(tmp_path, store):
    uri = store.uri
    tracker, _ = open_trial(uri, tmp_path)
    for step in range(1, 6):
        tracker.log(metrics(step), step)
    store.down()  # the outage
    for step in range(6, 16):
        tracker.log(metrics(step), step)  # returns: training goes on
    tracker.set_tags({"rims.note": "during the outage"})
    assert len(tracker._queue) == 11, "the outage's operations are queued, in order"
    assert not tracker.spill_path.exists(), "within the bound nothing is spilled"
    store.up()
    retry_due(tracker)
    tracker.log(metrics(16), 16)  # the next report sends the queue first
    assert tracker._queue == []
    tracker.finish()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["rims.note"] == "during the outage"
    assert history(uri, tracker.run_id) == {k: list(range(1, 17)) for k in KEYS}


@pytest.mark.slow
def test_past_the_bound_the_queue_spills_and_replay_sends_it_once(tmp_path, store, caplog, monkeypatch):
    monkeypatch.setenv("RIMS_TRACKING_FINISH_S", "0")  # do not wait at finish: the store stays down
    uri = store.uri
    tracker, _ = open_trial(uri, tmp_path, max_outage_s=0.0)
    tracker.log(metrics(1), 1)
    store.down()
    ckpt = tmp_path / "tmp" / "state.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    with caplog.at_level(logging.WARNING, logger="rims.tracking"):
        for step in range(2, 8):
            tracker.log(metrics(step), step)
            past_the_bound(tracker)
        tracker.artifact(ckpt)
        ckpt.unlink()  # a temporary checkpoint: the spill keeps its own copy
        tracker.finish()
    assert tracker.spilling and tracker.spill_path.exists()
    assert str(tracker.spill_path) in caplog.text, "the spill path is logged"
    ops = read_ops(tracker.spill_path)
    assert ops[0]["op"] == "open" and ops[-1] == {"op": "finish", "status": "FINISHED"}
    assert sorted(o["step"] for o in ops if o["op"] == "metrics") == list(range(2, 8))
    store.up()
    assert main(["tracking", "replay", str(tracker.spill_path.parent), "--mlflow-uri", uri]) == 0
    assert history(uri, tracker.run_id) == {k: list(range(1, 8)) for k in KEYS}
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["config.json", "state.pt"]
    assert main(["tracking", "replay", str(tracker.spill_path), "--mlflow-uri", uri]) == 0
    assert history(uri, tracker.run_id) == {k: list(range(1, 8)) for k in KEYS}, "a second replay adds nothing"


@pytest.mark.slow
def test_a_trial_that_spilled_sends_its_file_itself_once_the_store_is_back(tmp_path, store):
    uri = store.uri
    tracker, _ = open_trial(uri, tmp_path, max_outage_s=0.0)
    tracker.log(metrics(1), 1)
    store.down()
    for step in range(2, 5):
        tracker.log(metrics(step), step)
        past_the_bound(tracker)
    assert tracker.spilling
    store.up()
    retry_due(tracker)
    tracker.log(metrics(5), 5)  # appended to the spill file, which is then sent: back to live logging
    assert not tracker.spilling and not tracker.spill_path.exists()
    tracker.log(metrics(6), 6)
    tracker.finish()
    assert history(uri, tracker.run_id) == {k: list(range(1, 7)) for k in KEYS}
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "FINISHED"


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

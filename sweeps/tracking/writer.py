"""Applying tracking operations to an MLflow store, idempotently; ``rims tracking replay`` of spill files.

An operation is a dict: "sweep" / "sweep_finish" (the parent run), "open" (a trial's run), "metrics", "tags",
"artifact", "finish". TrialTracker sends them live; spill files hold them for later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..keys import TAG_SEED, TAG_SWEEP, TAG_TRIAL, TAG_VARYING
from .names import run_name
from .parent import close_parent_run, create_parent_run, mlflow_params
from .spill import log, read_ops

__all__ = ["RunWriter", "is_transient", "replay", "replay_paths"]


def is_transient(error: BaseException) -> bool:
    """True for what an unreachable, restarting or busy store raises (worth retrying); False for a refusal."""
    text = str(error)
    if any(s in text for s in ("database is locked", "Max retries exceeded", "Connection refused",
                               "Connection aborted", "timed out", "Remote end closed")):
        return True
    if isinstance(error, OSError):
        return True
    try:
        import requests

        if isinstance(error, requests.exceptions.RequestException):
            return True
    except ImportError:  # pragma: no cover - requests comes with mlflow
        pass
    code = getattr(error, "get_http_status_code", lambda: None)()
    return code is not None and (code >= 500 or code == 429)


class RunWriter:
    """Applies tracking operations to one MLflow store, idempotently: a run is found by its sweep and trial
    tags before one is created, and a metric point (key, step) already in the run is never sent again, so an
    operation retried after an outage, or a spill file replayed twice, adds nothing twice."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.run_id = ""
        self.steps: dict[str, set[int]] = {}

    # -- resolution of ids recorded elsewhere (another store, or none: offline) ---------------------------
    def _experiment_id(self, op: dict[str, Any]) -> str:
        if op.get("experiment_id"):
            try:
                return self.client.get_experiment(op["experiment_id"]).experiment_id
            except Exception as e:
                if is_transient(e):
                    raise
        name = op.get("experiment") or "Default"
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp else self.client.create_experiment(name)

    def _find(self, experiment_id: str, sweep_id: str, trial_id: str | None) -> Any:
        if trial_id:
            found = self.client.search_runs([experiment_id], max_results=1, filter_string=(
                f"tags.`{TAG_SWEEP}` = '{sweep_id}' and tags.`{TAG_TRIAL}` = '{trial_id}'"))
        else:  # the parent: the sweep's one run without a trial tag (a filter cannot say "no such tag")
            found = [r for r in self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep_id}'", max_results=10000)
                if TAG_TRIAL not in r.data.tags]
        return found[0] if found else None

    def apply(self, op: dict[str, Any]) -> int:
        """Apply one operation; returns the metric points it sent."""
        kind = op["op"]
        if kind == "sweep":
            exp = self._experiment_id(op)
            run = self._find(exp, op["sweep_id"], None)
            if run is None:
                run = create_parent_run(self.client, exp, op["sweep_id"], op["params"], op["tags"],
                                        op.get("spec_text", ""))
            self.run_id = run.info.run_id
            return 0
        if kind == "open":
            return self._open(op)
        if not self.run_id:
            raise RuntimeError(f"tracking: a {kind!r} operation before the run was opened")
        if kind == "metrics":
            from mlflow.entities import Metric

            fresh = [(k, v) for k, v in op["values"].items() if op["step"] not in self.steps.get(k, ())]
            if fresh:
                self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), op["time"], op["step"])
                                                            for k, v in fresh])
                for k, _ in fresh:
                    self.steps.setdefault(k, set()).add(op["step"])
            return len(fresh)
        if kind == "tags":
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        elif kind == "artifact":
            if not Path(op["path"]).is_file():  # e.g. a spill folder copied without its checkpoints
                log.warning("tracking: artifact %s is not there; the run gets no copy of it", op["path"])
                return 0
            self.client.log_artifact(self.run_id, op["path"])
        elif kind == "finish":
            self.client.set_terminated(self.run_id, op["status"])
        elif kind == "sweep_finish":
            close_parent_run(self.client, self.run_id, op["summary"], op["status"], op["time"])
        else:
            raise ValueError(f"tracking: unknown operation {kind!r}; expected one of sweep, sweep_finish, open, "
                             "metrics, tags, artifact, finish")
        return 0

    def _open(self, op: dict[str, Any]) -> int:
        """A trial's run: found again (a restart, a replay) with the steps it already holds, else created under
        the sweep's parent run with the trial's config as params and config.json."""
        exp = self._experiment_id(op)
        run = self._find(exp, op["sweep_id"], op["trial_id"])
        if run is not None:
            self.run_id = run.info.run_id
            if op.get("set_running", True):
                self.client.update_run(self.run_id, status="RUNNING")
            self.steps = {k: {m.step for m in self.client.get_metric_history(self.run_id, k)}
                          for k in run.data.metrics}
            return 0
        parent = self._parent(exp, op)
        run = self.client.create_run(exp, run_name=self._name(exp, op), tags={
            **({"mlflow.parentRunId": parent} if parent else {}), TAG_SWEEP: op["sweep_id"],
            TAG_TRIAL: op["trial_id"], TAG_SEED: str(op["config"].get("seed")), **op["tags"]})
        self.run_id, self.steps = run.info.run_id, {}
        self.client.log_batch(self.run_id, params=mlflow_params(op["config"]))
        self.client.log_text(self.run_id, json.dumps(op["config"], indent=2, sort_keys=True), "config.json")
        return 0

    def _name(self, experiment_id: str, op: dict[str, Any]) -> str:
        """The new trial run's name (run_name) from the sweep's varied keys (its tags), unique in the sweep: a
        name the sweep already has (two trials of one configuration and seed) gets " #2", " #3", ... A sweep
        without the tag (started before names) keeps naming its runs by trial id."""
        varying = op["tags"].get(TAG_VARYING)
        if varying is None:
            return op["trial_id"]
        name = run_name(op["config"], [k for k in varying.split(",") if k])
        taken = {r.info.run_name for r in self.client.search_runs([experiment_id], max_results=1000, filter_string=(
            f"tags.`{TAG_SWEEP}` = '{op['sweep_id']}' and attributes.run_name LIKE '{name}%'"))}
        k = 1
        while (candidate := name if k == 1 else f"{name} #{k}") in taken:
            k += 1
        return candidate

    def _parent(self, experiment_id: str, op: dict[str, Any]) -> str | None:
        if op.get("parent_run_id"):
            try:
                return self.client.get_run(op["parent_run_id"]).info.run_id
            except Exception as e:
                if is_transient(e):
                    raise
        run = self._find(experiment_id, op["sweep_id"], None)
        return run.info.run_id if run else None


def replay(path: str | Path, uri: str) -> int:
    """Send a spill file to the store at uri (idempotent: run again, it adds nothing); returns metric points
    sent. A trial's file starts with its "open" operation, a sweep's with its "sweep" operation."""
    writer = RunWriter(uri)
    sent = 0
    for op in read_ops(path):
        if "refused" in op:  # kept for the record: the store refused it once and would again
            log.warning("tracking: not replaying a %s operation the store refused (%s)", op["op"], op["refused"])
            continue
        sent += writer.apply(op)
    return sent


def replay_paths(paths: list[str | Path], uri: str) -> list[tuple[Path, int]]:
    """Replay spill files and folders of them (a sweep's ``sweep.jsonl`` before its trials); returns
    (file, metric points sent) per file."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.jsonl"))
            files += sorted(found, key=lambda f: f.name != "sweep.jsonl")
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"tracking replay: Expected a spill file or a folder of them, got {str(p)!r} "
                             "(no such file or folder)")
    return [(f, replay(f, uri)) for f in files]

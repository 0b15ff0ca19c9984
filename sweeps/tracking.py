"""MLflow tracking: one parent run per sweep (driver side), one nested run per trial (trial side).

Metrics go in one ``log_batch`` per report. A resumed trial finds its run by its trial-id tag and logs only
steps beyond what the run already holds, so MLflow's append-only histories get no duplicates.

A trial never waits on its tracking store: every call is an operation in a queue that is sent in order; when
the store is unreachable the queue is kept and retried at the next report (training goes on). Past a bound
(``RIMS_TRACKING_BUFFER`` operations or ``RIMS_TRACKING_OUTAGE_S`` seconds) the queue is appended to a spill
file (JSON lines) whose path is logged; the trial retries the spill file itself when it finishes, and
``rims tracking replay FILE`` sends one later. Without a store (``uri=None``, offline mode) every operation
goes to the spill file. Nothing is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .keys import (
    TAG_GIT_DIRTY,
    TAG_GIT_SHA,
    TAG_SEED,
    TAG_SPEC_PATH,
    TAG_SWEEP,
    TAG_TRIAL,
    TAG_VARYING,
    TAG_VERSION_PREFIX,
)

__all__ = [
    "NullTracker",
    "RunWriter",
    "SweepTracker",
    "TrialTracker",
    "absolute_tracking_uri",
    "git_state",
    "is_local_uri",
    "is_transient",
    "package_versions",
    "read_ops",
    "replay",
    "replay_paths",
    "run_name",
    "sweep_tags",
]



def run_name(config: dict[str, Any], varying: list[str]) -> str:
    """A trial run's name: what differs between the sweep's trials, under the spec's names (e.g. ``rims
    num_units=6 top_k=4 comm.enabled=true seed=0``): model.kind's value, then each varied key the
    configuration has (RIM-only keys are absent from a baseline's) as ``key=value``, the key without its
    section (``model.``, ``optim.``, ``task.``) unless that is ambiguous, then the seed. A function of the
    configuration alone, so a resumed trial, or the same configuration and seed, gets the same name."""
    tails = [k.split(".", 1)[-1] for k in varying]
    parts = [_short(config["model.kind"])] if "model.kind" in config else []
    for key, tail in zip(varying, tails, strict=True):
        if key in config and key not in ("model.kind", "seed"):
            parts.append(f"{tail if tails.count(tail) == 1 else key}={_short(config[key])}")
    if "seed" in config:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts).replace("'", "").replace("\\", "")[:200] or "trial"


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def absolute_tracking_uri(uri: str | None, cwd: Path | None = None) -> str:
    """The tracking URI every process can use: default sqlite:///<abs cwd>/mlflow.db; relative paths made
    absolute (trials run in other processes and directories)."""
    cwd = (cwd or Path.cwd()).resolve()
    if not uri:
        return f"sqlite:///{cwd / 'mlflow.db'}"
    p = urlparse(uri)
    if p.scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        return uri if path.startswith("/") else f"sqlite:///{(cwd / path).resolve()}"
    if p.scheme in ("", "file"):
        path = Path(p.path if p.scheme == "file" else uri)
        return f"file://{(cwd / path).resolve() if not path.is_absolute() else path}"
    return uri


def is_local_uri(uri: str) -> bool:
    """True for stores only this machine can reach (sqlite files, local file stores)."""
    return urlparse(uri).scheme in ("sqlite", "file", "")


def git_state(cwd: Path | None = None) -> tuple[str, bool]:
    """(sha, dirty) of the working tree the sweep is submitted from; ("unknown", False) outside git.

    RIMS_GIT_SHA / RIMS_GIT_DIRTY, when set, win: for jobs whose working copy has no .git.
    """
    if os.environ.get("RIMS_GIT_SHA"):
        return os.environ["RIMS_GIT_SHA"], os.environ.get("RIMS_GIT_DIRTY", "false").lower() == "true"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def sweep_tags(spec_path: str | Path | None = None) -> dict[str, str]:
    """The parent run's provenance tags: git sha and dirty flag of the submitting tree (outside a repository,
    of the spec file's folder), package versions, and the spec's path as given (the report's "Reproduce")."""
    sha, dirty = git_state()
    if sha == "unknown" and spec_path is not None:
        sha, dirty = git_state(Path(spec_path).resolve().parent)
    return {TAG_GIT_SHA: sha, TAG_GIT_DIRTY: str(dirty),
            **({TAG_SPEC_PATH: str(spec_path)} if spec_path is not None else {}),
            **{f"{TAG_VERSION_PREFIX}{k}": v for k, v in package_versions().items()}}


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "ray", "mlflow", "optuna", "rims-lab"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


log = logging.getLogger("rims.tracking")


def _params(flat: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in sorted(flat.items())]


class SweepTracker:
    """The sweep's parent run: created once, found again on resume."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

    def start(self, sweep_id: str, params: dict[str, Any], tags: dict[str, str], spec_text: str) -> str:
        run = self.client.create_run(self.experiment_id, run_name=sweep_id, tags={TAG_SWEEP: sweep_id, **tags})
        rid = run.info.run_id
        self.client.log_batch(rid, params=_params(params))
        self.client.log_text(rid, spec_text, "spec.yaml")
        return rid

    def finish(self, run_id: str, summary: dict[str, Any], status: str = "FINISHED") -> None:
        self.client.log_text(run_id, json.dumps(summary, indent=2, default=str), "summary.json")
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(f"sweep/{k}", float(v), now, 0)
                                               for k, v in summary.get("counts", {}).items()])
        self.client.set_terminated(run_id, status)




class NullTracker:
    """Tracking off (benchmarks, tests of the training loop alone): same interface, does nothing."""

    run_id, last_step, spill_path = "", -1, None

    def close(self) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def artifact(self, path: str | Path) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


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
                run = self.client.create_run(exp, run_name=op["sweep_id"], tags={TAG_SWEEP: op["sweep_id"],
                                                                                  **op["tags"]})
                self.client.log_batch(run.info.run_id, params=_params(op["params"]))
                self.client.log_text(run.info.run_id, op.get("spec_text", ""), "spec.yaml")
            self.run_id = run.info.run_id
            return 0
        if kind == "open":
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
            self.client.log_batch(self.run_id, params=_params(op["config"]))
            self.client.log_text(self.run_id, json.dumps(op["config"], indent=2, sort_keys=True), "config.json")
            return 0
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
            self.client.log_text(self.run_id, json.dumps(op["summary"], indent=2, default=str), "summary.json")
            self.apply({"op": "metrics", "time": op["time"], "step": 0,
                        "values": {f"sweep/{k}": v for k, v in op["summary"].get("counts", {}).items()}})
            self.client.set_terminated(self.run_id, op["status"])
        else:
            raise ValueError(f"tracking: unknown operation {kind!r}")
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


def read_ops(path: str | Path) -> list[dict[str, Any]]:
    """The operations of a spill file; a last line cut short by a crash is ignored (it was never acknowledged)."""
    ops = []
    for line in Path(path).read_text().splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("tracking: skipping a torn line at the end of %s", path)
    return ops


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


class TrialTracker:
    """A trial's nested run. Created on the trial's first start; a restart (resume, node loss) reuses it.

    uri None is offline mode: the run's operations go to the spill file only (replay it later). The bounds
    default to 10,000 queued operations and 600 s of outage; past them the queue spills to
    ``spill_dir/<sweep_id>__<trial_id>.jsonl`` (spill_dir: RIMS_SPILL_DIR, else ./tracking_spill).
    """

    def __init__(self, uri: str | None, experiment_id: str, parent_run_id: str, sweep_id: str, trial_id: str,
                 config: dict[str, Any], tags: dict[str, str], *, experiment: str | None = None,
                 spill_dir: str | Path | None = None, max_buffer: int | None = None,
                 max_outage_s: float | None = None) -> None:
        self.uri = uri
        spill_dir = Path(spill_dir or os.environ.get("RIMS_SPILL_DIR") or Path.cwd() / "tracking_spill")
        self.spill_path: Path = spill_dir.resolve() / f"{sweep_id}__{trial_id}.jsonl"
        self.max_buffer = max_buffer or int(os.environ.get("RIMS_TRACKING_BUFFER", 10_000))
        self.max_outage_s = max_outage_s if max_outage_s is not None else float(
            os.environ.get("RIMS_TRACKING_OUTAGE_S", 600))
        self.retry_every_s = 10.0
        self._queue: list[dict[str, Any]] = []
        self._outage_since: float | None = None
        self._next_try = 0.0
        self.last_step = -1
        self.transient_errors = 0  # failed sends that were retried (an outage, a busy store)
        self.writer: RunWriter | None = None
        if uri is not None:
            # fail fast inside MLflow (its default: 7 retries with backoff, minutes per call); we retry ourselves
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
            self.writer = RunWriter(uri)
        self._open = {"op": "open", "experiment_id": experiment_id, "experiment": experiment,
                      "parent_run_id": parent_run_id, "sweep_id": sweep_id, "trial_id": trial_id,
                      "config": config, "tags": tags}
        # a spill file left by an earlier attempt of this trial: keep appending to it, in order
        self.spilling = uri is None or self.spill_path.exists()
        if uri is None and not self.spill_path.exists():
            self._spill([self._open])
        elif uri is not None:
            self._submit(self._open)

    @property
    def run_id(self) -> str:
        return self.writer.run_id if self.writer else ""

    # -- the queue ----------------------------------------------------------------------------------------
    def _submit(self, op: dict[str, Any]) -> None:
        if self.spilling:
            if op["op"] == "artifact":
                op = {**op, "path": str(self._keep(Path(op["path"])))}
            self._spill([op])
            self._maybe_replay()
            return
        self._queue.append(op)
        self._drain()

    def _drain(self) -> None:
        now = time.monotonic()
        if self._outage_since is not None and now < self._next_try:
            self._check_bounds(now)
            return
        assert self.writer is not None
        while self._queue:
            try:
                self.writer.apply(self._queue[0])
            except Exception as e:
                if not is_transient(e):
                    # the store refused this operation: keep it in the spill file with the reason, go on
                    log.error("tracking: %s refused %s (%s); kept in %s", self.uri, self._queue[0]["op"], e,
                              self.spill_path)
                    refused = [{**self._queue.pop(0), "refused": str(e)[:500]}]
                    self._spill(refused if self.spill_path.exists() else [self._open, *refused])
                    continue
                self.transient_errors += 1
                if self._outage_since is None:
                    self._outage_since = now
                    log.warning("tracking: %s unreachable (%s); buffering and retrying", self.uri,
                                str(e).splitlines()[0][:200])
                self._next_try = now + self.retry_every_s
                self._check_bounds(now)
                return
            self._queue.pop(0)
        if self._outage_since is not None:
            log.warning("tracking: %s reachable again after %.0f s; buffered operations sent", self.uri,
                        now - self._outage_since)
        self._outage_since = None
        self.last_step = max(self.last_step, max((max(s) for s in self.writer.steps.values() if s), default=-1))

    def _check_bounds(self, now: float) -> None:
        if len(self._queue) > self.max_buffer or now - (self._outage_since or now) > self.max_outage_s:
            log.warning("tracking: %s unreachable past the bound (%d operations queued): spilling to %s; it is "
                        "sent once the store answers again, else run `rims tracking replay %s`", self.uri,
                        len(self._queue), self.spill_path, self.spill_path)
            ops = self._queue
            if not self.spill_path.exists() and ops and ops[0]["op"] != "open":
                ops = [self._open, *ops]
            self.spilling = True
            self._queue = []
            for op in ops:
                self._submit(op)

    def _spill(self, ops: list[dict[str, Any]]) -> None:
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spill_path, "a") as f:
            for op in ops:
                f.write(json.dumps(op, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _keep(self, path: Path) -> Path:
        """A copy of an artifact beside the spill file (the original may be a temporary file)."""
        keep = self.spill_path.with_suffix("") / path.name
        keep.parent.mkdir(parents=True, exist_ok=True)
        if path.resolve() != keep.resolve():
            shutil.copy2(path, keep)
        return keep

    def _maybe_replay(self, force: bool = False) -> None:
        """While spilling with a store: every retry interval, try to send the spill file and go back to live."""
        if self.writer is None or not self.spill_path.exists():
            return
        now = time.monotonic()
        if not force and now < self._next_try:
            return
        try:
            replay(self.spill_path, self.uri)
        except Exception as e:
            self._next_try = now + self.retry_every_s
            if force:
                log.error("tracking: could not send %s (%s); run `rims tracking replay %s` later", self.spill_path,
                          str(e).splitlines()[0][:200], self.spill_path)
            return
        done = self.spill_path.with_name(self.spill_path.name + f".sent-{uuid.uuid4().hex[:8]}")
        os.replace(self.spill_path, done)
        log.warning("tracking: spill file sent to %s (kept as %s)", self.uri, done)
        self.spilling, self._outage_since = False, None
        self.writer = RunWriter(self.uri)  # re-open: learn run id and steps as the store now holds them
        self._queue.insert(0, {**self._open, "set_running": False})
        self._drain()

    # -- the interface ------------------------------------------------------------------------------------
    def log(self, metrics: dict[str, float], step: int) -> None:
        """All of one report's metrics in one request; (key, step) points already in the run are skipped."""
        self._submit({"op": "metrics", "step": int(step), "time": int(time.time() * 1000),
                      "values": {k: float(v) for k, v in metrics.items()}})

    def set_tags(self, tags: dict[str, str]) -> None:
        self._submit({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def artifact(self, path: str | Path) -> None:
        path = Path(path)
        if not self.spilling and self._queue:  # queued behind an outage: the file may be temporary
            path = self._keep(path)
        self._submit({"op": "artifact", "path": str(path)})

    def close(self) -> None:
        """The trial is leaving without finish() (stopped, or an exception): one more try, then what is still
        queued goes to the spill file rather than away with the process."""
        if self.writer is not None and self._queue:
            self._next_try = 0.0
            self._drain()
        if self._queue:
            self._outage_since = -float("inf")
            self._check_bounds(time.monotonic())

    def finish(self, status: str = "FINISHED") -> None:
        """Send everything still queued (waiting up to RIMS_TRACKING_FINISH_S, default 120 s, for the store);
        what cannot be sent is in the spill file, whose path is logged."""
        self._submit({"op": "finish", "status": status})
        if self.writer is None:
            log.warning("tracking: offline; this trial's run is in %s (send it with `rims tracking replay`)",
                        self.spill_path)
            return
        deadline = time.monotonic() + float(os.environ.get("RIMS_TRACKING_FINISH_S", 120))
        while (self._queue or self.spilling) and time.monotonic() < deadline:
            if self.spilling:
                self._maybe_replay(force=True)
            else:
                self._next_try = 0.0
                self._drain()
            if self._queue or self.spilling:
                time.sleep(min(self.retry_every_s, max(0.0, deadline - time.monotonic())))
        if self._queue:
            self._outage_since = -float("inf")  # past every bound: spill now
            self._check_bounds(time.monotonic())
        if self.spilling:
            log.error("tracking: %s still unreachable; this trial's remaining operations are in %s: run "
                      "`rims tracking replay %s`", self.uri, self.spill_path, self.spill_path)

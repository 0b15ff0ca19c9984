"""A trial's nested run (TrialTracker), or none (NullTracker): the trial side of tracking.

A trial never waits on its tracking store: every call is an operation in a queue that is sent in order; when
the store is unreachable the queue is kept and retried at the next report (training goes on). Past a bound
(``RIMS_TRACKING_BUFFER`` operations or ``RIMS_TRACKING_OUTAGE_S`` seconds) the queue is appended to a spill
file whose path is logged; the trial retries the spill file itself when it finishes, and ``rims tracking replay
FILE`` sends one later. Without a store (``uri=None``, offline mode) every operation goes to the spill file.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from .spill import log, write_ops
from .writer import RunWriter, is_transient, replay

__all__ = ["NullTracker", "TrialTracker"]


class NullTracker:
    """Tracking off (benchmarks, tests of the training loop alone): same interface, does nothing."""

    run_id, last_step, spill_path = "", -1, None

    def close(self) -> None: ...

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def artifact(self, path: str | Path) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


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
        write_ops(self.spill_path, ops)

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

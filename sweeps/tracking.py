"""MLflow tracking: one parent run per sweep (driver side), one nested run per trial (trial side).

Metrics go in one ``log_batch`` per report. A resumed trial finds its run by its trial-id tag and logs only
steps beyond what the run already holds, so MLflow's append-only histories get no duplicates.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

__all__ = [
    "NullTracker",
    "SweepTracker",
    "TrialTracker",
    "absolute_tracking_uri",
    "git_state",
    "is_local_uri",
    "package_versions",
]

TAG_SWEEP, TAG_TRIAL, TAG_SEED, TAG_CONFIG = "rims.sweep_id", "rims.trial_id", "rims.seed", "rims.config_id"


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


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "ray", "mlflow", "optuna", "rims-lab"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _params(flat: dict[str, Any]) -> list[Param]:
    return [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in sorted(flat.items())]


class SweepTracker:
    """The sweep's parent run: created once, found again on resume."""

    def __init__(self, uri: str, experiment: str) -> None:
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
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(f"sweep/{k}", float(v), now, 0)
                                               for k, v in summary.get("counts", {}).items()])
        self.client.set_terminated(run_id, status)


class NullTracker:
    """Tracking off (benchmarks, tests of the training loop alone): same interface, does nothing."""

    run_id, last_step = "", -1

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def artifact(self, path: str | Path) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


class TrialTracker:
    """A trial's nested run. Created on the trial's first start; a restart (resume, node loss) reuses it."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, sweep_id: str, trial_id: str,
                 config: dict[str, Any], tags: dict[str, str]) -> None:
        self.client = MlflowClient(uri)
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_SWEEP}` = '{sweep_id}'",
            max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.last_step = max((m.step for k in found[0].data.metrics
                                  for m in self.client.get_metric_history(self.run_id, k)), default=-1)
        else:
            run = self.client.create_run(experiment_id, run_name=trial_id, tags={
                "mlflow.parentRunId": parent_run_id, TAG_SWEEP: sweep_id, TAG_TRIAL: trial_id,
                TAG_SEED: str(config.get("seed")), **tags})
            self.run_id = run.info.run_id
            self.last_step = -1
            self.client.log_batch(self.run_id, params=_params(config))
            self.client.log_text(self.run_id, json.dumps(config, indent=2, sort_keys=True), "config.json")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """All of one report's metrics in one request; steps already in the run are skipped (resume)."""
        if step <= self.last_step:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        self.last_step = step

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

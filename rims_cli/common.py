"""What several commands share: the spec loader that reports every problem, the outcome of a sweep, where a
user browses runs, and the help text of ``--mlflow-uri``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["URI_HELP", "fail", "load_or_report", "print_outcome", "runs_url"]

URI_HELP = ("the MLflow tracking store: a server (http://HOST:PORT) or sqlite:///PATH; default "
            "sqlite:///<cwd>/mlflow.db")


def fail(message: str) -> int:
    """Print ``rims: message`` to stderr; the exit status of a refused command (2)."""
    print(f"rims: {message}", file=sys.stderr)
    return 2


def load_or_report(path: str, preflight: bool = True) -> tuple[Any, str | None]:
    """The spec at path and its text, or (None, None) after printing every problem (the task's checks of this
    machine included, unless preflight is False: ``sweep submit``, whose sweep runs elsewhere).

    Imports sweeps.spec only: a refused spec costs no torch, Ray, MLflow or Optuna import (tests/rims_cli)."""
    from sweeps.spec import SpecError, load_spec

    try:
        return load_spec(path, preflight=preflight), Path(path).read_text()
    except SpecError as e:
        fail(str(e))
        return None, None


def print_outcome(res: Any) -> None:
    """A finished sweep's trial counts by outcome and its failures (rims sweep run / local)."""
    c = res.counts
    print(f"\nsweep {res.sweep_id}: {c['trials']} trials, {c['completed']} completed, {c['stopped_early']} "
          f"stopped early (scheduler, stopping rule or time budget), {c['failed']} failed, {c['errored']} errored")
    for f in res.failures:
        print(f"  failed: {f}")


def runs_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where a user sees the runs: the runs table of the MLflow UI (its experiment page opens on a GenAI
    overview instead); for a local store, the `mlflow ui` command that serves it first."""
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then http://127.0.0.1:5000/{page}"

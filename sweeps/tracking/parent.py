"""A sweep's parent run. It is created by one function (create_parent_run) and closed by one
(close_parent_run), whether the driver talks to the store (SweepTracker) or an offline sweep's spill file is
replayed later (writer.RunWriter); both runners start and finish it through open_sweep_run / finish_sweep_run,
live, offline or with tracking off."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..keys import TAG_SWEEP
from .spill import write_ops

__all__ = ["SweepTracker", "close_parent_run", "create_parent_run", "finish_sweep_run", "mlflow_params",
           "open_sweep_run"]


def mlflow_params(flat: dict[str, Any]) -> list[Any]:
    """A flat config as MLflow params, sorted by key: lists and dicts as JSON, everything else as str()."""
    from mlflow.entities import Param

    return [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in sorted(flat.items())]


def create_parent_run(client: Any, experiment_id: str, sweep_id: str, params: dict[str, Any],
                      tags: dict[str, str], spec_text: str) -> Any:
    """Create the sweep's parent run (named after the sweep, tagged with it) with the sweep's params and its
    spec as the artifact spec.yaml; returns the MLflow run."""
    run = client.create_run(experiment_id, run_name=sweep_id, tags={TAG_SWEEP: sweep_id, **tags})
    client.log_batch(run.info.run_id, params=mlflow_params(params))
    client.log_text(run.info.run_id, spec_text, "spec.yaml")
    return run


def close_parent_run(client: Any, run_id: str, summary: dict[str, Any], status: str, time_ms: int) -> None:
    """Close the parent run: the summary as summary.json, each count as the metric ``sweep/<outcome>`` at step
    0, then the status (FINISHED, or FAILED when every trial errored)."""
    from mlflow.entities import Metric

    client.log_text(run_id, json.dumps(summary, indent=2, default=str), "summary.json")
    metrics = [Metric(f"sweep/{k}", float(v), time_ms, 0) for k, v in summary.get("counts", {}).items()]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, status)


class SweepTracker:
    """The sweep's parent run on a live store: created once, found again on resume."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

    def start(self, sweep_id: str, params: dict[str, Any], tags: dict[str, str], spec_text: str) -> str:
        """Create the parent run; returns its run id."""
        return create_parent_run(self.client, self.experiment_id, sweep_id, params, tags, spec_text).info.run_id

    def finish(self, run_id: str, summary: dict[str, Any], status: str = "FINISHED") -> None:
        close_parent_run(self.client, run_id, summary, status, int(time.time() * 1000))


def open_sweep_run(uri: str | None, experiment: str, sweep_id: str, params: dict[str, Any], tags: dict[str, str],
                   spec_text: str, spill_file: str | Path | None) -> tuple[str, str]:
    """Start the parent run; returns (experiment id, run id). uri None: offline, the "sweep" operation goes to
    spill_file (a new file) and both ids are "" (replay creates the run); uri and spill_file None: tracking off."""
    if uri is not None:
        tracker = SweepTracker(uri, experiment)
        return tracker.experiment_id, tracker.start(sweep_id, params, tags, spec_text)
    if spill_file is not None:
        write_ops(spill_file, [{"op": "sweep", "experiment": experiment, "sweep_id": sweep_id, "params": params,
                                "tags": tags, "spec_text": spec_text}], new=True)
    return "", ""


def finish_sweep_run(summary: dict[str, Any], status: str, *, uri: str | None, experiment: str, run_id: str,
                     spill_file: str | Path | None) -> None:
    """Close the parent run with the sweep's summary ({"counts", "failures"}) and status: on the store at uri,
    or offline as a "sweep_finish" operation appended to spill_file; with neither, tracking is off."""
    if uri is not None:
        SweepTracker(uri, experiment).finish(run_id, summary, status)
    elif spill_file is not None:
        write_ops(spill_file, [{"op": "sweep_finish", "summary": summary, "status": status,
                                "time": int(time.time() * 1000)}])

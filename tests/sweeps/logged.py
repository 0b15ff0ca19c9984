"""One tiny trial logged to a sqlite MLflow store under a sweep's parent run, as the runner would log it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial

__all__ = ["logged_trial"]


def logged_trial(tmp_path: Path, spec: dict[str, Any], trial_id: str, experiment: str, **ctx_extra: Any
                 ) -> tuple[str, MlflowClient, Any]:
    """Runs ``spec`` with seed 0 as trial ``trial_id`` of sweep ``sweep-1`` (ctx_extra: more of run_trial's
    ctx, e.g. triton=False); returns (uri, client, its run)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweeper = SweepTracker(uri, experiment)
    parent = sweeper.start("sweep-1", {"search.algorithm": "grid"}, {}, f"name: {spec['name']}\n")
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
           "sweep_id": "sweep-1", "seeds": [0], "tags": {}, "cpus": 1, **ctx_extra}
    run_trial(resolve({**base_config(load_spec(spec)), "seed": 0}), ctx, trial_id=trial_id, checkpoint_dir=None,
              report=lambda m, d: None)
    client = MlflowClient(uri)
    (run,) = client.search_runs([sweeper.experiment_id], filter_string=f"tags.`rims.trial_id` = '{trial_id}'")
    return uri, client, run

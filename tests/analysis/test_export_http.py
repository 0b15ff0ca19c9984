"""Export from a real `mlflow server` over HTTP (the API path) gives the same tables as the direct sqlite path
on the same store."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from analysis.export import export_experiment
from analysis.schema import METRICS_FILE, RUNS_FILE
from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial
from tests.sweeps.servers import mlflow_server

pytestmark = pytest.mark.integration

SPEC = {"name": "h", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}}


def test_http_export_equals_sqlite_export(tmp_path):
    with mlflow_server(tmp_path) as uri:
        sweeper = SweepTracker(uri, "http-export")
        parent = sweeper.start("h-1", {"search.algorithm": "grid"}, {}, "name: h\n")
        ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
               "sweep_id": "h-1", "seeds": [0], "tags": {}, "cpus": 1}
        base = base_config(load_spec(SPEC))
        for kind in ("rims", "lstm"):
            run_trial(resolve({**base, "model.kind": kind, "seed": 0}), ctx, trial_id=kind, checkpoint_dir=None,
                      report=lambda m, d: None)
        http = export_experiment("http-export", tmp_path / "http", uri)
    assert http.method_used == "api" and http.n_runs == 3
    direct = export_experiment("http-export", tmp_path / "sql", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert direct.method_used == "sql"
    for name, key in ((RUNS_FILE, ["run_id"]), (METRICS_FILE, ["run_id", "key", "step"])):
        a = pq.read_table(tmp_path / "http" / name).sort_by([(k, "ascending") for k in key])
        b = pq.read_table(tmp_path / "sql" / name).sort_by([(k, "ascending") for k in key])
        assert sorted(a.column_names) == sorted(b.column_names)
        b = b.select(a.column_names)
        assert a.schema == b.schema, name
        assert a.to_pylist() == b.to_pylist(), name

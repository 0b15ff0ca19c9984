"""A trial survives the loss of the node it runs on: a two-worker `ray.cluster_utils.Cluster`, the trial's node
removed ungracefully mid-trial; the trial resumes from its last checkpoint on the other node and ends with one
MLflow run whose metric history has no gap and no repeated step."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from tests.sweeps.servers import mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_trial_resumes_on_another_node_after_its_node_dies(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the workers only
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]  # one spare: add_node needs main thread
    removed: dict[str, str] = {}
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        with mlflow_server(tmp_path) as uri:
            raw = {"name": "nodeloss", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
                   # long enough (~300 steps) that the node dies mid-trial, not after the trial is done
                   "model": {"kind": "rims", "hidden_size": 48, "num_units": 3, "top_k": 2},
                   "optim": {"lr": 0.01, "batch_size": 32, "max_steps": 300, "eval_every": 10}, "max_failures": 2}
            client = MlflowClient(uri)

            def kill_the_trials_node() -> None:
                deadline = time.time() + 240
                while time.time() < deadline:
                    exp = client.get_experiment_by_name("nodeloss")
                    runs = client.search_runs([exp.experiment_id], filter_string="tags.`rims.trial_id` != ''") \
                        if exp else []
                    if runs and runs[0].data.metrics.get("step", 0) >= 20:
                        node_id = runs[0].data.tags["rims.node_id"]
                        node = next(w for w in workers if w.node_id == node_id)
                        cluster.remove_node(node, allow_graceful=False)
                        removed["node_id"] = node_id
                        return
                    time.sleep(0.2)

            killer = threading.Thread(target=kill_the_trials_node, daemon=True)
            killer.start()
            res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=uri, storage_path=tmp_path / "results",
                            quiet=True)
            killer.join(timeout=5)
            assert removed, "the trial finished before its node could be removed"
            assert res.counts == {"trials": 1, "completed": 1, "stopped_early": 0, "failed": 0, "errored": 0}
            runs = client.search_runs([res.experiment_id], filter_string="tags.`rims.trial_id` != ''")
            assert len(runs) == 1
            run = runs[0]
            assert run.info.status == "FINISHED"
            assert run.data.tags["rims.node_id"] != removed["node_id"]  # it finished elsewhere
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/ce")]
            assert steps == list(range(10, 301, 10))
            print(f"\nRELIABILITY node loss: trial 1/1 completed on another node after its node was removed, runs 1, "
                  f"val/ce points expected 30, found {len(steps)} (steps 10..300, no gap or repeat)")
    finally:
        ray.shutdown()
        cluster.shutdown()

"""A trial survives the loss of the node it runs on: a two-worker `ray.cluster_utils.Cluster`, the trial's node
removed ungracefully mid-trial; the trial resumes from its last checkpoint on the other node and ends with one
MLflow run whose metric history has no gap and no repeated step."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.cluster_utils import Cluster

from sweeps.runner import run_sweep
from sweeps.spec import load_spec
from tests.sweeps.servers import kill, mlflow_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_AT = 20  # the step whose report removes the trial's node
# what the callback below acts on: set by the test (module state: Tune pickles its callbacks with the experiment)
NODE_LOSS: dict[str, Any] = {}


class RemoveTheTrialsNode(tune.Callback):
    """On the driver, when Tune receives a trial's report of step KILL_AT, the node the trial runs on dies: the
    node is removed from the cluster and every process it ran (Ray's workers, the trial's among them) is
    SIGKILLed with it. The trial is then inside that report: a function trainable's report returns only once Tune
    has handled it, so the node dies mid-trial, however fast or slow the machine."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("step") != KILL_AT or "node_id" in NODE_LOSS:
            return
        client = MlflowClient(NODE_LOSS["uri"])
        run = client.search_runs([client.get_experiment_by_name("nodeloss").experiment_id],
                                 filter_string=f"tags.`rims.trial_id` = '{trial.trial_id}'")[0]
        node_id = run.data.tags["rims.node_id"]
        node = next(w for w in NODE_LOSS["workers"] if w.node_id == node_id)
        # the raylet's children: its workers, which outlive a SIGKILLed raylet for a while (the driver calls a
        # trial's actor directly, so the trial would go on training there)
        raylet = node.all_processes["raylet"][0].process.pid
        doomed = {result["pid"], *children(raylet)}
        NODE_LOSS["cluster"].remove_node(node, allow_graceful=False)
        kill(list(doomed))
        wait_until(lambda: not [pid for pid in doomed if alive(pid)], "the removed node's processes to be gone")
        NODE_LOSS["node_id"] = node_id


def children(parent: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (proc / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
                    out.append(int(proc.name))
    return out


def alive(pid: int) -> bool:
    """pid runs (a zombie, dead and not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class RunConfig(tune.RunConfig):
    """tune.RunConfig with the callback above (the runner builds its own RunConfig; this is what it gets)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), RemoveTheTrialsNode()]
        super().__init__(*args, **kwargs)


def test_trial_resumes_on_another_node_after_its_node_dies(tmp_path, monkeypatch):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the workers only
    workers = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]  # one spare: add_node needs main thread
    monkeypatch.setattr(tune, "RunConfig", RunConfig)
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        with mlflow_server(tmp_path) as uri:
            NODE_LOSS.update(uri=uri, cluster=cluster, workers=workers)
            raw = {"name": "nodeloss", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
                   "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
                   "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 60, "eval_every": 10}, "max_failures": 2}
            res = run_sweep(load_spec(raw), yaml.safe_dump(raw), mlflow_uri=uri, storage_path=tmp_path / "results",
                            quiet=True)
            removed = NODE_LOSS.get("node_id")
            assert removed, f"no report of step {KILL_AT} reached Tune"
            assert res.counts == {"trials": 1, "completed": 1, "stopped_early": 0, "failed": 0, "errored": 0}, \
                (res.counts, res.failures)
            client = MlflowClient(uri)
            runs = client.search_runs([res.experiment_id], filter_string="tags.`rims.trial_id` != ''")
            assert len(runs) == 1
            run = runs[0]
            assert run.info.status == "FINISHED"
            assert run.data.tags["rims.node_id"] != removed  # it finished elsewhere
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/ce")]
            assert steps == list(range(10, 61, 10))
            print(f"\nRELIABILITY node loss: trial 1/1 completed on another node after its node was removed at step "
                  f"{KILL_AT}, runs 1, val/ce points expected 6, found {len(steps)} (steps 10..60, no gap or repeat)")
    finally:
        NODE_LOSS.clear()
        ray.shutdown()
        cluster.shutdown()

"""Cluster mode for real: `ray start --head` on free ports, `mlflow server` on 127.0.0.1, `ray job submit`
of `rims sweep run ... --address auto --mlflow-uri http://...`, exactly as the README shows; then the runs are
read back over HTTP. Only the processes this test started are stopped (by PID: `ray stop` would stop every
Ray process on the machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.sweeps.servers import BIN, GUARD_S, free_port, kill, mlflow_server, pids_with, wait_http, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path):
    temp = Path(f"/tmp/rimsray{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    gcs, dash = free_port(), free_port()
    # every port on a free one: another Ray on this machine (a user's, a sweep's) holds the defaults, and a job
    # agent that cannot bind its port never registers ("No available agent to submit job")
    agent_ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
    started_ray = False
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2",
                        "--node-ip-address=127.0.0.1", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                        "--include-dashboard=true", f"--temp-dir={temp}", "--disable-usage-stats", *agent_ports],
                       check=True, env=env, capture_output=True, timeout=GUARD_S)
        started_ray = True
        with mlflow_server(tmp_path, env) as ml_url:
            wait_http(f"http://127.0.0.1:{dash}/api/version")
            # the job agent registers a while after the dashboard answers: until a trivial job runs
            probe = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--", "true"]
            wait_until(lambda: subprocess.run(probe, env=env, capture_output=True, timeout=GUARD_S).returncode == 0,
                       "a trivial job through `ray job submit`")
            yield {"env": env, "gcs": gcs, "dashboard": f"http://127.0.0.1:{dash}", "mlflow": ml_url}
    finally:
        if started_ray:
            kill(pids_with(str(temp)) + pids_with(f"--port={gcs}") + pids_with(f":{gcs}"))


def test_ray_job_submit_sweep_to_a_running_cluster_logs_to_an_mlflow_server(cluster, tmp_path):
    spec = tmp_path / "cluster.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "cluster", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2},
        "space": {"model.kind": {"grid": ["rims", "lstm"]}}}))
    # `rims sweep submit` runs `ray job submit --working-dir . -- rims sweep run SPEC --address auto ...`
    cmd = [str(BIN / "rims"), "sweep", "submit", str(spec), "--address", cluster["dashboard"],
           "--mlflow-uri", cluster["mlflow"], "--storage-path", str(tmp_path / "results"), "--quiet"]
    proc = subprocess.run(cmd, env=cluster["env"], capture_output=True, text=True, timeout=GUARD_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("+ ") and " job submit " in proc.stdout.splitlines()[0]
    assert "2 trials, 2 completed" in proc.stdout, proc.stdout[-3000:]
    client = MlflowClient(cluster["mlflow"])
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(kids) == 2
    assert {r.data.params["model.kind"] for r in kids} == {"rims", "lstm"}
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
               for r in kids)
    # the sha is the submitting working tree's
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert parents[0].data.tags["rims.git_sha"] == head


def test_local_tracking_store_is_refused_on_a_multi_node_cluster(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from sweeps.runner import check_cluster
    from sweeps.spec import SpecError, load_spec

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    try:
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        spec = load_spec({"name": "x", "task": {"name": "copying"}, "resources": {"cpu": 2}})
        with pytest.raises(SpecError) as info:
            check_cluster(spec, f"sqlite:///{tmp_path / 'mlflow.db'}")
        msg = str(info.value)
        assert "--mlflow-uri" in msg and "mlflow server" in msg
        assert "resources.cpu" in msg and "largest node has 1.0" in msg
    finally:
        ray.shutdown()
        c.shutdown()

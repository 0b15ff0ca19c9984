"""RL through the sweep machinery: an atari spec on Ray Tune, logged to a real ``mlflow server`` under the same
names as supervised sweeps; a bad atari spec refused. ``rims rl train`` is tested in tests/rims_cli/test_rl.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from analysis.export import export_experiment
from analysis.report import build_report
from analysis.tables import ablation_table
from sweeps.evaluate import evaluate_run
from sweeps.runner import run_sweep
from sweeps.spec import SpecError, load_spec

from .servers import mlflow_server

pytestmark = pytest.mark.integration
SPEC = {"name": "pong_smoke", "task": {"name": "atari", "env": "ALE/Pong-v5"},
        "model": {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2},
        "space": {"model.kind": {"grid": ["rims", "lstm"]}}}


@pytest.mark.slow
def test_atari_spec_on_tune_logs_like_a_supervised_sweep(tmp_path):
    with mlflow_server(tmp_path / "store") as uri:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            res = run_sweep(load_spec(SPEC), yaml.safe_dump(SPEC), mlflow_uri=uri, storage_path=tmp_path / "results",
                            smoke=True, quiet=True)
        finally:
            ray.shutdown()
        assert res.counts["completed"] == 2 and res.counts["errored"] == 0, res.failures
        client = MlflowClient(uri)
        parent = client.get_run(res.parent_run_id)
        assert parent.data.params["task.name"] == "atari"
        assert parent.data.params["search.metric"] == "val/episode_return_mean" and parent.data.params[
            "search.mode"] == "max"
        runs = {r.data.params["model.kind"]: r for r in client.search_runs(
            [res.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")}
        assert set(runs) == {"rims", "lstm"}
        for kind, run in runs.items():
            assert run.info.status == "FINISHED"
            p = run.data.params
            # every PPO setting is a param, defaults included, under the spec's names
            assert (p["task.env"], p["task.clip_param"], p["task.num_envs"], p["optim.lr"]) == \
                ("ALE/Pong-v5", "0.1", "2", "0.00025")
            m = run.data.metrics
            assert m["step"] == 64 and -21 <= m["val/episode_return_mean"] <= 21
            assert {"sys/env_steps_per_s", "train/policy_loss", "model/num_params"} <= set(m)
            assert any(k.startswith("rims/active_frac/") for k in m) == (kind == "rims")
            assert [h.step for h in client.get_metric_history(run.info.run_id, "val/episode_return_mean")] == [64]
        # the analysis path reads RL sweeps as it reads the others
        export_experiment("pong_smoke", tmp_path / "export", uri)
        import pyarrow.parquet as pq

        table = ablation_table(pq.read_table(tmp_path / "export" / "runs.parquet"),
                               metrics=["val/episode_return_mean"])
        assert sorted(k[0] for k in table.keys) == ["lstm", "rims"] and table.n == [1, 1]
        assert table.directions["val/episode_return_mean"] == "max", "a return is maximised"
        with pytest.raises(ValueError, match="trained by reinforcement learning"):
            evaluate_run(runs["rims"].info.run_id, {}, uri)
        report = build_report("pong_smoke", uri, tmp_path / "report")
        text = Path(report.markdown).read_text()
        assert "objective val/episode_return_mean (max)" in text
        assert "## Interquartile mean over seeds: val/episode_return_mean" in text
        iqm_rows = [ln for ln in text.splitlines() if ln.startswith("| ALE/Pong-v5 |")]
        assert sorted(r.split(" | ")[1] for r in iqm_rows) == ["lstm", "rims"]


def test_an_atari_spec_with_a_gru_baseline_or_bad_task_key_is_refused():
    with pytest.raises(SpecError, match=r"model.kind: Expected 'rims' or 'lstm' for PPO"):
        load_spec({**SPEC, "space": {"model.kind": {"grid": ["rims", "gru"]}}})
    with pytest.raises(SpecError, match=r"task.clip: unknown key, not permitted \(value 0.2\); did you mean "
                                        r"'task.clip_param'\?"):
        load_spec({**SPEC, "task": {**SPEC["task"], "clip": 0.2}})
    spec = load_spec(SPEC)
    assert (spec.optim.lr, spec.optim.batch_size, spec.optim.grad_clip) == (2.5e-4, 256, 0.5), "PPO's defaults"

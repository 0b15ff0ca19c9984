"""Fetch among distractors through the sweep machinery: a spec on Ray Tune, logged to a real ``mlflow server``
under the RL names (val/ at the training condition, eval/<m>_<condition> out of it), exported and reported with
the by-condition section; bad fetch specs refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from analysis.report import build_report
from rllib_models.fetch import FetchSettings
from sweeps.runner import run_sweep
from sweeps.spec import SpecError, load_spec

from .servers import mlflow_server

SPEC = {"name": "fetch_smoke", "task": {"name": "fetch", "eval_episodes": 3},
        "model": {"kind": "rims", "hidden_size": 24, "num_units": 4, "top_k": 2},
        "space": {"model.kind": {"grid": ["rims", "lstm"]}}}
CONDITIONS = FetchSettings().conditions()  # distractors2 (training), distractors4, novelcolors2, novelkinds2, novel4


@pytest.mark.slow
@pytest.mark.integration
def test_fetch_spec_on_tune_logs_every_condition_and_reports_them(tmp_path):
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
        assert (parent.data.params["search.metric"], parent.data.params["search.mode"]) == ("val/success_rate", "max")
        runs = {r.data.params["model.kind"]: r for r in client.search_runs(
            [res.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")}
        assert set(runs) == {"rims", "lstm"}
        for run in runs.values():
            m, p = run.data.metrics, run.data.params
            # one PPO iteration of 2 envs x 32 steps; RLlib's sampler may overshoot by a step at episode ends
            assert run.info.status == "FINISHED" and 64 <= m["step"] < 128
            assert (p["task.num_distractors"], p["task.view_size"], p["optim.lr"]) == ("2", "5", "0.001")
            for c in CONDITIONS:
                assert 0 <= m[f"eval/success_rate_{c}"] <= 1
                # 3 episodes: each ends by a pickup or at the limit of 5 * 6^2 = 180 steps
                assert 1 <= m[f"eval/episode_len_mean_{c}"] <= 180
            assert 0 <= m["val/success_rate"] <= 1 and m["val/success_rate"] in (0, 1 / 3, 2 / 3, 1)
        text = Path(build_report("fetch_smoke", uri, tmp_path / "report").markdown).read_text()
        assert "## By condition: success_rate" in text
        rows = [ln.split(" | ")[:3] for ln in text.splitlines() if ln.startswith("| novelcolors2 |")]
        assert sorted(r[1] for r in rows) == ["lstm", "rims"] and all(r[2] == "1" for r in rows)


@pytest.mark.parametrize(("task", "path", "match"), [
    ({"test_conditions": ["more"]}, "task.test_conditions", "Expected <variant><count>"),
    ({"test_conditions": ["distractors2"]}, "task.test_conditions", "never seen in training"),
    ({"size": 4}, "task.test_conditions", "cannot be built from this room"),
    ({"view_size": 4}, "task.view_size", "Expected an odd number"),
    ({"api_stack": "old"}, "task.api_stack", "Expected 'new'"),
])
def test_a_bad_fetch_spec_is_refused_naming_the_key(task, path, match):
    with pytest.raises(SpecError) as e:
        load_spec({**SPEC, "task": {**SPEC["task"], **task}})
    assert any(p == path and match in m for p, m in e.value.errors), e.value.errors


def test_fetch_declares_the_minigrid_ppo_defaults():
    spec = load_spec(SPEC)
    assert (spec.optim.lr, spec.optim.batch_size, spec.optim.grad_clip) == (1e-3, 256, 0.5)

"""Re-evaluate a finished trial on new conditions: ``rims eval RUN_ID --set task.test_blanks=400,800``.

Loads the run's final checkpoint and resolved config from MLflow, applies the overrides to ``task.*`` (the
evaluation conditions; the model is what it is), evaluates, and logs the metrics to the same run at its
final step, in one batch.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from .tasks import TASKS, RLTask
from .trial import CHECKPOINT_FILE, load_checkpoint, nest

__all__ = ["evaluate_run", "load_trial", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["task.test_blanks=400,800", "task.eval_size=64"] -> {"task.test_blanks": [400, 800], ...}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("task."):
            raise ValueError(f"--set: expected task.<key>=<value>, got {item!r} (only evaluation settings change)")
        parsed = yaml.safe_load(f"[{value}]") if "," in value else yaml.safe_load(value)
        if key == "task.test_blanks" and not isinstance(parsed, list):
            parsed = [parsed]
        out[key] = parsed
    return out


def load_trial(run_id: str, tracking_uri: str, overrides: dict[str, Any] | None = None) -> tuple[Any, Any, dict]:
    """A finished trial's task (with task.* overrides), trained model (eval mode, CPU) and checkpoint state,
    rebuilt from its MLflow artifacts config.json and state.pt."""
    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
    except Exception as e:
        raise ValueError(f"run {run_id!r} not found in {tracking_uri} ({str(e).splitlines()[0][:200]}); check the "
                         "id, or pass --mlflow-uri of the store that holds it") from None
    with tempfile.TemporaryDirectory() as d:
        try:
            cfg_path = client.download_artifacts(run_id, "config.json", d)
        except Exception as e:
            raise ValueError(f"run {run_id} has no final checkpoint (no config.json); only trials that finished can "
                             f"be loaded ({e})") from None
        task_name = json.loads(Path(cfg_path).read_text()).get("task.name")
        if task_name in TASKS and issubclass(TASKS[task_name], RLTask):
            raise ValueError(f"run {run_id} is a {task_name!r} trial, trained by reinforcement learning; re-evaluation "
                             "with task overrides is for the supervised tasks (its greedy returns are logged as "
                             "val/episode_return_mean at every report)")
        try:
            ckpt_path = client.download_artifacts(run_id, CHECKPOINT_FILE, d)
        except Exception as e:
            raise ValueError(f"run {run_id} has no final checkpoint ({CHECKPOINT_FILE}) or config.json; only "
                             f"trials that finished can be loaded ({e})") from None
        flat = {**json.loads(Path(cfg_path).read_text()), **(overrides or {})}
        state = load_checkpoint(Path(ckpt_path).parent)
    task_cls = TASKS[flat["task.name"]]
    settings = task_cls.settings_model(**{k: v for k, v in nest(flat, "task").items() if k != "name"})
    task = task_cls(settings, nest(flat, "model"), "cpu")
    model = task.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    return task, model, state


def evaluate_run(run_id: str, overrides: dict[str, Any], tracking_uri: str) -> dict[str, float]:
    """Evaluate run_id's final checkpoint with task.* overrides; log and return the metrics."""
    try:
        task, model, state = load_trial(run_id, tracking_uri, overrides)
    except ValueError as e:
        raise ValueError(f"rims eval: {e}") from None
    with torch.no_grad():
        metrics = task.evaluate(model)
    now = int(time.time() * 1000)
    client = MlflowClient(tracking_uri)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(state["step"])) for k, v in metrics.items()])
    client.set_tag(run_id, "rims.reevaluated", json.dumps(overrides))
    return metrics

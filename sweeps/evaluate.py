"""Re-evaluate a finished trial on new conditions: ``rims eval RUN_ID --set task.test_blanks=400,800``.

Loads the run's final checkpoint and resolved config from MLflow, applies the overrides to ``task.*`` (the
evaluation conditions; the model is what it is), evaluates, and logs to the same run, at its final step, in one
batch, only the ``eval/*`` metrics the run does not have yet: ``val/*`` and conditions already evaluated stay as
the trial logged them (a second point at the same step would make a duplicate in the run's history). A list of
conditions (``task.test_*=a,b``) is evaluated one condition at a time, so progress can be reported per condition.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from .keys import TAG_REEVALUATED, TASK_KEYS
from .tasks import build_task
from .trial import CHECKPOINT_FILE, load_checkpoint

__all__ = ["EvalResult", "evaluate_run", "load_trial", "parse_overrides"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["task.test_blanks=400,800", "task.eval_size=64"] -> {"task.test_blanks": [400, 800], ...}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("task."):
            raise ValueError(f"--set: expected task.<key>=<value>, got {item!r} (only evaluation settings change)")
        parsed = yaml.safe_load(f"[{value}]") if "," in value else yaml.safe_load(value)
        if key.startswith("task.test_") and not isinstance(parsed, list):
            parsed = [parsed]
        out[key] = parsed
    return out


def _fetch(client: MlflowClient, run_id: str, tracking_uri: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the run, its resolved flat config, its final checkpoint state) from its artifacts."""
    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise ValueError(f"run {run_id!r} not found in {tracking_uri} ({str(e).splitlines()[0][:200]}); check the "
                         "id, or pass --mlflow-uri of the store that holds it") from None
    with tempfile.TemporaryDirectory() as d:
        try:
            cfg_path = client.download_artifacts(run_id, "config.json", d)
        except Exception as e:
            raise ValueError(f"run {run_id} has no final checkpoint (no config.json); only trials that finished can "
                             f"be loaded ({e})") from None
        flat = json.loads(Path(cfg_path).read_text())
        task_name = flat.get("task.name")
        if task_name in TASK_KEYS and TASK_KEYS[task_name].rl:
            raise ValueError(f"run {run_id} is a {task_name!r} trial, trained by reinforcement learning; re-evaluation "
                             "with task overrides is for the supervised tasks (its greedy returns are logged as "
                             "val/episode_return_mean at every report)")
        try:
            ckpt_path = client.download_artifacts(run_id, CHECKPOINT_FILE, d)
        except Exception as e:
            raise ValueError(f"run {run_id} has no final checkpoint ({CHECKPOINT_FILE}) or config.json; only "
                             f"trials that finished can be loaded ({e})") from None
        state = load_checkpoint(Path(ckpt_path).parent)
    return run, flat, state


def _task(flat: dict[str, Any], overrides: dict[str, Any]) -> Any:
    flat = {**flat, **overrides}
    return build_task(flat, "cpu")


def _model(task: Any, state: dict[str, Any], run_id: str) -> Any:
    model = task.build_model()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"run {run_id}: its checkpoint does not fit the model this code builds from its config "
                         f"(saved by another version of rims_core?): {str(e).splitlines()[0][:300]}") from None
    model.eval()
    return model


def load_trial(run_id: str, tracking_uri: str, overrides: dict[str, Any] | None = None) -> tuple[Any, Any, dict]:
    """A finished trial's task (with task.* overrides), trained model (eval mode, CPU) and checkpoint state,
    rebuilt from its MLflow artifacts config.json and state.pt."""
    _, flat, state = _fetch(MlflowClient(tracking_uri), run_id, tracking_uri)
    task = _task(flat, overrides or {})
    return task, _model(task, state, run_id), state


@dataclass
class EvalResult:
    """What ``rims eval`` did: the run and step it logged to, the new metrics it logged, and the metrics it
    evaluated that the run already had ({name: (logged value, value now)}; not logged again)."""

    run_id: str
    step: int
    experiment: str
    logged: dict[str, float]
    kept: dict[str, tuple[float, float]] = field(default_factory=dict)


def _passes(overrides: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One (label, overrides) per condition when one task.test_* override lists several, else one pass."""
    lists = [k for k, v in overrides.items() if k.startswith("task.test_") and isinstance(v, list) and len(v) > 1]
    if len(lists) != 1:
        label = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the run's own settings"
        return [(label, overrides)]
    key = lists[0]
    return [(f"{key}={v}", {**overrides, key: [v]}) for v in overrides[key]]


def evaluate_run(run_id: str, overrides: dict[str, Any], tracking_uri: str, *,
                 progress: Callable[[str], None] | None = None) -> EvalResult:
    """Evaluate run_id's final checkpoint with task.* overrides; log the eval/* metrics the run does not have yet
    at its final step and return what was done. progress(line) hears about each step (the CLI prints them)."""
    say = progress or (lambda _line: None)
    client = MlflowClient(tracking_uri)
    say(f"rims eval: run {run_id} in {tracking_uri}: fetching its config and final checkpoint")
    try:
        run, flat, state = _fetch(client, run_id, tracking_uri)
        passes = [(label, _task(flat, o)) for label, o in _passes(overrides)]
        model = _model(passes[0][1], state, run_id)
    except ValueError as e:
        raise ValueError(f"rims eval: {e}") from None
    step = int(state["step"])
    have = dict(run.data.metrics)
    say(f"rims eval: loaded {flat.get('model.kind')} at step {step}; {len(passes)} condition"
        f"{'s' * (len(passes) != 1)} to evaluate")
    new: dict[str, float] = {}
    kept: dict[str, tuple[float, float]] = {}
    for i, (label, task) in enumerate(passes, 1):
        t0 = time.perf_counter()
        say(f"  [{i}/{len(passes)}] {label}: evaluating ...")
        with torch.no_grad():
            metrics = task.evaluate(model)
        fresh = {k: float(v) for k, v in metrics.items() if k.startswith("eval/") and k not in have and k not in new}
        for k, v in metrics.items():
            if k.startswith("eval/") and k in have:
                kept[k] = (float(have[k]), float(v))
        new.update(fresh)
        shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(fresh.items())) or "nothing new"
        say(f"  [{i}/{len(passes)}] {label}: done in {time.perf_counter() - t0:.1f} s: {shown}")
    if new:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in sorted(new.items())])
        history = json.loads(run.data.tags.get(TAG_REEVALUATED, "[]") or "[]")
        history = history if isinstance(history, list) else [history]
        client.set_tag(run_id, TAG_REEVALUATED, json.dumps([*history, overrides][-20:]))  # tags hold <= 8,000 chars
    experiment = client.get_experiment(run.info.experiment_id).name
    return EvalResult(run_id, step, experiment, new, kept)

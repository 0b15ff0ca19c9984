"""Tune's function trainable: ``run_trial`` with Tune's checkpoint, trial id and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from .trial import run_trial

__all__ = ["train_trial"]


def train_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune function trainable: run_trial with Tune's checkpoint, trial id and report."""
    ckpt = tune.get_checkpoint()

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None)

    trial_id = tune.get_context().get_trial_id()
    if ckpt is None:
        run_trial(config, ctx, trial_id=trial_id, checkpoint_dir=None, report=report)
    else:
        with ckpt.as_directory() as d:
            run_trial(config, ctx, trial_id=trial_id, checkpoint_dir=Path(d), report=report)

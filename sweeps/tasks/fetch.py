"""Fetch among distractors with PPO (the seed's "environment with novel distractors"): a RIM or LSTM policy
trained by RLlib in the training rooms, scored on fixed rooms of the training condition (``val/``) and of each
test condition (``eval/<m>_<condition>``). The settings and evaluation are rllib_models.fetch; the declaration
(optim defaults, checks, smoke run) is declared.FetchDeclaration.
"""

from __future__ import annotations

from typing import Any

from rllib_models.fetch import fetch_evaluator
from rllib_models.ppo import train_ppo

from .base import RLTask
from .declared import FetchDeclaration

__all__ = ["FetchTask"]


class FetchTask(FetchDeclaration, RLTask):
    """PPO in MiniGrid rooms with distractors; the objective is val/success_rate."""

    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any) -> None:
        gpus = 1.0 if self.device.type == "cuda" else 0.0
        train_ppo(self.settings, self.model_settings, optim, seed, checkpoint_dir=checkpoint_dir, log=log,
                  report=report, gpus=gpus, save=save, load=load, evaluate=fetch_evaluator(self.settings))

"""Atari with PPO (the paper's Section 4.4): a RIM or LSTM policy trained by RLlib, reported like any trial.

``task.*`` holds the environment and PPO settings (rllib_models.PPOSettings, CleanRL's Atari defaults); the
sweep's ``model.*`` picks the policy's recurrent core (``kind: rims`` -> rllib_models.RIMRLModule, ``kind: lstm``
-> RLlib's built-in LSTM at the same hidden size, on the same encoder); ``optim.*`` keeps its meaning in RL units:
``max_steps`` and ``eval_every`` count env steps (agent steps, 4 frames each), ``batch_size`` is the PPO minibatch.
The declaration (settings, optim defaults, checks, smoke run) is declared.AtariDeclaration.
"""

from __future__ import annotations

from typing import Any

from rllib_models.ppo import train_ppo

from .base import RLTask
from .declared import AtariDeclaration

__all__ = ["AtariTask"]


class AtariTask(AtariDeclaration, RLTask):
    """PPO on an ALE game (``task.env``); the objective is the greedy evaluation return."""

    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any) -> None:
        gpus = 1.0 if self.device.type == "cuda" else 0.0
        train_ppo(self.settings, self.model_settings, optim, seed, checkpoint_dir=checkpoint_dir, log=log,
                  report=report, gpus=gpus, save=save, load=load)

"""Atari with PPO (the paper's Section 4.4): a RIM or LSTM policy trained by RLlib, reported like any trial.

``task.*`` holds the environment and PPO settings (rllib_models.PPOSettings, CleanRL's Atari defaults); the
sweep's ``model.*`` picks the policy's recurrent core (``kind: rims`` -> rllib_models.RIMRLModule, ``kind: lstm``
-> RLlib's built-in LSTM at the same hidden size, on the same encoder); ``optim.*`` keeps its meaning in RL units:
``max_steps`` and ``eval_every`` count env steps (agent steps, 4 frames each), ``batch_size`` is the PPO minibatch.
The declaration (settings, optim defaults, checks, smoke run) is declared.AtariDeclaration.
"""

from __future__ import annotations

from .base import PPOTask
from .declared import AtariDeclaration

__all__ = ["AtariTask"]


class AtariTask(AtariDeclaration, PPOTask):
    """PPO on an ALE game (``task.env``); the objective is the greedy evaluation return (RLlib's evaluation)."""

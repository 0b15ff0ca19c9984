"""Fetch among distractors with PPO (the seed's "environment with novel distractors"): a RIM or LSTM policy
trained by RLlib in the training rooms, scored on fixed rooms of the training condition (``val/``) and of each
test condition (``eval/<m>_<condition>``). The settings and evaluation are rllib_models.fetch; the declaration
(optim defaults, checks, smoke run) is declared.FetchDeclaration.
"""

from __future__ import annotations

from typing import Any

from .base import PPOTask
from .declared import FetchDeclaration

__all__ = ["FetchTask"]


class FetchTask(FetchDeclaration, PPOTask):
    """PPO in MiniGrid rooms with distractors; the objective is val/success_rate."""

    def evaluator(self) -> Any:
        from rllib_models.fetch import fetch_evaluator

        return fetch_evaluator(self.settings)

"""Atari with PPO (the paper's Section 4.4): a RIM or LSTM policy trained by RLlib, reported like any trial.

``task.*`` holds the environment and PPO settings (rllib_models.PPOSettings, CleanRL's Atari defaults); the
sweep's ``model.*`` picks the policy's recurrent core (``kind: rims`` -> rllib_models.RIMRLModule, ``kind: lstm``
-> RLlib's built-in LSTM at the same hidden size, on the same encoder); ``optim.*`` keeps its meaning in RL units:
``max_steps`` and ``eval_every`` count env steps (agent steps, 4 frames each), ``batch_size`` is the PPO minibatch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from rllib_models.ppo import PPOSettings, check_settings, train_ppo

from .base import RLTask

__all__ = ["AtariTask"]


class AtariTask(RLTask):
    """PPO on an ALE game (``task.env``); the objective is the greedy evaluation return."""

    name: ClassVar[str] = "atari"
    settings_model = PPOSettings
    objective: ClassVar[tuple[str, str]] = ("val/episode_return_mean", "max")
    metric_docs: ClassVar[dict[str, str]] = {
        "episode_return_mean": "mean episode return: train/ over the last 20 training episodes (clipped rewards, "
                               "one life each), val/ over task.eval_episodes greedy games at each report (raw score)",
        "episode_len_mean": "mean episode length in agent steps (train/ and val/ as above)",
        "policy_loss": "PPO clipped surrogate loss (train/)",
        "vf_loss": "value function loss (train/)",
        "entropy": "policy entropy (train/)",
        "loss": "total PPO loss (train/)",
        "lr": "learning rate at this report (train/)",
        "vf_explained_var": "explained variance of the value function (train/)",
        "iterations": "PPO iterations so far (train/)",
    }
    # CleanRL's Atari PPO: lr 2.5e-4, minibatch 1024 / 4 = 256, 10M env steps, global grad norm 0.5
    optim_defaults: ClassVar[dict[str, Any]] = {"lr": 2.5e-4, "batch_size": 256, "max_steps": 10_000_000,
                                                "grad_clip": 0.5, "eval_every": 102_400}

    @classmethod
    def check(cls, settings: PPOSettings, model: dict[str, Any], optim: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            check_settings(settings, model, optim["batch_size"])
        except ValueError as e:
            msg = str(e)
            path, _, rest = msg.partition(": ")
            path = {"model_config": "model", "env": "task.env"}.get(path, path)
            return [(path if path.startswith(("task.", "model", "optim.")) else "task", rest or msg)]
        return []

    @classmethod
    def preflight(cls, settings: PPOSettings) -> list[tuple[str, str]]:
        """The game exists in this machine's ale-py (ROMs ship with it)."""
        return [e for e in cls.check(settings, {"kind": "lstm"}, {"batch_size": 1}) if e[0] == "task.env"]

    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any) -> None:
        gpus = 1.0 if self.device.type == "cuda" else 0.0
        train_ppo(self.settings, self.model_settings, optim, seed, checkpoint_dir=checkpoint_dir, log=log,
                  report=report, gpus=gpus, save=save, load=load)

    @classmethod
    def reports(cls, settings: PPOSettings, optim: dict[str, Any]) -> int:
        """Reports come at whole PPO iterations, so they are counted in iterations."""
        every = max(1, math.ceil(optim["eval_every"] / settings.batch_size))
        return max(1, math.ceil(math.ceil(optim["max_steps"] / settings.batch_size) / every))

    @classmethod
    def smoke(cls, task: dict[str, Any], optim: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One tiny iteration: 2 envs x 32 steps, one epoch, one greedy evaluation game."""
        task = {**task, "num_envs": 2, "rollout_length": 32, "num_epochs": 1,
                "eval_episodes": min(1, task.get("eval_episodes", 1)),
                "max_seq_len": min(16, task.get("max_seq_len", 16))}
        return task, {**optim, "batch_size": 32, "max_steps": 64, "eval_every": 64}

"""The names sweeps write and analysis reads: MLflow tags, each task's objective and what its metrics measure.

This module imports nothing but the standard library, so analysis (which reads what sweeps wrote: MLflow runs,
Parquet exports) can use it without the training stack. It is the one module analysis imports from sweeps.

Metric names: ``train/<m>``, ``val/<m>`` (the training distribution) and ``eval/<m>_<condition>`` (out of it),
where ``<m>`` is a base metric below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "COPY_RECALL",
    "COPY_SYMBOLS",
    "DIGITS_STAND_IN",
    "FASHION_STAND_IN",
    "SMNIST_SOURCES",
    "TAG_CONFIG",
    "TAG_CUDA_GRAPH",
    "TAG_DEVICE",
    "TAG_FAILURE",
    "TAG_GIT_DIRTY",
    "TAG_GIT_SHA",
    "TAG_NODE",
    "TAG_REEVALUATED",
    "TAG_RUNNER",
    "TAG_SEED",
    "TAG_SPEC_PATH",
    "TAG_STOPPED_EARLY",
    "TAG_SUPERSEDED_BY",
    "TAG_SWEEP",
    "TAG_TRIAL",
    "TAG_TRITON",
    "TAG_VARYING",
    "TAG_VERSION_PREFIX",
    "TASK_KEYS",
    "MetricInfo",
    "TaskKeys",
]

# --- MLflow tags (every run of a sweep) -------------------------------------------------------------------------
TAG_SWEEP = "rims.sweep_id"  # the sweep a run belongs to (parent and trial runs)
TAG_TRIAL = "rims.trial_id"  # a trial run's id within its sweep (absent on the parent run)
TAG_SEED = "rims.seed"  # a trial run's seed
TAG_CONFIG = "rims.config_id"  # the same for all seeds of one configuration (sweeps.flat.config_id)
TAG_VARYING = "rims.varying"  # parent: the spec keys the sweep varies, comma-separated (trial runs are named by them)
TAG_SPEC_PATH = "rims.spec_path"  # parent: the spec file the sweep was submitted with
TAG_GIT_SHA = "rims.git_sha"  # parent: the commit the sweep ran at
TAG_GIT_DIRTY = "rims.git_dirty"  # parent: "true" when the working tree had uncommitted changes
TAG_VERSION_PREFIX = "rims.version."  # parent: rims.version.<package> = its version
TAG_RUNNER = "rims.runner"  # parent: "local" for `rims sweep local` (absent for Ray)
TAG_DEVICE = "rims.device"  # trial: the torch device it trained on
TAG_NODE = "rims.node_id"  # trial: the Ray node it (last) ran on
# trial on CUDA with RIM cells: "on" or "off: why" (resources.triton, rims_core.enable_triton)
TAG_TRITON = "rims.triton"
# trial on CUDA with a RIM core and resources.cuda_graph: "graphs, N captured" or "off: why" (rims_core.GraphedRIM)
TAG_CUDA_GRAPH = "rims.cuda_graph"
TAG_FAILURE = "rims.failure"  # trial: why it failed (exception, divergence, interruption)
TAG_STOPPED_EARLY = "rims.stopped_early"  # trial: "true" when a scheduler or stop rule ended it before max_steps
TAG_SUPERSEDED_BY = "rims.superseded_by"  # trial: the run that replaced it after a restart
TAG_REEVALUATED = "rims.reevaluated"  # trial: JSON list of the overrides of every `rims eval` of the run

# --- tasks: objective and metrics ----------------------------------------------------------------------------------
COPY_SYMBOLS = 8  # copying: symbols 1..8 (sweeps/tasks/copying.py)
COPY_RECALL = 10  # copying: symbols to recall by default (task.num_symbols); a sequence is blank + 2 * that long
DIGITS_STAND_IN = "sklearn 8x8 digits stand-in, not MNIST"  # smnist with task.source='digits': never MNIST's numbers
FASHION_STAND_IN = "Fashion-MNIST stand-in, not MNIST"  # smnist with task.source='fashion': clothing, not digits
# smnist: what data each task.source is, as reports name it (analysis labels runs by their task.source)
SMNIST_SOURCES = {"mnist": "MNIST", "digits": DIGITS_STAND_IN, "fashion": FASHION_STAND_IN}


@dataclass(frozen=True)
class MetricInfo:
    """One base metric of one task: what it measures, its chance level in words, and which way is better."""

    base: str
    doc: str
    chance_doc: str
    better: Literal["lower", "higher"]


@dataclass(frozen=True)
class TaskKeys:
    """What analysis needs to know of a task: its objective (the val metric searchers optimise, and "min"/"max"),
    whether it is trained by reinforcement learning, and its base metrics. ``train_stats``: statistics an RL
    learner reports under ``train/`` only (losses, learning rate): they may be stopped on, never scored.
    ``train_condition``: the name of the eval condition that repeats the training distribution, as a format
    string over the task's settings ("distractors{num_distractors}" -> "distractors2"), where there is one."""

    name: str
    objective: tuple[str, Literal["min", "max"]]
    rl: bool
    metrics: dict[str, MetricInfo]
    train_stats: dict[str, str] = field(default_factory=dict)
    # the eval condition that is the training distribution, formatted with the task.* settings (no prefix)
    train_condition: str | None = None

    @property
    def metric_docs(self) -> dict[str, str]:
        """Base metric -> what it measures: the base metrics, then the train/ statistics (the tasks'
        ``metric_docs``, what a spec's search.metric and stop.metric may name)."""
        return {**{k: m.doc for k, m in self.metrics.items()}, **self.train_stats}


def _m(base: str, doc: str, chance_doc: str, better: Literal["lower", "higher"]) -> tuple[str, MetricInfo]:
    return base, MetricInfo(base, doc, chance_doc, better)


_PPO_STATS = {  # what every PPO task's learner reports under train/
    "policy_loss": "PPO clipped surrogate loss (train/)",
    "vf_loss": "value function loss (train/)",
    "entropy": "policy entropy (train/)",
    "loss": "total PPO loss (train/)",
    "lr": "learning rate at this report (train/)",
    "vf_explained_var": "explained variance of the value function (train/)",
    "iterations": "PPO iterations so far (train/)",
}

TASK_KEYS: dict[str, TaskKeys] = {t.name: t for t in (
    TaskKeys("copying", ("val/ce", "min"), False, dict([
        _m("ce", "mean cross-entropy (nats) over the recall positions (task.num_symbols, 10 by default); the training "
           "loss", f"ln {COPY_SYMBOLS} = {math.log(COPY_SYMBOLS):.3f} (a uniform guess over the 8 symbols; a uniform "
           f"guess over all 10 tokens: ln 10 = {math.log(10):.3f})", "lower"),
        _m("ce_all", "mean cross-entropy (nats) over every position of the sequence (blank + 2n positions for "
           "n = task.num_symbols, targets blank except the n recall positions), as the official RIMs script "
           "computes it",
           f"n ln 8 / (blank + 2n) (a model that predicts the blanks perfectly and guesses the n symbols "
           f"uniformly; n = 10: {10 * math.log(8) / 30:.3f} at blank 10, {10 * math.log(8) / 70:.3f} at blank 50). "
           f"Cross-entropy has no upper bound: values above ln 10 = {math.log(10):.3f} (a uniform guess over "
           "the 10 tokens everywhere) mean confident wrong predictions, typically symbols predicted where a "
           "blank is due on sequences longer than those trained on (a probability of 0.001 on the right token "
           "costs 6.9 nats)", "lower"),
        _m("acc", "fraction of the recall positions whose most likely token is the right symbol",
           f"1/{COPY_SYMBOLS} = {1 / COPY_SYMBOLS:.3f}", "higher"),
    ])),
    TaskKeys("smnist", ("val/acc", "max"), False, dict([
        _m("ce", "cross-entropy (nats) of the 10-way classification from the last step (MNIST digits; with "
           f"task.source='digits' on the {DIGITS_STAND_IN}; with task.source='fashion' on the {FASHION_STAND_IN}, "
           "its 10 clothing classes)", f"ln 10 = {math.log(10):.3f}", "lower"),
        _m("acc", "classification accuracy from the last step (MNIST digits; with task.source='digits' on the "
           f"{DIGITS_STAND_IN}; with task.source='fashion' on the {FASHION_STAND_IN}, its 10 clothing classes)",
           "0.1", "higher"),
    ])),
    TaskKeys("bouncing", ("val/bce", "min"), False, dict([
        _m("bce", "per-pixel binary cross-entropy (nats) of next-frame prediction with teacher forcing, over "
           "frames 1..T-1",
           "no fixed level: predicting every pixel's on-rate p scores H(p), which depends on frame size and ball "
           "count", "lower"),
        _m("rollout_bce", "per-pixel binary cross-entropy (nats) of the rollout frames predicted in closed loop "
           "after burn_in true frames, the model's own predictions (probabilities) fed back",
           "no fixed level (as bce)", "lower"),
    ])),
    TaskKeys("fetch", ("val/success_rate", "max"), True, dict([
        _m("success_rate", "fraction of episodes in which the agent picked up the named object (val/: fixed rooms "
           "of the training condition; eval/<m>_<condition>: the same fixed rooms in each condition)",
           "about 1 / (1 + distractors) for a policy that picks up the first object it meets (measured for a "
           "uniformly random policy in 6x6 rooms: 0.32 with 2 distractors, 0.19 with 4)", "higher"),
        _m("episode_return_mean", "mean episode return, MiniGrid's 1 - 0.9 * steps / max_steps on success and 0 "
           "otherwise (train/: the last 20 training episodes; val/ and eval/ as success_rate)",
           "as success_rate, discounted by the steps taken", "higher"),
        _m("episode_len_mean", "mean episode length in steps (ends at a pickup or at the step limit)", "none",
           "lower"),
    ]), train_stats=_PPO_STATS, train_condition="distractors{num_distractors}"),
    TaskKeys("atari", ("val/episode_return_mean", "max"), True, dict([
        _m("episode_return_mean", "mean episode return: train/ over the last 20 training episodes (clipped "
           "rewards, one life each), val/ over task.eval_episodes greedy games at each report (raw score)",
           "no fixed level: a random policy's score depends on the game", "higher"),
        _m("episode_len_mean", "mean episode length in agent steps (train/ and val/ as above)", "none", "higher"),
    ]), train_stats=_PPO_STATS),
)}

"""What every task provides to the trainable, and the pieces tasks share.

A task turns its settings (the spec's ``task.*`` keys) and the model settings (``model.*``) into a model,
training batches, a loss, and an evaluation on fixed data. Metric names line up across model kinds:
``train/<m>`` (from ``loss``), ``val/<m>`` (the training distribution, held-out data: what searchers and
schedulers optimise) and ``eval/<m>_<condition>`` (the out-of-distribution conditions the paper reports).
Evaluation data depend on the task's settings only, never on the trial's seed, so every trial of a sweep is
scored on the same examples and comparisons between trials are paired.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from rims_core import RIM, RIM_ONLY_KEYS, build_recurrent

__all__ = ["EVAL_SEED", "RLTask", "Task", "TaskSettings", "make_core", "recurrent_core"]

EVAL_SEED = 10_000  # seed of every task's evaluation data: the same for every trial


class TaskSettings(BaseModel):
    """Base of each task's ``task.*`` settings: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def make_core(model: dict[str, Any], input_size: int) -> nn.Module:
    """The recurrent core from resolved ``model.*`` settings (batch_first), via rims_core.build_recurrent.

    model: {"kind", "hidden_size", "num_layers", and for kind "rims": "num_units", "top_k", "cell",
    "selection", "input_attention": {...}, "comm": {...}}.
    """
    kind = model["kind"]
    extra = {k: model[k] for k in RIM_ONLY_KEYS if k in model} if kind == "rims" else {}
    return build_recurrent(kind, input_size, model["hidden_size"], model.get("num_layers", 1), batch_first=True,
                           **extra)


def recurrent_core(model: nn.Module) -> nn.Module:
    """The RIM / nn.LSTM / nn.GRU inside a task's model (the attribute ``rnn`` by convention)."""
    return model.rnn


class _TaskBase(ABC):
    """What the spec, the runner and the trial know of every task, supervised or RL."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    objective: ClassVar[tuple[str, str]]  # the val metric searchers and schedulers optimise, and "min"/"max"
    metric_docs: ClassVar[dict[str, str]]  # metric name (without prefix/condition) -> what it measures
    optim_defaults: ClassVar[dict[str, Any]] = {}  # optim.* a spec of this task gets where it gives none

    def __init__(self, settings: BaseModel, model: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.settings = settings
        self.model_settings = model
        self.device = torch.device(device)

    @classmethod
    def preflight(cls, settings: BaseModel) -> list[tuple[str, str]]:
        """Checks that depend on the machine (data files present, the game installed): (path, message) pairs,
        empty if fine. Run by the runner where the sweep runs, right after connecting, before any trial or run."""
        return []

    @classmethod
    def reports(cls, settings: BaseModel, optim: dict[str, Any]) -> int:
        """Reports a full trial makes (ASHA's max_t): one every optim["eval_every"] steps and one at the end."""
        return max(1, -(-optim["max_steps"] // optim["eval_every"]))

    @classmethod
    def smoke(cls, task: dict[str, Any], optim: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``task.*`` and ``optim.*`` of a smoke run (``--smoke``): every trial for a few steps."""
        return task, {**optim, "max_steps": min(optim["max_steps"], 4), "eval_every": 2}


class Task(_TaskBase):
    """One supervised task of the paper. Subclasses set the class attributes and implement the four methods."""

    settings_model: ClassVar[type[TaskSettings]]

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A fresh model on self.device whose recurrent core is the attribute ``rnn``."""

    @abstractmethod
    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """A training batch drawn with ``generator`` (the trial's seed drives it)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        """The training loss (a scalar with grad) and train metrics by bare name (e.g. {"ce": ...})."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on fixed data: ``val/<m>`` and ``eval/<m>_<condition>``. Called under no_grad, eval mode."""

    def selection_stats(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """``rims/active_frac/<unit>`` for a RIM core over one batch (empty for LSTM / GRU)."""
        core = recurrent_core(model)
        if not isinstance(core, RIM):
            return {}
        seen: list = []
        handle = core.register_trace_hook(lambda _m, tr: seen.append(tr))
        try:
            with torch.no_grad():
                self.loss(model, batch)
        finally:
            handle.remove()
        frac = seen[0].active_fraction()[0]  # first layer, forward direction
        return {f"rims/active_frac/{k}": float(v) for k, v in enumerate(frac)}


class RLTask(_TaskBase):
    """A reinforcement-learning task: trained by an RL algorithm through ``train``, not batch by batch.

    Sets ``optim_defaults``: RL learning rates and budgets differ from the supervised defaults by orders of
    magnitude. Adds ``check``, the cross-field checks the spec runs on every configuration.
    """

    @classmethod
    def check(cls, settings: BaseModel, model: dict[str, Any], optim: dict[str, Any]) -> list[tuple[str, str]]:
        """Cross-field checks of one resolved trial config: (path, message) pairs, empty if fine."""
        return []

    @abstractmethod
    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any) -> None:
        """Train until optim["max_steps"]; log(metrics, step) and report(metrics, checkpoint_dir) every
        optim["eval_every"] steps, as the supervised trial loop does."""

"""What a task's implementation provides to the trial: model, training batches, loss, evaluation (supervised),
or its own training loop (RL); and the pieces implementations share. Imports torch: loaded only when a trial
builds its task (sweeps.tasks.build_task); the spec needs only the declarations (declaration.py, declared.py).

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
from pydantic import BaseModel
from torch import Tensor, nn

from rims_core import RIM, RIM_ONLY_KEYS, build_recurrent

from ..keys import TAG_CUDA_GRAPH, TAG_TRITON
from .declaration import EVAL_SEED, RLTaskDeclaration, TaskDeclaration, TaskSettings

__all__ = ["EVAL_SEED", "PPOTask", "RLTask", "Task", "TaskSettings", "make_core", "recurrent_core"]


def make_core(model: dict[str, Any], input_size: int) -> nn.Module:
    """The recurrent core from resolved ``model.*`` settings (batch_first), via rims_core.build_recurrent.

    model: {"kind", "hidden_size", "num_layers", and for kind "rims": "num_units", "top_k", "cell",
    "selection", "input_attention": {...}, "comm": {...}}. The baselines (lstm, gru, transformer, rmc) get their
    defaults (rims_core.build_recurrent); the RIM-only keys a resolved spec carries are dropped for them.
    """
    kind = model["kind"]
    extra = {k: model[k] for k in RIM_ONLY_KEYS if k in model} if kind == "rims" else {}
    return build_recurrent(kind, input_size, model["hidden_size"], model.get("num_layers", 1), batch_first=True,
                           **extra)


def recurrent_core(model: nn.Module) -> nn.Module:
    """The core (RIM, nn.LSTM, nn.GRU, TransformerCore or RelationalMemory) inside a task's model (the attribute
    ``rnn`` by convention)."""
    return model.rnn


class _Built:
    """A task built for one trial: its settings, the resolved ``model.*`` settings and the device."""

    def __init__(self, settings: BaseModel, model: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.settings = settings
        self.model_settings = model
        self.device = torch.device(device)


class Task(TaskDeclaration, _Built, ABC):
    """One supervised task of the paper: subclasses its declaration (declared.py) and implements the four methods."""

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


class RLTask(RLTaskDeclaration, _Built, ABC):
    """A reinforcement-learning task: trained by an RL algorithm through ``train``, not batch by batch."""

    @abstractmethod
    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any, *, triton: bool = True, cuda_graph: bool = False, recompute: bool = False,
              set_tags: Any = None) -> None:
        """Train until optim["max_steps"]; log(metrics, step) and report(metrics, checkpoint_dir) every
        optim["eval_every"] steps, as the supervised trial loop does. triton, cuda_graph: resources.triton and
        resources.cuda_graph (what a RIM policy does on CUDA); recompute: resources.recompute (a RIM policy's
        learner keeps less for backward); set_tags({tag: value}): the trial's tags
        (rims.triton, rims.cuda_graph: how those fast paths fared, set when they change)."""


class PPOTask(RLTask):
    """An RL task trained by rllib_models.ppo.train_ppo (atari, fetch): subclasses say how a report evaluates
    (``evaluator``; None: RLlib's greedy evaluation of task.eval_episodes)."""

    def evaluator(self) -> Any:
        """evaluate(algo) -> val/ and eval/ metrics, or None for RLlib's own evaluation."""
        return None

    def train(self, optim: dict[str, Any], seed: int, checkpoint_dir: Any, log: Any, report: Any,
              save: Any, load: Any, *, triton: bool = True, cuda_graph: bool = False, recompute: bool = False,
              set_tags: Any = None) -> None:
        from rllib_models.ppo import train_ppo  # RLlib is imported by RL trials only

        def status(changed: dict[str, str]) -> None:  # fast_path_status's names -> the trial's tags
            if set_tags is not None:
                set_tags({{"triton": TAG_TRITON, "cuda_graph": TAG_CUDA_GRAPH}[k]: v for k, v in changed.items()})

        gpus = 1.0 if self.device.type == "cuda" else 0.0
        train_ppo(self.settings, self.model_settings, optim, seed, checkpoint_dir=checkpoint_dir, log=log,
                  report=report, gpus=gpus, save=save, load=load, evaluate=self.evaluator(), triton=triton,
                  cuda_graph=cuda_graph, recompute=recompute, status=status)

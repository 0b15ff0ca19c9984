"""What the spec knows of a task, without its model code: a declaration imports no torch.

A declaration is a class: its ``task.*`` settings (a pydantic model), its objective and metric docs (from
sweeps.keys.TASK_KEYS, the one table of them), the ``optim.*`` defaults it brings, how many reports a trial
makes, what a smoke run is, and the checks of a configuration (``check``, RL tasks) and of the machine
(``preflight``). The implementation (model, batches, loss, evaluation; RL training) subclasses its declaration
(sweeps/tasks/base.py) and is imported only when a trial builds it (``sweeps.tasks.build_task``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..keys import TASK_KEYS

__all__ = ["EVAL_SEED", "RLTaskDeclaration", "TaskDeclaration", "TaskSettings"]

EVAL_SEED = 10_000  # seed of every task's evaluation data: the same for every trial


class TaskSettings(BaseModel):
    """Base of each task's ``task.*`` settings: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskDeclaration:
    """A task as the spec, the runner and analysis see it. Subclasses set ``name`` and ``settings_model``;
    ``objective``, ``metric_docs`` and ``rl`` are filled from sweeps.keys.TASK_KEYS[name]."""

    name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    objective: ClassVar[tuple[str, str]]  # the val metric searchers and schedulers optimise, and "min"/"max"
    metric_docs: ClassVar[dict[str, str]]  # metric name (without prefix/condition) -> what it measures
    rl: ClassVar[bool] = False  # trained by an RL algorithm (RLTaskDeclaration), not batch by batch
    optim_defaults: ClassVar[dict[str, Any]] = {}  # optim.* a spec of this task gets where it gives none
    implementation: ClassVar[str]  # "module:Class" of the implementation, imported by sweeps.tasks.task_class

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:  # an implementation inherits its declaration's name and keys
            return
        if name not in TASK_KEYS:
            raise TypeError(f"{cls.__name__}: Expected name to be one of {sorted(TASK_KEYS)} (sweeps.keys."
                            f"TASK_KEYS), got {name!r}")
        keys = TASK_KEYS[name]
        if keys.rl != issubclass(cls, RLTaskDeclaration):
            raise TypeError(f"{cls.__name__}: TASK_KEYS[{name!r}].rl is {keys.rl}, so subclass "
                            f"{'RLTaskDeclaration' if keys.rl else 'TaskDeclaration only'}")
        cls.objective, cls.metric_docs, cls.rl = keys.objective, keys.metric_docs, keys.rl

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


class RLTaskDeclaration(TaskDeclaration):
    """A reinforcement-learning task: trained by an RL algorithm, not batch by batch.

    Sets ``optim_defaults``: RL learning rates and budgets differ from the supervised defaults by orders of
    magnitude. Adds ``check``, the cross-field checks the spec runs on every configuration.
    """

    @classmethod
    def check(cls, settings: BaseModel, model: dict[str, Any], optim: dict[str, Any]) -> list[tuple[str, str]]:
        """Cross-field checks of one resolved trial config: (path, message) pairs, empty if fine."""
        return []

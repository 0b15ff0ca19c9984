"""The paper's tasks and the seed's RL object task (fetch), by ``task.name``. Each builds its data
deterministically from a seed and reports the same metric names for every model kind (see base.py).

``TASKS`` maps a name to the task's declaration (declared.py: settings, objective, checks; no torch): what the
spec consults. The implementation (model, data, loss, evaluation, RL training: torch, RLlib) is imported only
when a trial builds its task, through ``build_task`` or ``task_class``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..flat import nest
from .declaration import RLTaskDeclaration, TaskDeclaration
from .declared import AtariDeclaration, BouncingDeclaration, CopyingDeclaration, FetchDeclaration, SmnistDeclaration

if TYPE_CHECKING:
    from .base import RLTask, Task

__all__ = ["TASKS", "RLTaskDeclaration", "TaskDeclaration", "build_task", "task_class"]

TASKS: dict[str, type[TaskDeclaration]] = {t.name: t for t in (
    CopyingDeclaration, SmnistDeclaration, BouncingDeclaration, AtariDeclaration, FetchDeclaration)}


def task_class(name: str) -> type[Task] | type[RLTask]:
    """The implementation of task ``name`` (imports its model code: torch, and RLlib for atari)."""
    if name not in TASKS:
        raise ValueError(f"task.name: expected one of {sorted(TASKS)}, got {name!r}")
    module, _, cls = TASKS[name].implementation.partition(":")
    return getattr(importlib.import_module(module), cls)


def build_task(flat: dict[str, Any], device: Any = "cpu") -> Task | RLTask:
    """The task of a trial's flat config (``task.*`` and ``model.*`` keys), its data on ``device``."""
    cls = task_class(flat["task.name"])
    settings = cls.settings_model(**{k: v for k, v in nest(flat, "task").items() if k != "name"})
    return cls(settings, nest(flat, "model"), device)

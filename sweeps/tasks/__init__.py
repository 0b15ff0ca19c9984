"""The paper's tasks, by ``task.name``. Each builds its data deterministically from a seed and reports the
same metric names for every model kind (see base.py)."""

from __future__ import annotations

from typing import Any

from ..flat import nest
from .atari import AtariTask
from .base import RLTask, Task
from .bouncing import BouncingTask
from .copying import CopyingTask
from .smnist import SmnistTask

TASKS: dict[str, type[Task] | type[RLTask]] = {t.name: t for t in (CopyingTask, SmnistTask, BouncingTask, AtariTask)}

__all__ = ["TASKS", "RLTask", "Task", "build_task"]


def build_task(flat: dict[str, Any], device: Any = "cpu") -> Task | RLTask:
    """The task of a trial's flat config (``task.*`` and ``model.*`` keys), its data on ``device``."""
    cls = TASKS[flat["task.name"]]
    settings = cls.settings_model(**{k: v for k, v in nest(flat, "task").items() if k != "name"})
    return cls(settings, nest(flat, "model"), device)

"""The paper's tasks, by ``task.name``. Each builds its data deterministically from a seed and reports the
same metric names for every model kind (see base.py)."""

from .base import Task
from .copying import CopyingTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (CopyingTask,)}

__all__ = ["TASKS", "Task"]

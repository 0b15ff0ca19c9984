"""The paper's tasks, by ``task.name``. Each builds its data deterministically from a seed and reports the
same metric names for every model kind (see base.py)."""

from .atari import AtariTask
from .base import RLTask, Task
from .bouncing import BouncingTask
from .copying import CopyingTask
from .smnist import SmnistTask

TASKS: dict[str, type[Task] | type[RLTask]] = {t.name: t for t in (CopyingTask, SmnistTask, BouncingTask, AtariTask)}

__all__ = ["TASKS", "RLTask", "Task"]

"""The task registry: declarations (what the spec consults, no torch) and implementations (loaded when a trial
builds its task), each task's objective and metrics from the one table in sweeps.keys."""

from __future__ import annotations

import pytest
import torch

from sweeps.keys import TASK_KEYS
from sweeps.tasks import TASKS, RLTaskDeclaration, TaskDeclaration, build_task, task_class
from sweeps.tasks.base import RLTask, Task


def test_registry_holds_a_declaration_per_task_of_the_keys_table():
    assert set(TASKS) == set(TASK_KEYS)
    for name, decl in TASKS.items():
        keys = TASK_KEYS[name]
        assert issubclass(decl, TaskDeclaration) and decl.name == name
        assert decl.objective == keys.objective and decl.metric_docs == keys.metric_docs
        assert decl.rl == keys.rl == issubclass(decl, RLTaskDeclaration)


@pytest.mark.parametrize("name", sorted(TASK_KEYS))
def test_implementation_subclasses_its_declaration(name):
    cls = task_class(name)
    assert issubclass(cls, TASKS[name])
    assert issubclass(cls, RLTask if TASK_KEYS[name].rl else Task)
    assert (cls.objective, cls.metric_docs, cls.settings_model) == (
        TASKS[name].objective, TASKS[name].metric_docs, TASKS[name].settings_model)


def test_task_class_names_the_known_tasks():
    with pytest.raises(ValueError, match=r"task.name: expected one of \['atari', 'bouncing', 'copying', 'fetch', "
                                         r"'smnist'\], got 'copy'"):
        task_class("copy")


def test_build_task_builds_the_implementation_from_a_flat_config():
    task = build_task({"task.name": "copying", "task.blank": 3, "task.eval_size": 4, "model.kind": "lstm",
                       "model.hidden_size": 8}, "cpu")
    assert type(task).__name__ == "CopyingTask" and task.settings.blank == 3
    x, y = task.sample_batch(2, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2, 3 + 2 * task.settings.num_symbols)


def test_a_declaration_must_name_a_task_of_the_keys_table():
    with pytest.raises(TypeError, match="Expected name to be one of"):
        type("Nope", (TaskDeclaration,), {"name": "nope"})
    with pytest.raises(TypeError, match=r"TASK_KEYS\['atari'\].rl is True"):
        type("NotRL", (TaskDeclaration,), {"name": "atari"})

"""Reading metric names against what each task's metrics measure: their base, condition and chance level.

What each base metric measures, its chance level in words and which way is better are declared once, in
``sweeps.keys.TASK_KEYS`` (stdlib only, so analysis reads them without torch); this module adds the numbers a reader
needs to judge a value: the chance level of a full metric name (what a model that learnt nothing task-specific
scores). ``tests/analysis/test_metrics.py`` checks both against the tasks' own code (same metric names; chance
levels recomputed with the tasks' metric functions).

Metric names: ``<split>/<base>`` or ``eval/<base>_<condition>`` (``eval/ce_all_blank200``: base ``ce_all``,
condition ``blank200``); conditions end in a number and hold no underscore.
"""

from __future__ import annotations

import math
import re
from typing import Any

from sweeps.keys import COPY_RECALL, COPY_SYMBOLS, TASK_KEYS, MetricInfo

__all__ = ["CONDITION", "MetricInfo", "chance_level", "metric_info", "split_metric", "task_metrics"]


def _metrics(task: str | None) -> dict[str, MetricInfo]:
    keys = TASK_KEYS.get(task or "")
    return keys.metrics if keys is not None else {}


CONDITION = re.compile(r"^([A-Za-z]*)(\d+(?:\.\d+)?)$")  # a condition: letters, then a number (blank200)


def split_metric(metric: str) -> tuple[str, str, str | None]:
    """"eval/ce_all_blank200" -> ("eval", "ce_all", "blank200"); "val/ce" -> ("val", "ce", None)."""
    prefix, _, rest = metric.partition("/")
    if prefix == "eval":
        base, sep, cond = rest.rpartition("_")
        if sep and CONDITION.match(cond):
            return prefix, base, cond
    return prefix, rest, None


def task_metrics(task: str | None) -> dict[str, MetricInfo]:
    """The base metrics documented for a task (empty for an unknown one)."""
    return dict(_metrics(task))


def metric_info(task: str | None, metric: str) -> MetricInfo | None:
    """The MetricInfo of a full metric name ("eval/acc_blank200") for a task, or None."""
    return _metrics(task).get(split_metric(metric)[1])


def chance_level(task: str | None, metric: str, settings: dict[str, Any] | None = None) -> float | None:
    """The chance level of a full metric name, or None where there is none (or the task or metric is unknown).

    settings: the run's task params ({"task.blank": 50, "task.num_symbols": 10}); needed where the level depends
    on them (copying's ce_all: on the blank span, which eval/ce_all_blank200 names but val/ce_all does not, and
    on task.num_symbols, 10 when absent).
    """
    _, base, cond = split_metric(metric)
    if task == "copying":
        if base == "ce":
            return math.log(COPY_SYMBOLS)
        if base == "acc":
            return 1 / COPY_SYMBOLS
        if base == "ce_all":
            blank = None
            if cond is not None and cond.startswith("blank"):
                blank = float(cond[len("blank"):])
            elif cond is None and settings and settings.get("task.blank") is not None:
                blank = float(settings["task.blank"])
            n = float((settings or {}).get("task.num_symbols") or COPY_RECALL)
            return None if blank is None else n * math.log(COPY_SYMBOLS) / (blank + 2 * n)
    if task == "smnist":
        return {"ce": math.log(10), "acc": 0.1}.get(base)
    return None

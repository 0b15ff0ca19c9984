"""What each task's metrics measure and their chance levels, for tables and the report, without importing torch.

The definitions live in ``sweeps/tasks/*.py`` (each task's ``metric_docs`` and ``evaluate``); this module restates
them with the numbers a reader needs to judge a value: the chance level (what a model that learnt nothing
task-specific scores) and which direction is better. ``tests/analysis/test_metrics.py`` checks both against the
tasks' own code (same metric names; chance levels recomputed with the tasks' metric functions).

Metric names: ``<split>/<base>`` or ``eval/<base>_<condition>`` (``eval/ce_all_blank200``: base ``ce_all``,
condition ``blank200``); conditions end in a number and hold no underscore.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MetricInfo", "chance_level", "metric_info", "split_metric", "task_metrics"]

COPY_SYMBOLS = 8  # copying: symbols 1..8 (sweeps/tasks/copying.py)
COPY_RECALL = 10  # copying: symbols to recall by default (task.num_symbols); a sequence is blank + 2 * that long


@dataclass(frozen=True)
class MetricInfo:
    """One base metric of one task: what it measures, its chance level in words, and which way is better."""

    base: str
    doc: str
    chance_doc: str
    better: str  # "lower" or "higher"


_TASKS: dict[str, dict[str, MetricInfo]] = {
    "copying": {
        "ce": MetricInfo("ce", "mean cross-entropy (nats) over the recall positions (task.num_symbols, 10 by "
                         "default); the training loss",
                         f"ln {COPY_SYMBOLS} = {math.log(COPY_SYMBOLS):.3f} (a uniform guess over the 8 symbols; "
                         f"a uniform guess over all 10 tokens: ln 10 = {math.log(10):.3f})", "lower"),
        "ce_all": MetricInfo(
            "ce_all", "mean cross-entropy (nats) over every position of the sequence (blank + 2n positions for "
            "n = task.num_symbols, targets blank except the n recall positions), as the official RIMs script "
            "computes it",
            f"n ln 8 / (blank + 2n) (a model that predicts the blanks perfectly and guesses the n symbols "
            f"uniformly; n = 10: {10 * math.log(8) / 30:.3f} at blank 10, {10 * math.log(8) / 70:.3f} at blank 50). "
            f"Cross-entropy has no upper bound: values above ln 10 = {math.log(10):.3f} (a uniform guess over "
            "the 10 tokens everywhere) mean confident wrong predictions, typically symbols predicted where a "
            "blank is due on sequences longer than those trained on (a probability of 0.001 on the right token "
            "costs 6.9 nats)", "lower"),
        "acc": MetricInfo("acc", "fraction of the recall positions whose most likely token is the right symbol",
                          f"1/{COPY_SYMBOLS} = {1 / COPY_SYMBOLS:.3f}", "higher"),
    },
    "smnist": {
        "ce": MetricInfo("ce", "cross-entropy (nats) of the 10-way digit classification from the last step",
                         f"ln 10 = {math.log(10):.3f}", "lower"),
        "acc": MetricInfo("acc", "classification accuracy from the last step", "0.1", "higher"),
    },
    "bouncing": {
        "bce": MetricInfo("bce", "per-pixel binary cross-entropy (nats) of next-frame prediction with teacher "
                          "forcing", "no fixed level: predicting every pixel's on-rate p scores H(p), which depends "
                          "on frame size and ball count", "lower"),
        "rollout_bce": MetricInfo("rollout_bce", "per-pixel binary cross-entropy (nats) of the frames predicted in "
                                  "closed loop after burn_in true frames", "no fixed level (as bce)", "lower"),
    },
    "atari": {
        "episode_return_mean": MetricInfo("episode_return_mean", "mean episode return (val/: greedy games, raw "
                                          "score)", "no fixed level: a random policy's score depends on the game",
                                          "higher"),
        "episode_len_mean": MetricInfo("episode_len_mean", "mean episode length in agent steps", "none", "higher"),
    },
}

_CONDITION = re.compile(r"^([A-Za-z]*)(\d+(?:\.\d+)?)$")


def split_metric(metric: str) -> tuple[str, str, str | None]:
    """"eval/ce_all_blank200" -> ("eval", "ce_all", "blank200"); "val/ce" -> ("val", "ce", None)."""
    prefix, _, rest = metric.partition("/")
    if prefix == "eval":
        base, sep, cond = rest.rpartition("_")
        if sep and _CONDITION.match(cond):
            return prefix, base, cond
    return prefix, rest, None


def task_metrics(task: str | None) -> dict[str, MetricInfo]:
    """The base metrics documented for a task (empty for an unknown one)."""
    return dict(_TASKS.get(task or "", {}))


def metric_info(task: str | None, metric: str) -> MetricInfo | None:
    """The MetricInfo of a full metric name ("eval/acc_blank200") for a task, or None."""
    return _TASKS.get(task or "", {}).get(split_metric(metric)[1])


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

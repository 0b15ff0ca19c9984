"""What a sweep shows while Tune runs it: trial names after what differs, and short progress.

Tune names a trial ``train_trial_80d34_00017`` and shows its config (for grid and random sweeps, one dict under
the key ``trial``) as ``...ying', 'seed': 0}``. Here a trial is named as its MLflow run is (tracking.run_name,
from the keys the sweep varies), the table's columns are those keys under the spec's dotted names, and the
metric column is the sweep's objective.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from ray.tune import CLIReporter

from .flat import resolve
from .tracking import run_name

__all__ = ["SweepProgress", "TrialName", "quiet_worker_logs", "trial_dirname"]


def quiet_worker_logs() -> None:
    """Ray's worker_process_setup_hook for a sweep without --verbose: Ray Train's INFO line per checkpoint
    ("Checkpoint successfully created at ...", dozens per trial) stays out of the driver's output; warnings
    (a tracking outage, a retried trial) still show."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


class TrialName:
    """Tune's trial_name_creator: the trial's MLflow run name (picklable: Tune stores it to resume)."""

    def __init__(self, varying: list[str], seeds: list[int]) -> None:
        self.varying, self.seeds = varying, seeds

    def __call__(self, trial: Any) -> str:
        return run_name(trial_config(trial.config, self.seeds), self.varying)


def trial_config(config: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """A Tune trial's flat config as the trial resolves it (grid / random: unwrapped from "trial"; Optuna: the
    seed from the Repeater's index)."""
    flat = dict(config.get("trial", config))
    if "__trial_index__" in flat:
        flat["seed"] = seeds[flat["__trial_index__"]]
    return resolve(flat)


def trial_dirname(trial: Any) -> str:
    """The trial's folder under the sweep's results: its trial id (the tag rims.trial_id of its run)."""
    return f"trial_{trial.trial_id}"


class SweepProgress(CLIReporter):
    """Progress of a sweep: trials named as their runs, the varied keys as columns under their dotted names,
    the seed, the step and the objective.

    Default: one line when the trial statuses change (at most every ``every_s`` seconds, and at least every
    10 x every_s while nothing changes), then the table of every trial at the end, best first (at most
    ``max_rows`` rows). verbose: the table at each of those moments (and every_s 10 s by default).

    Tune's own table (CLIReporter's) is not used: it fails on a trial that lacks a column's key (a baseline has no
    RIM-only keys) and adds columns a sweep does not need (node and pid)."""

    def __init__(self, varying: list[str], grid: bool, metric: str, mode: str, verbose: bool = False,
                 every_s: float | None = None, max_rows: int = 40) -> None:
        prefix = "trial/" if grid else ""  # grid / random: the flat config sits under "trial"
        params = {f"{prefix}{k}": k for k in varying}
        if grid:
            params["trial/seed"] = "seed"
        super().__init__(parameter_columns=params, metric_columns={"step": "step", metric: metric},
                         max_progress_rows=max_rows)
        self.columns = list(params.items())
        self.objective, self.objective_mode = metric, mode
        self.verbose, self.max_rows = verbose, max_rows
        self.every_s = every_s if every_s is not None else 10.0 if verbose else 30.0
        self._last, self._shown, self._t0 = -float("inf"), None, time.monotonic()

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        now = time.monotonic()
        changed = self._statuses(trials) != self._shown
        if done or (changed and now - self._last >= self.every_s) or now - self._last >= 10 * self.every_s:
            self._last = now
            return True
        return False

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        self._shown = self._statuses(trials)
        elapsed = time.monotonic() - self._t0
        line = f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {len(trials)} trials: " + ", ".join(
            f"{n} {status.lower()}" for status, n in self._shown) + self._best(trials)
        self._print("\n".join([line, *self.table(trials)]) if done or self.verbose else line)

    def table(self, trials: list[Any]) -> list[str]:
        """Every trial (best first, then the unscored ones), at most max_rows, as aligned text."""
        def score(t: Any) -> float:
            v = (t.last_result or {}).get(self.objective)
            if not isinstance(v, int | float):
                return float("inf")
            return v if self.objective_mode == "min" else -v

        ordered = sorted(trials, key=score)
        head = ["trial", "status", *(name for _, name in self.columns), "step", self.objective]
        rows = [head]
        for t in ordered[: self.max_rows]:
            result = t.last_result or {}
            values = [_lookup(t.config, path) for path, _ in self.columns]
            rows.append([str(t), t.status.lower(), *map(_cell, values), _cell(result.get("step")),
                         _cell(result.get(self.objective))])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if len(ordered) > self.max_rows:
            lines.append(f"... and {len(ordered) - self.max_rows} more trials (all of them are in MLflow)")
        return lines

    def _best(self, trials: list[Any]) -> str:
        scored = [(t.last_result[self.objective], str(t)) for t in trials
                  if isinstance((t.last_result or {}).get(self.objective), int | float)]
        if not scored:
            return ""
        value, name = (min if self.objective_mode == "min" else max)(scored)
        return f"; best {self.objective} {value:.4g} ({name})"

    @staticmethod
    def _statuses(trials: list[Any]) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(Counter(t.status for t in trials).items()))


def _lookup(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

"""MLflow tracking: one parent run per sweep (driver side), one nested run per trial (trial side).

Metrics go in one ``log_batch`` per report. A resumed trial finds its run by its trial-id tag and logs only
steps beyond what the run already holds, so MLflow's append-only histories get no duplicates.

A trial never waits on its tracking store: every call is an operation in a queue that is sent in order; when
the store is unreachable the queue is kept and retried at the next report (training goes on). Past a bound
(``RIMS_TRACKING_BUFFER`` operations or ``RIMS_TRACKING_OUTAGE_S`` seconds) the queue is appended to a spill
file (JSON lines) whose path is logged; the trial retries the spill file itself when it finishes, and
``rims tracking replay FILE`` sends one later. Without a store (``uri=None``, offline mode) every operation
goes to the spill file. Nothing is dropped.

Modules: ``names`` (a trial run's name), ``provenance`` (tracking URIs, git state, package versions; standard
library only), ``parent`` (the sweep's parent run: created and closed in one place each), ``spill`` (the spill
file format), ``writer`` (operations applied to a store, replay), ``trial_run`` (the trial's run). Every public
name is importable from here.
"""

from __future__ import annotations

from .names import run_name
from .parent import SweepTracker, close_parent_run, create_parent_run, finish_sweep_run, open_sweep_run
from .provenance import absolute_tracking_uri, git_state, is_local_uri, package_versions, sweep_tags
from .spill import read_ops, write_ops
from .trial_run import NullTracker, TrialTracker
from .writer import RunWriter, is_transient, replay, replay_paths

__all__ = [
    "NullTracker",
    "RunWriter",
    "SweepTracker",
    "TrialTracker",
    "absolute_tracking_uri",
    "close_parent_run",
    "create_parent_run",
    "finish_sweep_run",
    "git_state",
    "is_local_uri",
    "is_transient",
    "open_sweep_run",
    "package_versions",
    "read_ops",
    "replay",
    "replay_paths",
    "run_name",
    "sweep_tags",
    "write_ops",
]

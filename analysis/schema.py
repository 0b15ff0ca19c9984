"""The exported tables' layout: one name per concept, the same as in the spec, Tune and MLflow.

runs.parquet, one row per MLflow run of the experiment:
  run_id, experiment_id, parent_run_id (null for a sweep's parent run), run_name, status,
  start_time, end_time (timestamp[ms, UTC]; end_time null while running),
  every param as its own typed column under its dotted name (``model.num_units`` int64, ``optim.lr`` float64,
  ``model.comm.enabled`` bool, ``task.test_blanks`` string holding JSON, ``seed`` int64),
  every ``rims.*`` tag under its key (``rims.sweep_id``, ``rims.trial_id``, ``rims.config_id``,
  ``rims.stopped_early``, ``rims.failure``, ...; strings),
  every metric K three times: ``K`` (the final value: the one at the largest step, latest timestamp),
  ``K.min`` and ``K.max`` over its history (float64).
metrics.parquet, the metric histories in long form: run_id, key, step (int64), value (float64),
  timestamp (timestamp[ms, UTC]).
export.json: the manifest (experiment, tracking URI, time, and per run what was exported) that makes the
  next export incremental.
"""

from __future__ import annotations

__all__ = ["BASE_COLUMNS", "HISTORY_COLUMNS", "MANIFEST", "METRICS_FILE", "RUNS_FILE", "STAT_SUFFIXES"]

RUNS_FILE = "runs.parquet"
METRICS_FILE = "metrics.parquet"
MANIFEST = "export.json"
BASE_COLUMNS = ("run_id", "experiment_id", "parent_run_id", "run_name", "status", "start_time", "end_time")
HISTORY_COLUMNS = ("run_id", "key", "step", "value", "timestamp")
STAT_SUFFIXES = ("", ".min", ".max")  # final value, minimum, maximum of each metric

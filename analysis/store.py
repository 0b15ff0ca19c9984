"""The two readers of an MLflow experiment that analysis/export.py writes to Parquet: "sql" (a verified sqlite
store's tables, read with the stdlib sqlite3 module in one read transaction) and "api" (MlflowClient, any store).
Each returns a :class:`Snapshot`: the run-level data of every run, and the metric histories of the runs whose
fingerprint changed since the previous export."""

from __future__ import annotations

import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from .schema import HISTORY_COLUMNS

__all__ = ["HISTORY_SCHEMA", "TIMESTAMP", "VERIFIED_SCHEMA_VERSIONS", "Snapshot", "Unverified", "read_api", "read_sql"]

# alembic revisions whose runs/params/tags/metrics/latest_metrics/experiments tables were read and checked
# against the API's answers (tests/analysis/test_export.py): MLflow 3.17.
VERIFIED_SCHEMA_VERSIONS = frozenset({"dc11669786a5"})
TIMESTAMP = pa.timestamp("ms", tz="UTC")
HISTORY_SCHEMA = pa.schema(list(zip(HISTORY_COLUMNS, [pa.string(), pa.string(), pa.int64(), pa.float64(), TIMESTAMP],
                                     strict=True)))
_ROW = pa.struct([*HISTORY_SCHEMA, pa.field("is_nan", pa.int8())])  # the sql store keeps 0 and is_nan=1 for NaN
_PAGE = 5000  # search_runs page size (MLflow caps it at 50,000)


class Unverified(Exception):
    """The sqlite store is not one this module has verified: read it through the API instead."""


@dataclass
class Snapshot:
    """What a reader returns; the run-level part covers every run, histories only the fetched ones."""

    base: list[tuple]  # (run_id, experiment_id, parent_run_id, run_name, status, start_ms, end_ms)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> run_id -> raw string
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # rims.* key -> run_id -> value
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # metric key -> run_id -> final value
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    history: pa.Table = field(default_factory=HISTORY_SCHEMA.empty_table)


def _add_latest(latest: list[int], step: int, timestamp: int | None) -> list[int]:
    # [keys, sum of steps, sum of times] of latest_metrics: MLflow replaces a latest point only by one with a
    # larger (step, timestamp, value), so every new latest point but a same-step-and-time one moves a sum.
    return [latest[0] + 1, latest[1] + step, latest[2] + (timestamp or 0)]


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    # Only the fields both readers filled are compared: the sql reader adds n_points, the API cannot afford it.
    return old is None or any(old[k] != new[k] for k in old.keys() & new.keys())


def _unknown(experiment: str, names: list[str]) -> ValueError:
    return ValueError(f"no experiment named {experiment!r}; existing experiments: {sorted(names)}")


def _history(rows: list[tuple]) -> pa.Table:
    """(run_id, key, step, value, timestamp, is_nan) tuples -> the history table."""
    cols = pa.array(rows, _ROW).flatten()  # one conversion in C++: zip(*rows) costs more than the query
    is_nan = pc.not_equal(cols[5], 0)
    value = pc.if_else(is_nan, float("nan"), cols[3]) if pc.any(is_nan).as_py() else cols[3]
    return pa.Table.from_arrays([*cols[:3], value, cols[4]], schema=HISTORY_SCHEMA)


_SCOPE = "JOIN runs r ON r.run_uuid = x.run_uuid WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'"


def read_sql(path: str, experiment: str, previous: dict[str, dict]) -> Snapshot:
    """The sqlite store at ``path``: every run of ``experiment``, the histories of those whose fingerprint differs
    from ``previous`` (run_id -> fingerprint). Raises Unverified for a store this module has not verified, and
    ValueError for an unknown experiment."""
    if not os.path.exists(path):
        raise ValueError(f"no experiment named {experiment!r}: there is no MLflow store at {path}")
    con = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        # One read transaction: fingerprints and histories agree while trials keep logging (their writes wait
        # for it, within sqlite's busy timeout; the export of 10,000 runs takes about a second).
        con.execute("BEGIN")
        version = con.execute("SELECT version_num FROM alembic_version").fetchone()
        if version is None or version[0] not in VERIFIED_SCHEMA_VERSIONS:
            raise Unverified(f"unverified MLflow schema version {version and version[0]!r}")
        exps = con.execute("SELECT experiment_id, name, workspace FROM experiments "
                           "WHERE lifecycle_stage = 'active'").fetchall()
        if len({w for _, _, w in exps}) > 1:  # which workspace is meant is the server's business
            raise Unverified("the store has several workspaces")
        exp_id = next((i for i, n, _ in exps if n == experiment), None)
        if exp_id is None:
            raise _unknown(experiment, [n for _, n, _ in exps])
        q = lambda sql, *args: con.execute(sql, (*args, exp_id)).fetchall()  # noqa: E731
        # n_points: the one field the API cannot afford; it sees points added below a run's latest step
        runs = q("SELECT x.run_uuid, x.name, x.status, x.start_time, x.end_time, (SELECT COUNT(*) FROM metrics m "
                 "WHERE m.run_uuid = x.run_uuid) FROM runs x WHERE x.experiment_id = ? "
                 "AND x.lifecycle_stage = 'active'")
        snap, parents = Snapshot(base=[]), {}
        fps = {rid: {"status": st, "end_time": end, "n_params": 0, "n_tags": 0, "latest": [0, 0, 0], "n_points": n}
               for rid, _, st, _, end, n in runs}
        for rid, key, value in q("SELECT x.run_uuid, x.key, x.value FROM params x " + _SCOPE):
            snap.params.setdefault(key, {})[rid] = value
            fps[rid]["n_params"] += 1
        for rid, key, value in q("SELECT x.run_uuid, x.key, x.value FROM tags x " + _SCOPE):
            fps[rid]["n_tags"] += 1
            if key == "mlflow.parentRunId":
                parents[rid] = value
            elif key.startswith("rims."):
                snap.tags.setdefault(key, {})[rid] = value
        for rid, key, value, is_nan, step, ts in q("SELECT x.run_uuid, x.key, x.value, x.is_nan, x.step, "
                                                   "x.timestamp FROM latest_metrics x " + _SCOPE):
            snap.final.setdefault(key, {})[rid] = float("nan") if is_nan else value
            fps[rid]["latest"] = _add_latest(fps[rid]["latest"], step, ts)
        snap.fetched = [rid for rid in fps if _changed(previous.get(rid), fps[rid])]
        rows = con.execute("SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics "
                           "WHERE run_uuid IN (SELECT value FROM json_each(?))",
                           (json.dumps(snap.fetched),)).fetchall()
        snap.history = _history(rows)
        snap.base = [(rid, str(exp_id), parents.get(rid), *rest[:4]) for rid, *rest in runs]
        snap.fingerprints = fps
        return snap
    except sqlite3.DatabaseError as e:  # a missing table/column or a corrupt file: not a store we know
        raise Unverified(f"sqlite error: {e}") from e
    finally:
        con.close()


def read_api(uri: str, experiment: str, previous: dict[str, dict]) -> Snapshot:
    """The same as :func:`read_sql` through the MLflow API (any store; one request per changed run and metric)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        raise _unknown(experiment, [e.name for e in client.search_experiments(ViewType.ACTIVE_ONLY, 50_000)])
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE,
                                  page_token=token)
        runs += page
        if not (token := page.token):
            break
    snap = Snapshot(base=[])
    for run in runs:
        info, data, rid = run.info, run.data, run.info.run_id
        snap.base.append((rid, str(info.experiment_id), data.tags.get("mlflow.parentRunId"), info.run_name,
                          info.status, info.start_time, info.end_time))
        for key, value in data.params.items():
            snap.params.setdefault(key, {})[rid] = value
        for key, value in data.tags.items():
            if key.startswith("rims."):
                snap.tags.setdefault(key, {})[rid] = value
        for key, value in data.metrics.items():
            snap.final.setdefault(key, {})[rid] = value
        latest = [0, 0, 0]
        for m in data.to_proto().metrics:  # to_proto: the public way to the latest points' steps and times
            latest = _add_latest(latest, m.step, m.timestamp)
        snap.fingerprints[rid] = {"status": info.status, "end_time": info.end_time, "n_params": len(data.params),
                                  "n_tags": len(data.tags), "latest": latest}
    snap.fetched = [r.info.run_id for r in runs if _changed(previous.get(r.info.run_id),
                                                            snap.fingerprints[r.info.run_id])]
    fetched = set(snap.fetched)
    jobs = [(r.info.run_id, key) for r in runs if r.info.run_id in fetched for key in r.data.metrics]
    with ThreadPoolExecutor(8) as pool:  # one request per (run, key): overlap their latency
        histories = pool.map(lambda job: (job, client.get_metric_history(*job)), jobs)
        rows = [(rid, key, m.step, m.value, m.timestamp, 0) for (rid, key), points in histories for m in points]
    snap.history = _history(rows)
    return snap

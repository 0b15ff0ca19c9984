"""Export one MLflow experiment to Parquet, in the layout of analysis/schema.py.

``runs.parquet`` (one typed row per run), ``metrics.parquet`` (every metric history in long form) and
``export.json`` (the manifest: per run a fingerprint, so that the next export only reads the histories of runs
that are new or changed, and merges them with the previous tables).

Two readers fill the same tables:
- "sql": reads a sqlite store's tables with the stdlib sqlite3 module, in one read transaction. MLflow's schema
  is internal (alembic-migrated), so this path runs only for the schema versions verified here; any other
  version falls back to the API and says so in ``ExportResult.note``.
- "api": MlflowClient.search_runs (paginated) plus get_metric_history per run and key: correct for every
  store, HTTP servers included, and much slower.

A run's final value of K is MLflow's latest_metrics entry (the value at the largest step, then the latest
timestamp, then the largest value: checked against the store). ``K.min``/``K.max`` are computed in Arrow from
the exported history itself, for both readers (cheaper than a GROUP BY over the store's metrics table, and
consistent with metrics.parquet by construction); they skip NaN points (NaN when all points are NaN).
"""

from __future__ import annotations

import gc
import json
import os
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweeps.tracking import absolute_tracking_uri

from .schema import BASE_COLUMNS, HISTORY_COLUMNS, MANIFEST, METRICS_FILE, RUNS_FILE

__all__ = ["VERIFIED_SCHEMA_VERSIONS", "ExportResult", "export_experiment", "typed_column"]

# alembic revisions whose runs/params/tags/metrics/latest_metrics/experiments tables were read and checked
# against the API's answers (tests/analysis/test_export.py): MLflow 3.17.
VERIFIED_SCHEMA_VERSIONS = frozenset({"dc11669786a5"})
MANIFEST_FORMAT = 1
_TS = pa.timestamp("ms", tz="UTC")
_HISTORY_SCHEMA = pa.schema(list(zip(HISTORY_COLUMNS, [pa.string(), pa.string(), pa.int64(), pa.float64(), _TS],
                                      strict=True)))
_ROW = pa.struct([*_HISTORY_SCHEMA, pa.field("is_nan", pa.int8())])  # the sql store keeps 0 and is_nan=1 for NaN
_HISTORY_ORDER = ("run_id", "key", "step", "timestamp", "value")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)
_PAGE = 5000  # search_runs page size (MLflow caps it at 50,000)


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the output directory
    n_runs: int
    n_new_or_changed: int  # runs whose histories were (re)read
    n_metric_points: int  # rows of metrics.parquet
    method_used: str  # "sql" or "api"
    seconds: float
    n_points_fetched: int = 0  # history points read from the store this time
    note: str = ""  # why the sql path was not used, or why a previous export was not reused


class _Unverified(Exception):
    """The sqlite store is not one this module has verified: read it through the API instead."""


@dataclass
class _Snapshot:
    """What a reader returns; the run-level part covers every run, histories only the fetched ones."""

    base: list[tuple]  # (run_id, experiment_id, parent_run_id, run_name, status, start_ms, end_ms)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> run_id -> raw string
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # rims.* key -> run_id -> value
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # metric key -> run_id -> final value
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    history: pa.Table = field(default_factory=_HISTORY_SCHEMA.empty_table)


def typed_column(values: list[str | None]) -> pa.Array:
    """The narrowest type that holds every value: int64, float64, bool, else string; "None"/missing -> null."""
    vals = [None if v is None or v == "None" else v for v in values]
    present = [v for v in vals if v is not None]
    if not present:
        return pa.array(vals, pa.string())  # no evidence of a type: string, the type every value fits
    if all(_INT.fullmatch(v) for v in present) and all(-(2**63) <= int(v) < 2**63 for v in present):
        return pa.array([None if v is None else int(v) for v in vals], pa.int64())
    if all(_FLOAT.fullmatch(v) for v in present):
        return pa.array([None if v is None else float(v) for v in vals], pa.float64())
    if {v.lower() for v in present} <= {"true", "false"}:
        return pa.array([None if v is None else v.lower() == "true" for v in vals], pa.bool_())
    return pa.array(vals, pa.string())


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
    return pa.Table.from_arrays([*cols[:3], value, cols[4]], schema=_HISTORY_SCHEMA)


_SCOPE = "JOIN runs r ON r.run_uuid = x.run_uuid WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'"


def _read_sql(path: str, experiment: str, previous: dict[str, dict]) -> _Snapshot:
    if not os.path.exists(path):
        raise ValueError(f"no experiment named {experiment!r}: there is no MLflow store at {path}")
    con = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        # One read transaction: fingerprints and histories agree while trials keep logging (their writes wait
        # for it, within sqlite's busy timeout; the export of 10,000 runs takes about a second).
        con.execute("BEGIN")
        version = con.execute("SELECT version_num FROM alembic_version").fetchone()
        if version is None or version[0] not in VERIFIED_SCHEMA_VERSIONS:
            raise _Unverified(f"unverified MLflow schema version {version and version[0]!r}")
        exps = con.execute("SELECT experiment_id, name, workspace FROM experiments "
                           "WHERE lifecycle_stage = 'active'").fetchall()
        if len({w for _, _, w in exps}) > 1:  # which workspace is meant is the server's business
            raise _Unverified("the store has several workspaces")
        exp_id = next((i for i, n, _ in exps if n == experiment), None)
        if exp_id is None:
            raise _unknown(experiment, [n for _, n, _ in exps])
        q = lambda sql, *args: con.execute(sql, (*args, exp_id)).fetchall()  # noqa: E731
        # n_points: the one field the API cannot afford; it sees points added below a run's latest step
        runs = q("SELECT x.run_uuid, x.name, x.status, x.start_time, x.end_time, (SELECT COUNT(*) FROM metrics m "
                 "WHERE m.run_uuid = x.run_uuid) FROM runs x WHERE x.experiment_id = ? "
                 "AND x.lifecycle_stage = 'active'")
        snap, parents = _Snapshot(base=[]), {}
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
        raise _Unverified(f"sqlite error: {e}") from e
    finally:
        con.close()


def _read_api(uri: str, experiment: str, previous: dict[str, dict]) -> _Snapshot:
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
    snap = _Snapshot(base=[])
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


def _previous(out: Path, experiment: str, uri: str) -> tuple[dict[str, dict], pa.Table | None, str]:
    """(fingerprints, metrics table, why not) of the previous export, if it is one this export can extend."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if (manifest.get("format"), manifest.get("experiment"), manifest.get("tracking_uri")) != (
                MANIFEST_FORMAT, experiment, uri):
            return {}, None, "previous export is of another experiment or store: full export"
        history = pq.read_table(out / METRICS_FILE, schema=_HISTORY_SCHEMA)
        if history.num_rows != manifest["n_metric_points"]:  # files from an export that did not finish
            return {}, None, "previous export incomplete: full export"
        return manifest["runs"], history, ""
    except FileNotFoundError:
        return {}, None, ""
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        return {}, None, f"previous export unreadable ({e}): full export"


def _nan_min_max(history: pa.Table) -> pa.Table:
    # Arrow's min/max skip NaN and give NaN for an only-NaN group: the sql reader's semantics.
    g = history.group_by(["run_id", "key"]).aggregate([("value", "min"), ("value", "max")])
    return g.rename_columns({"value_min": "min", "value_max": "max"})


def _runs_table(snap: _Snapshot, stats: pa.Table) -> tuple[pa.Table, list[str]]:
    base = sorted(snap.base, key=lambda b: (b[5] if b[5] is not None else -1, b[0]))  # start_time, run_id
    ids = [b[0] for b in base]
    cols: dict[str, pa.Array] = {}
    for i, (name, typ) in enumerate(zip(BASE_COLUMNS, [pa.string()] * 5 + [_TS] * 2, strict=True)):
        cols[name] = pa.array([b[i] for b in base], typ)
    clashes: list[str] = []

    def add(name: str, column: pa.Array) -> None:
        if name in cols:  # e.g. a param and a metric of one name: the first (base, param, tag) keeps it
            clashes.append(name)
        else:
            cols[name] = column

    for key in sorted(snap.params):
        add(key, typed_column([snap.params[key].get(r) for r in ids]))
    for key in sorted(snap.tags):
        add(key, pa.array([snap.tags[key].get(r) for r in ids], pa.string()))
    lo: dict[str, dict[str, float]] = {}
    hi: dict[str, dict[str, float]] = {}
    for rid, key, mn, mx in zip(*(stats[c].to_pylist() for c in ("run_id", "key", "min", "max")), strict=True):
        lo.setdefault(key, {})[rid], hi.setdefault(key, {})[rid] = mn, mx
    for key in sorted(snap.final.keys() | lo.keys()):
        for suffix, values in (("", snap.final.get(key, {})), (".min", lo.get(key, {})), (".max", hi.get(key, {}))):
            add(key + suffix, pa.array([values.get(r) for r in ids], pa.float64()))
    return pa.table(cols), clashes


def _write(path: Path, content: pa.Table | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(content, str):
        tmp.write_text(content)
    else:
        pq.write_table(content, tmp)
    os.replace(tmp, path)  # a reader never sees half a file


def export_experiment(experiment: str, out_dir: str | Path, tracking_uri: str | None = None, *,
                      incremental: bool = True, method: str = "auto") -> ExportResult:
    """Export ``experiment`` into out_dir (runs.parquet, metrics.parquet, export.json); see the module doc.

    tracking_uri: None -> sqlite:///<cwd>/mlflow.db. method: "auto" (sql for sqlite:// stores, else api),
    "sql" (falls back to api on a store it has not verified), "api". incremental: reuse the previous export's
    histories of the runs whose fingerprint did not change. Raises ValueError for an unknown experiment,
    naming the ones that exist.
    """
    if method not in ("auto", "sql", "api"):
        raise ValueError(f"method must be 'auto', 'sql' or 'api', not {method!r}")
    uri = absolute_tracking_uri(tracking_uri)
    if method == "sql" and not uri.startswith("sqlite:///"):
        raise ValueError(f"method 'sql' reads sqlite stores only, not {uri}")
    enabled = gc.isenabled()
    gc.disable()  # a bulk read allocates a million tuples and no cycles: the collector's passes are pure cost
    try:
        return _export(experiment, Path(out_dir), uri, incremental, method)
    finally:
        if enabled:
            gc.enable()


def _export(experiment: str, out: Path, uri: str, incremental: bool, method: str) -> ExportResult:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    fingerprints, old_history, note = _previous(out, experiment, uri) if incremental else ({}, None, "")
    snap, used = None, "api"
    if method != "api" and uri.startswith("sqlite:///"):
        try:
            snap, used = _read_sql(uri[len("sqlite:///"):].split("?")[0], experiment, fingerprints), "sql"
        except _Unverified as e:
            note = "; ".join(filter(None, [note, f"sql path not used ({e}): read through the MLflow API"]))
    if snap is None:
        snap = _read_api(uri, experiment, fingerprints)
    fetched = set(snap.fetched)
    if old_history is not None and not fetched and fingerprints.keys() == snap.fingerprints.keys():
        history = old_history  # no run new, changed or gone: metrics.parquet stays as it is
    else:
        if old_history is not None:  # unchanged runs' histories come from the previous export
            keep = pa.array([rid for rid in snap.fingerprints if rid not in fetched], pa.string())
            history = pa.concat_tables([old_history.filter(pc.is_in(old_history["run_id"], keep)), snap.history])
        else:
            history = snap.history
        history = history.take(pc.sort_indices(history, [(c, "ascending") for c in _HISTORY_ORDER]))
        _write(out / METRICS_FILE, history)
    runs, clashes = _runs_table(snap, _nan_min_max(history))
    if clashes:
        note = "; ".join(filter(None, [note, f"columns named twice, first kept: {sorted(set(clashes))}"]))
    _write(out / RUNS_FILE, runs)
    manifest = {"format": MANIFEST_FORMAT, "experiment": experiment, "tracking_uri": uri,
                "exported_at": datetime.now(UTC).isoformat(), "method": used, "n_runs": runs.num_rows,
                "n_metric_points": history.num_rows, "runs": snap.fingerprints}
    _write(out / MANIFEST, json.dumps(manifest))  # last: the manifest commits the export
    return ExportResult(path=out, n_runs=runs.num_rows, n_new_or_changed=len(snap.fetched),
                        n_metric_points=history.num_rows, method_used=used, seconds=time.perf_counter() - t0,
                        n_points_fetched=snap.history.num_rows, note=note)

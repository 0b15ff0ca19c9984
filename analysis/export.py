"""Export one MLflow experiment to Parquet, in the layout of analysis/schema.py.

``runs.parquet`` (one typed row per run), ``metrics.parquet`` (every metric history in long form) and
``export.json`` (the manifest: per run a fingerprint, so that the next export only reads the histories of runs
that are new or changed, and merges them with the previous tables).

Two readers (store.py) fill the same tables:
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
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import BASE_COLUMNS, MANIFEST, METRICS_FILE, RUNS_FILE
from .store import HISTORY_SCHEMA, TIMESTAMP, VERIFIED_SCHEMA_VERSIONS, Snapshot, Unverified, read_api, read_sql

__all__ = ["VERIFIED_SCHEMA_VERSIONS", "ExportResult", "check_tracking_uri", "export_experiment", "typed_column"]

MANIFEST_FORMAT = 1
_HISTORY_ORDER = ("run_id", "key", "step", "timestamp", "value")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


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


def check_tracking_uri(uri: str | None, what: str = "tracking_uri") -> str:
    """``uri`` when it is absolute: a server (http://host:port, databricks, ...), or a sqlite or file store whose
    path starts at /. Else ValueError: analysis takes the URI as given and records it (export.json, the report's
    Reproduce commands), so a path relative to the working directory would be wrong from anywhere else; callers
    resolve it first with sweeps.tracking.absolute_tracking_uri (the CLI does)."""
    fix = ("pass an absolute tracking URI (sqlite:////abs/path/mlflow.db, file:///abs/path/mlruns, "
           "http://host:port); sweeps.tracking.absolute_tracking_uri(uri) resolves one against the working directory")
    if not uri:
        raise ValueError(f"{what}: tracking_uri={uri!r}: {fix}")
    p = urlparse(uri)
    path = uri[len("sqlite:///"):] if p.scheme == "sqlite" else p.path
    if not p.scheme:
        raise ValueError(f"{what}: tracking_uri={uri!r} is a path, not a URI; {fix}")
    if p.scheme in ("sqlite", "file") and not path.startswith("/"):
        raise ValueError(f"{what}: tracking_uri={uri!r} is relative to the working directory; {fix}")
    return uri


def _previous(out: Path, experiment: str, uri: str) -> tuple[dict[str, dict], pa.Table | None, str]:
    """(fingerprints, metrics table, why not) of the previous export, if it is one this export can extend."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        if (manifest.get("format"), manifest.get("experiment"), manifest.get("tracking_uri")) != (
                MANIFEST_FORMAT, experiment, uri):
            return {}, None, "previous export is of another experiment or store: full export"
        history = pq.read_table(out / METRICS_FILE, schema=HISTORY_SCHEMA)
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


def _runs_table(snap: Snapshot, stats: pa.Table) -> tuple[pa.Table, list[str]]:
    base = sorted(snap.base, key=lambda b: (b[5] if b[5] is not None else -1, b[0]))  # start_time, run_id
    ids = [b[0] for b in base]
    cols: dict[str, pa.Array] = {}
    for i, (name, typ) in enumerate(zip(BASE_COLUMNS, [pa.string()] * 5 + [TIMESTAMP] * 2, strict=True)):
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


def export_experiment(experiment: str, out_dir: str | Path, tracking_uri: str, *,
                      incremental: bool = True, method: str = "auto") -> ExportResult:
    """Export ``experiment`` into out_dir (runs.parquet, metrics.parquet, export.json); see the module doc.

    tracking_uri: an absolute URI (see :func:`check_tracking_uri`: sqlite:////abs/mlflow.db, file:///abs/mlruns,
    http://host:port; the CLI resolves its --mlflow-uri with sweeps.tracking.absolute_tracking_uri).
    method: "auto" (sql for sqlite:// stores, else api), "sql" (falls back to api on a store it has not verified),
    "api". incremental: reuse the previous export's histories of the runs whose fingerprint did not change.
    Raises ValueError for an unknown experiment, naming the ones that exist, and for a relative tracking URI.
    """
    if method not in ("auto", "sql", "api"):
        raise ValueError(f"method must be 'auto', 'sql' or 'api', not {method!r}")
    uri = check_tracking_uri(tracking_uri, "export_experiment")
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
            snap, used = read_sql(uri[len("sqlite:///"):].split("?")[0], experiment, fingerprints), "sql"
        except Unverified as e:
            note = "; ".join(filter(None, [note, f"sql path not used ({e}): read through the MLflow API"]))
    if snap is None:
        snap = read_api(uri, experiment, fingerprints)
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

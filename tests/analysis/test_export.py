"""analysis.export against a real MLflow store: what MlflowClient reports is what the Parquet files hold."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from analysis.export import export_experiment, typed_column
from analysis.schema import BASE_COLUMNS, HISTORY_COLUMNS, MANIFEST, METRICS_FILE, RUNS_FILE
from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial

EXP = "export-test"
SPEC = {"name": "t", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2}}
NAN = float("nan")


def config(**over):
    return resolve({**base_config(load_spec(SPEC)), "seed": 0, **over})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Parent + 2 RIM trials + 1 LSTM trial, a RUNNING run with NaN points, a deleted run, another experiment."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment(EXP, artifact_location=str(root / "artifacts"))  # not ./mlruns of the checkout
    sweeper = SweepTracker(uri, EXP)
    parent = sweeper.start("sweep-1", {"search.algorithm": "grid"}, {}, "name: t\n")
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
           "sweep_id": "sweep-1", "seeds": [0], "tags": {"rims.git_sha": "abc"}, "cpus": 1}
    for trial, cfg in (("a", config()), ("b", config(seed=1, **{"model.comm.enabled": False})),
                       ("l", config(**{"model.kind": "lstm"}))):
        run_trial(cfg, ctx, trial_id=trial, checkpoint_dir=None, report=lambda m, d: None)
    odd = client.create_run(sweeper.experiment_id, run_name="odd",
                            tags={"mlflow.parentRunId": parent, "rims.trial_id": "odd"}).info.run_id
    client.log_batch(odd, params=[Param("seed", "2"), Param("optim.lr", "1e-3")], metrics=[
        Metric("diag/x", NAN, 10, 0), Metric("diag/x", 1.5, 11, 1), Metric("diag/x", NAN, 12, 2),
        Metric("diag/x", -2.5, 9, 1), Metric("diag/allnan", NAN, 10, 0)])  # left RUNNING: end_time null
    gone = client.create_run(sweeper.experiment_id, run_name="gone").info.run_id
    client.log_batch(gone, params=[Param("seed", "9")], metrics=[Metric("val/ce", 1.0, 1, 0)])
    client.delete_run(gone)
    other = client.create_run(client.create_experiment("other", artifact_location=str(root / "a2"))).info.run_id
    client.log_batch(other, metrics=[Metric("val/ce", 7.0, 1, 0)])
    sweeper.finish(parent, {"counts": {"ok": 3}})
    return {"root": root, "uri": uri, "experiment_id": sweeper.experiment_id, "parent": parent, "odd": odd,
            "gone": gone, "other": other}


def copy_store(store, dest):
    dest.mkdir()
    shutil.copy(store["root"] / "mlflow.db", dest / "mlflow.db")
    return f"sqlite:///{dest / 'mlflow.db'}"


def norm(v):
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def rows(table: pa.Table, order: tuple[str, ...]) -> list[dict]:
    return sorted(([{k: norm(v) for k, v in r.items()} for r in table.to_pylist()]),
                  key=lambda r: tuple(str(r[c]) for c in order))


def read(out):
    return pq.read_table(out / RUNS_FILE), pq.read_table(out / METRICS_FILE)


def mlflow_view(uri, experiment_id):
    """Every active run and every (run, key) history, as MlflowClient reports them."""
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY)}
    hist = {(rid, k): client.get_metric_history(rid, k) for rid, r in runs.items() for k in r.data.metrics}
    return runs, hist


def test_typed_column_picks_the_narrowest_type():
    assert typed_column(["3", None, "None", "-4"]).to_pylist() == [3, None, None, -4]
    assert typed_column(["3", "0.01", "1e-05", "nan"]).type == pa.float64()
    assert typed_column(["True", "false", None]).to_pylist() == [True, False, None]
    assert typed_column(["1", "True"]).type == pa.string()  # a bool and an int: no common narrower type
    assert typed_column(["[6]", "12"]).to_pylist() == ["[6]", "12"]
    assert typed_column(["None", None]).to_pylist() == [None, None]
    assert typed_column([str(2**70)]).type == pa.float64()  # beyond int64


def test_round_trip_matches_what_mlflow_reports(store, tmp_path):
    res = export_experiment(EXP, tmp_path / "out", store["uri"], method="sql")
    assert res.method_used == "sql" and res.note == ""
    runs, metrics = read(tmp_path / "out")
    view, hist = mlflow_view(store["uri"], store["experiment_id"])
    ids = runs["run_id"].to_pylist()
    assert sorted(ids) == sorted(view) and len(view) == 5 == res.n_runs  # deleted / other-experiment runs out
    assert store["gone"] not in ids and store["other"] not in ids
    assert runs.column_names[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    types = dict(zip(runs.column_names, runs.schema.types, strict=True))
    assert types["model.num_units"] == pa.int64() and types["seed"] == pa.int64()
    assert types["optim.lr"] == pa.float64() and types["model.comm.enabled"] == pa.bool_()
    assert types["task.test_blanks"] == pa.string() and types["start_time"] == pa.timestamp("ms", tz="UTC")
    by_id = {r["run_id"]: r for r in runs.to_pylist()}
    for rid, run in view.items():
        row = by_id[rid]
        assert row["parent_run_id"] == (None if rid == store["parent"] else store["parent"])
        assert (row["run_name"], row["status"]) == (run.info.run_name, run.info.status)
        assert row["experiment_id"] == run.info.experiment_id
        assert int(row["start_time"].timestamp() * 1000) == run.info.start_time
        assert (row["end_time"] and int(row["end_time"].timestamp() * 1000)) == run.info.end_time
        for key, raw in run.data.params.items():
            assert str(row[key]) == raw or (row[key] is None and raw == "None") or float(row[key]) == float(raw)
        for key in [k for k in row if k.startswith("model.") and k not in run.data.params]:
            assert row[key] is None  # the LSTM trial has no RIM params: nulls
        for key, value in run.data.tags.items():
            if key.startswith("rims."):
                assert row[key] == value
        for key, final in run.data.metrics.items():
            values = [m.value for m in hist[rid, key] if not math.isnan(m.value)]
            assert norm(row[key]) == norm(final)
            assert norm(row[key + ".min"]) == norm(min(values, default=NAN))
            assert norm(row[key + ".max"]) == norm(max(values, default=NAN))
    a = next(r for r in by_id.values() if r["rims.trial_id"] == "a")
    b = next(r for r in by_id.values() if r["rims.trial_id"] == "b")
    lstm = next(r for r in by_id.values() if r["rims.trial_id"] == "l")
    assert (a["model.num_units"], a["model.comm.enabled"], b["model.comm.enabled"]) == (3, True, False)
    assert (lstm["model.num_units"], lstm["model.kind"], a["task.test_blanks"]) == (None, "lstm", "[6]")
    assert (a["optim.lr"], b["seed"], a["rims.git_sha"]) == (0.01, 1, "abc")
    odd = by_id[store["odd"]]  # final = largest step, then latest timestamp; NaN points skipped by min/max
    assert odd["end_time"] is None and math.isnan(odd["diag/x"]) and (odd["diag/x.min"], odd["diag/x.max"]) == (
        -2.5, 1.5)
    assert math.isnan(odd["diag/allnan"]) and math.isnan(odd["diag/allnan.min"])
    assert metrics.column_names == list(HISTORY_COLUMNS)
    want = [{"run_id": rid, "key": k, "step": m.step, "value": norm(m.value), "timestamp": m.timestamp}
            for (rid, k), ms in hist.items() for m in ms]
    got = [{**r, "timestamp": int(r["timestamp"].timestamp() * 1000)} for r in rows(metrics, HISTORY_COLUMNS)]
    assert sorted(got, key=str) == sorted(want, key=str) and res.n_metric_points == len(want)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert set(manifest["runs"]) == set(view) and manifest["experiment"] == EXP


def test_sql_and_api_paths_give_identical_tables(store, tmp_path):
    sql = export_experiment(EXP, tmp_path / "sql", store["uri"], method="sql")
    api = export_experiment(EXP, tmp_path / "api", store["uri"], method="api")
    assert (sql.method_used, api.method_used) == ("sql", "api")
    (runs_s, hist_s), (runs_a, hist_a) = read(tmp_path / "sql"), read(tmp_path / "api")
    assert runs_s.schema == runs_a.schema and hist_s.schema == hist_a.schema
    assert rows(runs_s, ("run_id",)) == rows(runs_a, ("run_id",))
    assert rows(hist_s, HISTORY_COLUMNS) == rows(hist_a, HISTORY_COLUMNS) and hist_s.num_rows > 50


@pytest.mark.parametrize("method", ["sql", "api"])
def test_incremental_export_reads_only_new_and_changed_runs(store, tmp_path, method):
    uri = copy_store(store, tmp_path / "copy")
    out = tmp_path / "out"
    first = export_experiment(EXP, out, uri, method=method)
    assert (first.n_new_or_changed, first.n_points_fetched) == (5, first.n_metric_points)
    again = export_experiment(EXP, out, uri, method=method)
    assert (again.n_new_or_changed, again.n_points_fetched, again.n_metric_points) == (0, 0, first.n_metric_points)
    client = MlflowClient(uri)
    a = client.search_runs([store["experiment_id"]], filter_string="tags.`rims.trial_id` = 'a'")[0].info.run_id
    client.log_batch(a, metrics=[Metric("val/ce", 0.125, 2**40, 6)])  # a new step in an existing run
    new = client.create_run(store["experiment_id"], run_name="new", tags={"rims.trial_id": "new"}).info.run_id
    client.log_batch(new, params=[Param("seed", "5"), Param("extra.flag", "TRUE")], tags=[RunTag("rims.x", "y")],
                     metrics=[Metric("val/ce", 2.0, 5, 0), Metric("val/ce", 1.0, 6, 1)])
    client.set_terminated(new)
    res = export_experiment(EXP, out, uri, method=method)
    _view, hist = mlflow_view(uri, store["experiment_id"])
    points_of = lambda rid: sum(len(v) for (r, _), v in hist.items() if r == rid)  # noqa: E731
    assert res.n_new_or_changed == 2 and res.n_points_fetched == points_of(a) + points_of(new)
    assert res.n_runs == 6 and res.n_metric_points == first.n_metric_points + 3
    runs, metrics = read(out)
    by_id = {r["run_id"]: r for r in runs.to_pylist()}
    assert (by_id[new]["extra.flag"], by_id[new]["rims.x"], by_id[new]["val/ce"]) == (True, "y", 1.0)
    assert by_id[a]["val/ce"] == 0.125 and by_id[a]["val/ce.min"] == 0.125
    assert by_id[a]["extra.flag"] is None
    assert {"run_id": a, "key": "val/ce", "step": 6, "value": 0.125} in [
        {k: r[k] for k in ("run_id", "key", "step", "value")} for r in metrics.to_pylist()]
    full = export_experiment(EXP, tmp_path / "full", uri, method=method, incremental=False)
    assert full.n_new_or_changed == 6
    assert rows(runs, ("run_id",)) == rows(read(tmp_path / "full")[0], ("run_id",))  # merged == from scratch
    assert rows(metrics, HISTORY_COLUMNS) == rows(read(tmp_path / "full")[1], HISTORY_COLUMNS)
    if method == "sql":  # a back-filled point leaves latest_metrics as it was: only the point count sees it
        client.log_batch(a, metrics=[Metric("val/ce", 9.0, 1, 1)])
        res = export_experiment(EXP, out, uri, method=method)
        assert (res.n_new_or_changed, res.n_metric_points) == (1, full.n_metric_points + 1)
        assert {r["run_id"]: r["val/ce.max"] for r in read(out)[0].to_pylist()}[a] == 9.0
    (out / METRICS_FILE).unlink()  # a broken previous export is not extended: everything is read again
    assert export_experiment(EXP, out, uri, method=method).n_new_or_changed == 6


@pytest.mark.parametrize("method", ["sql", "api"])
def test_unknown_experiment_names_the_existing_ones(store, tmp_path, method):
    with pytest.raises(ValueError, match="'nope'") as err:
        export_experiment("nope", tmp_path, store["uri"], method=method)
    assert EXP in str(err.value) and "other" in str(err.value)


def test_unknown_schema_version_falls_back_to_the_api(store, tmp_path, monkeypatch):
    uri = copy_store(store, tmp_path / "copy")
    with sqlite3.connect(tmp_path / "copy" / "mlflow.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    # The MLflow that wrote this store would know its version; this one refuses it, so let its check pass.
    monkeypatch.setattr("mlflow.store.db.utils._verify_schema", lambda engine: None)
    res = export_experiment(EXP, tmp_path / "out", uri)
    assert res.method_used == "api" and "ffffffffffff" in res.note
    ref = export_experiment(EXP, tmp_path / "ref", store["uri"], method="sql")
    assert ref.method_used == "sql"
    (runs, hist), (ref_runs, ref_hist) = read(tmp_path / "out"), read(tmp_path / "ref")
    assert rows(runs, ("run_id",)) == rows(ref_runs, ("run_id",)) and runs.schema == ref_runs.schema
    assert rows(hist, HISTORY_COLUMNS) == rows(ref_hist, HISTORY_COLUMNS)


@pytest.mark.parametrize("uri", [None, "", "sqlite:///mlflow.db", "file:mlruns", "mlruns", "/abs/mlruns"])
def test_a_tracking_uri_that_depends_on_the_working_directory_is_refused(store, tmp_path, monkeypatch, uri):
    """export.json records the URI and the next export compares it: a relative one would name another store from
    another directory. The CLI resolves --mlflow-uri (sweeps.tracking.absolute_tracking_uri) before calling."""
    copy_store(store, tmp_path / "copy")
    monkeypatch.chdir(tmp_path / "copy")  # where a relative sqlite URI would find a store
    with pytest.raises(ValueError, match=r"export_experiment: tracking_uri=.*absolute_tracking_uri"):
        export_experiment(EXP, tmp_path / "out", uri)
    assert not (tmp_path / "out").exists()
    absolute = f"sqlite:///{(tmp_path / 'copy' / 'mlflow.db').resolve()}"
    res = export_experiment(EXP, tmp_path / "out", absolute)
    assert (res.method_used, res.n_runs) == ("sql", 5)
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["tracking_uri"] == absolute

"""Speed of analysis.export on a large sqlite store, against mlflow.search_runs, in one process.

Setup builds a real MLflow-written store (MlflowClient.create_run + one log_batch per run): one parent run and
N child runs with 10 params (ints, floats, bools, strings, JSON lists, None) and 5 metrics of --steps points.
Then it times, each on the same warm store:
  export_experiment, sql path (full export, incremental=False; median of --repeats),
  export_experiment, sql path, incremental with nothing changed,
  export_experiment, API path (full export; once: it makes one request per run and metric),
  mlflow.search_runs(experiment_names=[...]) to pandas (median of --repeats),
and prints the seconds and the ratio search_runs / export. Targets: export <= 10 s for 10,000 runs and >= 10x
faster than search_runs.

    python bench/export_speed.py [--runs 10000] [--steps 10] [--repeats 3] [--store DIR] [--skip-api]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from analysis.export import export_experiment
from analysis.schema import METRICS_FILE, RUNS_FILE

EXPERIMENT = "bench-export"
METRICS = ("train/ce", "val/ce", "val/acc", "eval/ce_blank20", "sys/steps_per_s")


def build_store(uri: str, artifacts: Path, runs: int, steps: int) -> float:
    """The experiment with a parent and `runs` children; returns seconds taken (0 if it was already there)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        n = len(client.search_runs([exp.experiment_id], max_results=runs + 1))
        if n == runs + 1:
            return 0.0
        raise SystemExit(f"{uri} holds {n - 1} runs of {EXPERIMENT}, not {runs}: use another --store")
    t0 = time.perf_counter()
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(artifacts))
    parent = client.create_run(exp_id, run_name="sweep", tags={"rims.sweep_id": "bench"}).info.run_id
    now = int(time.time() * 1000)
    for i in range(runs):
        tags = {"mlflow.parentRunId": parent, "rims.sweep_id": "bench", "rims.trial_id": f"t{i:05d}",
                "rims.seed": str(i % 5)}
        rid = client.create_run(exp_id, run_name=f"t{i:05d}", tags=tags, start_time=now + i).info.run_id
        params = {"model.num_units": i % 8 + 1, "model.top_k": i % 4 + 1, "model.hidden_size": 64 * (i % 3 + 1),
                  "optim.lr": 10 ** -(i % 4 + 2), "optim.grad_clip": 1.0, "model.comm.enabled": i % 2 == 0,
                  "model.kind": "rims" if i % 10 else "lstm", "task.test_blanks": json.dumps([20, 50]),
                  "model.input_attention.value_size": None, "seed": i % 5}
        metrics = [Metric(k, 1.0 / (s + 1) + j + i * 1e-6, now + i + s, s) for j, k in enumerate(METRICS)
                   for s in range(steps)]
        client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("rims.config_id", f"c{i % 97}")])
        client.set_terminated(rid, "FINISHED", end_time=now + i + steps)
    client.set_terminated(parent, "FINISHED")
    return time.perf_counter() - t0


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=10, help="points per metric and run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store", type=Path, help="directory to keep (and reuse) the store in; default: a temp dir")
    ap.add_argument("--skip-api", action="store_true", help="do not time the (slow) API path")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="export-bench-")
    root = (args.store or Path(tmp.name)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    built = build_store(uri, root / "artifacts", args.runs, args.steps)
    print(f"store: {uri}: 1 parent + {args.runs} runs x (10 params, {len(METRICS)} metrics x {args.steps} points)"
          + (f", built in {built:.1f} s" if built else ", reused"))

    t_sql, res = timed(lambda: export_experiment(EXPERIMENT, root / "out-sql", uri, incremental=False,
                                                 method="sql"), args.repeats)
    assert res.method_used == "sql", res.note
    print(f"export sql (full):          {t_sql:7.3f} s  ({res.n_runs} runs, {res.n_metric_points} points)")
    t_inc, inc = timed(lambda: export_experiment(EXPERIMENT, root / "out-sql", uri, method="sql"), args.repeats)
    print(f"export sql (incremental):   {t_inc:7.3f} s  ({inc.n_new_or_changed} runs re-read)")
    t_api = None
    if not args.skip_api:
        t_api, api = timed(lambda: export_experiment(EXPERIMENT, root / "out-api", uri, incremental=False,
                                                     method="api"), 1)
        print(f"export api (full):          {t_api:7.3f} s  ({api.n_runs} runs, {api.n_metric_points} points)")
        same = all(pq.read_table(root / "out-sql" / f).equals(pq.read_table(root / "out-api" / f))
                   for f in (RUNS_FILE, METRICS_FILE))  # the bench data has no NaN: plain equality holds
        print(f"sql and api tables identical: {same}")
    mlflow.set_tracking_uri(uri)
    t_search, df = timed(lambda: mlflow.search_runs(experiment_names=[EXPERIMENT]), args.repeats)
    print(f"mlflow.search_runs->pandas: {t_search:7.3f} s  ({len(df)} rows, no histories)")
    print(f"ratio search_runs / export sql (full):        {t_search / t_sql:6.1f}x")
    print(f"ratio search_runs / export sql (incremental): {t_search / t_inc:6.1f}x")
    if t_api is not None:
        print(f"ratio export api / export sql (full):         {t_api / t_sql:6.1f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()

"""Overheads of the sweep machinery, each measured against its baseline in the same run.

1. MLflow logging per training step on the copying trainable: the same trial with tracking to MLflow and with
   tracking off, alternated; prints the extra time as a % of step time (target <= 2%).
2. Tune's overhead for 100 trivial trials on 2 CPUs (each reports once), with the runner's settings
   (points from our expansion, reuse_actors=True): total wall time (target <= 30 s).

    python bench/sweep_overhead.py [--uri sqlite:///...|http://127.0.0.1:5000] [--repeats 3] [--every 100,10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sweeps.space import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tracking import SweepTracker
from sweeps.trial import run_trial

SPEC = {"name": "bench", "task": {"name": "copying", "blank": 10, "test_blanks": [20], "eval_size": 64},
        "model": {"kind": "rims", "hidden_size": 120, "num_units": 6, "top_k": 4},
        "optim": {"lr": 0.005, "batch_size": 64, "max_steps": 100, "eval_every": 10}}


def logging_overhead(uri: str, repeats: int, steps: int, every: int) -> None:
    torch.set_num_threads(1)
    spec = {**SPEC, "optim": {**SPEC["optim"], "max_steps": steps, "eval_every": every}}
    flat = resolve({**base_config(load_spec(spec)), "seed": 0})
    sweeper = SweepTracker(uri, "bench-overhead")
    parent = sweeper.start("bench", {}, {}, "")
    on = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "parent_run_id": parent,
          "sweep_id": "bench", "seeds": [0], "tags": {}, "cpus": 1}
    off = {**on, "tracking_uri": None}
    times: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(repeats):
        for name, ctx in (("off", off), ("on", on)):
            t = time.perf_counter()
            run_trial(flat, ctx, trial_id=f"{name}-{i}", checkpoint_dir=None, report=lambda m, d: None)
            times[name].append(time.perf_counter() - t)
    a, b = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"MLflow logging ({uri.split(':')[0]}), copying trainable, {steps} steps, a report every "
          f"{every} steps, median of {repeats}:")
    print(f"  tracking off {a / steps * 1e3:.1f} ms/step, on {b / steps * 1e3:.1f} ms/step, "
          f"overhead {100 * (b - a) / a:+.1f}% of step time")


def tune_overhead(n: int) -> None:
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    def trivial(config):
        tune.report({"val/ce": float(config["seed"])})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    points = [{"seed": i} for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        tuner = tune.Tuner(trivial, param_space={"seed": None},
                           tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                                       num_samples=n, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=d, name="trivial", verbose=0))
        grid = tuner.fit()
        wall = time.perf_counter() - t
    ray.shutdown()
    print(f"Tune, {n} trivial trials on 2 CPUs (reuse_actors=True): {wall:.1f} s wall in total "
          f"({len(grid)} results, {grid.num_errors} errors)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default=None, help="tracking URI (default: a fresh sqlite file)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--steps", type=int, default=200, help="training steps of the timed trial")
    ap.add_argument("--every", default="100,10", help="report intervals to time (comma-separated)")
    ap.add_argument("--skip-tune", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for every in (int(e) for e in args.every.split(",")):
            logging_overhead(args.uri or f"sqlite:///{Path(d) / 'mlflow.db'}", args.repeats, args.steps, every)
    if not args.skip_tune:
        tune_overhead(args.trials)


if __name__ == "__main__":
    main()

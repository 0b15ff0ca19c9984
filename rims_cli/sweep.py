"""``rims sweep validate | run | submit | dashboard | local``: a YAML spec to trials, on Ray Tune or locally.

Each command loads (and so checks) the spec before importing what runs it: a refused spec exits 2 having
imported only sweeps.spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sweeps.search import search_algorithm

from .common import fail, load_or_report, print_outcome, runs_url

__all__ = ["SUBMIT_EXCLUDES", "add_sweep_parser", "submit_command"]

SUBMIT_EXCLUDES = [".venv", ".git", "ray_results", "mlflow.db", "mlartifacts", "mlruns", ".pytest_cache",
                   ".hypothesis", ".ruff_cache"]


def _validate(args: argparse.Namespace) -> int:
    spec, _ = load_or_report(args.spec)
    if spec is None:
        return 2
    from sweeps.flat import resolve
    from sweeps.space import trial_points, varying_keys
    from sweeps.tracking import run_name

    metric, mode = spec.objective
    print(f"sweep {spec.name!r}: task {spec.task['name']}, search {spec.search.algorithm}, "
          f"objective {metric} ({mode}), seeds {spec.seed_list}")
    if not search_algorithm(spec.search.algorithm).expanded:
        print(f"Optuna suggests {spec.search.num_samples} configurations x {len(spec.seed_list)} seeds over "
              f"{spec.space_keys}")
        return 0
    points = trial_points(spec)
    varied = [*varying_keys(spec), "seed"]
    n_seeds = len(spec.seed_list)
    print(f"{len(points)} trials ({len(points) // n_seeds} configurations x {n_seeds} seeds):")
    for i, p in enumerate(points):
        r = resolve(p)
        print(f"  {i:3d}  " + "  ".join(f"{k}={r[k]}" for k in varied if k in r)
              + f"   (run name: {run_name(r, varied[:-1])})")
    return 0


def _run(args: argparse.Namespace) -> int:
    spec, text = load_or_report(args.spec)
    if spec is None:
        return 2
    from sweeps.runner import run_sweep
    from sweeps.spec import SpecError

    try:
        res = run_sweep(spec, text, address=args.address, mlflow_uri=args.mlflow_uri,
                        storage_path=args.storage_path, resume=args.resume, smoke=args.smoke, quiet=args.quiet,
                        verbose=args.verbose, spec_path=args.spec, preflight=False)  # load_or_report ran it
    except SpecError as e:  # what depends on the cluster, checked right after connecting
        return fail(str(e))
    print_outcome(res)
    print(f"results: {res.path}")
    print(f"MLflow: parent run {res.parent_run_id} in experiment {res.experiment_id} at {res.tracking_uri}")
    print(f"  browse: {runs_url(res.tracking_uri, res.experiment_id)}")
    if res.study:
        print(f"Optuna study {res.study[1]!r}: optuna-dashboard {res.study[0]}   (or: rims sweep dashboard "
              f"{args.spec}{' --storage-path ' + args.storage_path if args.storage_path else ''})")
    return 0 if res.counts["errored"] < res.counts["trials"] else 1


def _dashboard(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    spec, _ = load_or_report(args.spec, preflight=False)
    if spec is None:
        return 2
    from sweeps.runner import OPTUNA_DB, optuna_storage

    storage = Path(args.storage_path or "ray_results").resolve()
    found = sorted((p for p in storage.glob(f"{spec.name}*") if (p / OPTUNA_DB).is_file()
                    and (p.name == spec.name or p.name[len(spec.name) + 1:].isdigit())),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        return fail(f"--storage-path: no Optuna study of sweep {spec.name!r} under {storage} (expected "
                    f"{storage / spec.name / OPTUNA_DB}, which `rims sweep run` writes for a spec with "
                    "search.algorithm: optuna); give the --storage-path the sweep ran with")
    url = optuna_storage(found[-1])
    dashboard = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    cmd = [dashboard, url, "--host", args.host, "--port", str(args.port)]
    print(f"Optuna study {spec.name!r} of {found[-1]}\n+ optuna-dashboard {url} --host {args.host} --port "
          f"{args.port}\n  then open http://{args.host}:{args.port}/", flush=True)
    if args.print_only:
        return 0
    if not Path(dashboard).exists():
        return fail("optuna-dashboard is not installed; install it with `pip install optuna-dashboard` (or the "
                    "project's extra: pip install -e '.[dashboard]')")
    return subprocess.call(cmd)


def _local(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        return fail(f"--jobs: Expected a positive number of worker processes, got {args.jobs}")
    spec, text = load_or_report(args.spec)
    if spec is None:
        return 2
    from sweeps.local import run_local
    from sweeps.spec import SpecError

    try:
        res = run_local(spec, text, args.out, jobs=args.jobs, device=args.device, mlflow_uri=args.mlflow_uri,
                        smoke=args.smoke)
    except SpecError as e:
        return fail(str(e))
    print_outcome(res)
    if res.previously_done:
        print(f"  {len(res.previously_done)} of them had ended in an earlier run into {res.path} and were not run "
              "again (a new --out runs them afresh)")
    print(f"results: {res.path}" + ("" if args.mlflow_uri else
                                    f"\noffline: send the runs with `rims tracking replay {res.path / 'spill'} "
                                    "--mlflow-uri URI`"))
    return 0 if res.counts["errored"] < res.counts["trials"] else 1


def submit_command(args: argparse.Namespace) -> list[str]:
    """The `ray job submit` that runs `rims sweep run SPEC --address auto` on the cluster, carrying the
    submitting tree's git state (the job's copy of the working directory has no .git)."""
    import json
    import shutil

    from sweeps.tracking import git_state

    sha, dirty = git_state()
    runtime_env = {"excludes": SUBMIT_EXCLUDES, "env_vars": {"RIMS_GIT_SHA": sha, "RIMS_GIT_DIRTY": str(dirty)}}
    rims = shutil.which("rims") or str(Path(sys.executable).parent / "rims")
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    cmd = [ray, "job", "submit", "--address", args.address, "--working-dir", args.working_dir,
           "--runtime-env-json", json.dumps(runtime_env), "--", rims, "sweep", "run", args.spec, "--address", "auto"]
    for flag in ("mlflow_uri", "storage_path"):
        if getattr(args, flag):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += [f"--{f}" for f in ("resume", "smoke", "quiet", "verbose") if getattr(args, f, False)]
    return cmd


def _submit(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    # refuse a bad spec here; its data files are checked on the cluster, where the sweep runs
    spec, _ = load_or_report(args.spec, preflight=False)
    if spec is None:
        return 2
    cmd = submit_command(args)
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


def add_sweep_parser(sub: Any) -> None:
    """``rims sweep ...`` under the root parser's subcommands ``sub``."""
    sw = sub.add_parser("sweep", help="run or validate a sweep spec (Ray Tune + MLflow)")
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    v = ssub.add_parser("validate", help="check a spec (every problem at once, the task's data files on this "
                                         "machine included) and print the trials it expands to; runs nothing")
    v.add_argument("spec", help="path to the YAML spec")
    v.set_defaults(func=_validate)
    r = ssub.add_parser("run", help="run a spec on Ray Tune, every trial tracked in MLflow")
    r.add_argument("spec", help="path to the YAML spec")
    r.add_argument("--address", default=None, help="join a running Ray cluster (e.g. auto); default: local Ray")
    r.add_argument("--mlflow-uri", default=None,
                   help="tracking server (http://HOST:PORT); default sqlite:///<cwd>/mlflow.db")
    r.add_argument("--storage-path", default=None, help="where results and checkpoints go (default ./ray_results)")
    r.add_argument("--resume", action="store_true", help="continue the newest interrupted sweep of this name")
    r.add_argument("--smoke", action="store_true", help="run every trial for a few steps only")
    r.add_argument("--quiet", action="store_true", help="no progress output, errors only")
    r.add_argument("--verbose", action="store_true",
                   help="the progress table at every change (default: a line per change, the table at the end), "
                        "and Ray's and the trials' INFO logs")
    r.set_defaults(func=_run)
    sb = ssub.add_parser("submit", help="submit `rims sweep run SPEC --address auto` to a cluster with ray job submit")
    sb.add_argument("spec", help="path to the YAML spec, relative to --working-dir")
    sb.add_argument("--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265")
    sb.add_argument("--working-dir", default=".", help="uploaded to the cluster (default: this directory)")
    sb.add_argument("--mlflow-uri", default=None, help="a tracking server every node reaches (http://HEAD:5000)")
    sb.add_argument("--storage-path", default=None, help="shared storage for results and checkpoints")
    sb.add_argument("--resume", action="store_true",
                    help="continue the newest interrupted sweep of this name (on the cluster's --storage-path)")
    sb.add_argument("--smoke", action="store_true", help="run every trial for a few steps only")
    sb.add_argument("--quiet", action="store_true", help="no progress output in the job's log, errors only")
    sb.add_argument("--verbose", action="store_true",
                    help="the progress table at every change, and Ray's and the trials' INFO logs")
    sb.set_defaults(func=_submit)

    db = ssub.add_parser("dashboard", help="open the Optuna study of an optuna sweep in optuna-dashboard")
    db.add_argument("spec", help="path to the YAML spec the sweep ran (its name finds the study)")
    db.add_argument("--storage-path", default=None,
                    help="where the sweep's results are (default ./ray_results); the newest sweep of the name")
    db.add_argument("--host", default="127.0.0.1", help="address the dashboard binds to (default 127.0.0.1)")
    db.add_argument("--port", type=int, default=8080, help="port of the dashboard (default 8080)")
    db.add_argument("--print-only", action="store_true",
                    help="print the optuna-dashboard command and the study's storage URL; start nothing")
    db.set_defaults(func=_dashboard)

    lo = ssub.add_parser("local", help="run a grid/random spec without Ray (worker processes; CPU or one GPU); "
                                       "offline unless --mlflow-uri is given")
    lo.add_argument("spec", help="path to the YAML spec")
    lo.add_argument("--out", required=True, help="results folder (checkpoints, spill files); run again to resume")
    lo.add_argument("--jobs", type=int, default=1, help="trials at once (worker processes)")
    lo.add_argument("--device", default=None, help="torch device for every trial, e.g. cuda (default: cpu)")
    lo.add_argument("--mlflow-uri", default=None, help="log live to this store (default: offline, spill files)")
    lo.add_argument("--smoke", action="store_true", help="run every trial for a few steps only")
    lo.set_defaults(func=_local)

"""The ``rims`` command. A thin shell over the libraries; subcommands import what they need lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import DemoConfig, train_copying

    torch.set_num_threads(args.threads)
    cfg = DemoConfig(kind=args.kind, steps=args.steps, blank=args.blank, hidden_size=args.hidden_size,
                     seed=args.seed)
    out = train_copying(cfg)
    first, last = out["ce"][: cfg.log_every], out["ce"][-cfg.log_every:]
    a, b = sum(first) / len(first), sum(last) / len(last)
    print(f"train ce fell from {a:.3f} to {b:.3f}" if b < a else f"train ce did not fall ({a:.3f} -> {b:.3f})")
    return 0 if b < a else 1


def _load(path: str, preflight: bool = True):
    """The spec at path and its text, or (None, None) after printing every problem (the task's checks of this
    machine included, unless preflight is False: ``sweep submit``, whose sweep runs elsewhere)."""
    from .spec import SpecError, load_spec

    try:
        return load_spec(path, preflight=preflight), Path(path).read_text()
    except SpecError as e:
        print(f"rims: {e}", file=sys.stderr)
        return None, None


def _sweep_validate(args: argparse.Namespace) -> int:
    from .flat import resolve
    from .space import trial_points, varying_keys
    from .tracking import run_name

    spec, _ = _load(args.spec)
    if spec is None:
        return 2
    metric, mode = spec.objective
    print(f"sweep {spec.name!r}: task {spec.task['name']}, search {spec.search.algorithm}, "
          f"objective {metric} ({mode}), seeds {spec.seed_list}")
    if spec.search.algorithm == "optuna":
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


def _print_outcome(res) -> None:
    """A finished sweep's trial counts by outcome and its failures (rims sweep run / local)."""
    c = res.counts
    print(f"\nsweep {res.sweep_id}: {c['trials']} trials, {c['completed']} completed, {c['stopped_early']} "
          f"stopped early (scheduler, stopping rule or time budget), {c['failed']} failed, {c['errored']} errored")
    for f in res.failures:
        print(f"  failed: {f}")


def _sweep_run(args: argparse.Namespace) -> int:
    from .runner import run_sweep
    from .spec import SpecError

    spec, text = _load(args.spec)
    if spec is None:
        return 2
    try:
        res = run_sweep(spec, text, address=args.address, mlflow_uri=args.mlflow_uri,
                        storage_path=args.storage_path, resume=args.resume, smoke=args.smoke, quiet=args.quiet,
                        verbose=args.verbose, spec_path=args.spec, preflight=False)  # load_spec ran it
    except SpecError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    _print_outcome(res)
    print(f"results: {res.path}")
    print(f"MLflow: parent run {res.parent_run_id} in experiment {res.experiment_id} at {res.tracking_uri}")
    print(f"  browse: {runs_url(res.tracking_uri, res.experiment_id)}")
    if res.study:
        print(f"Optuna study {res.study[1]!r}: optuna-dashboard {res.study[0]}   (or: rims sweep dashboard "
              f"{args.spec}{' --storage-path ' + args.storage_path if args.storage_path else ''})")
    return 0 if res.counts["errored"] < res.counts["trials"] else 1


def runs_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """Where a user sees the runs: the runs table of the MLflow UI (its experiment page opens on a GenAI
    overview instead); for a local store, the `mlflow ui` command that serves it first."""
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then http://127.0.0.1:5000/{page}"


def _sweep_dashboard(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from .runner import OPTUNA_DB, optuna_storage

    spec, _ = _load(args.spec, preflight=False)
    if spec is None:
        return 2
    storage = Path(args.storage_path or "ray_results").resolve()
    found = sorted((p for p in storage.glob(f"{spec.name}*") if (p / OPTUNA_DB).is_file()
                    and (p.name == spec.name or p.name[len(spec.name) + 1:].isdigit())),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        print(f"rims: --storage-path: no Optuna study of sweep {spec.name!r} under {storage} (expected "
              f"{storage / spec.name / OPTUNA_DB}, which `rims sweep run` writes for a spec with search.algorithm: "
              "optuna); give the --storage-path the sweep ran with", file=sys.stderr)
        return 2
    url = optuna_storage(found[-1])
    dashboard = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    cmd = [dashboard, url, "--host", args.host, "--port", str(args.port)]
    print(f"Optuna study {spec.name!r} of {found[-1]}\n+ optuna-dashboard {url} --host {args.host} --port "
          f"{args.port}\n  then open http://{args.host}:{args.port}/", flush=True)
    if args.print_only:
        return 0
    if not Path(dashboard).exists():
        print("rims: optuna-dashboard is not installed; install it with `pip install optuna-dashboard` (or the "
              "project's extra: pip install -e '.[dashboard]')", file=sys.stderr)
        return 2
    return subprocess.call(cmd)


def _sweep_local(args: argparse.Namespace) -> int:
    from .local import run_local
    from .spec import SpecError

    if args.jobs < 1:
        print(f"rims: --jobs: Expected a positive number of worker processes, got {args.jobs}", file=sys.stderr)
        return 2
    spec, text = _load(args.spec)
    if spec is None:
        return 2
    try:
        res = run_local(spec, text, args.out, jobs=args.jobs, device=args.device, mlflow_uri=args.mlflow_uri,
                        smoke=args.smoke)
    except SpecError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    _print_outcome(res)
    if res.previously_done:
        print(f"  {len(res.previously_done)} of them had ended in an earlier run into {res.path} and were not run "
              "again (a new --out runs them afresh)")
    print(f"results: {res.path}" + ("" if args.mlflow_uri else
                                    f"\noffline: send the runs with `rims tracking replay {res.path / 'spill'} "
                                    "--mlflow-uri URI`"))
    return 0 if res.counts["errored"] < res.counts["trials"] else 1


def _tracking_replay(args: argparse.Namespace) -> int:
    from .tracking import absolute_tracking_uri, replay_paths

    try:
        done = replay_paths(args.paths, absolute_tracking_uri(args.mlflow_uri))
    except ValueError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    for path, points in done:
        print(f"{path}: {points} metric points sent")
    print(f"{len(done)} files replayed ({sum(n for _, n in done)} metric points; points already in the store are "
          "not sent twice)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run, parse_overrides
    from .tracking import absolute_tracking_uri

    uri = absolute_tracking_uri(args.mlflow_uri)
    try:
        res = evaluate_run(args.run_id, parse_overrides(args.set), uri, progress=lambda s: print(s, flush=True))
    except ValueError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    for k, v in sorted(res.logged.items()):
        print(f"{k:32s} {v:.4f}")
    for k, (old, now) in sorted(res.kept.items()):
        same = "same" if abs(old - now) <= 1e-6 * max(1.0, abs(old)) else f"now {now:.4f}: other evaluation settings?"
        print(f"{k:32s} {old:.4f}  already in the run, not logged again ({same})")
    print(f"logged {len(res.logged)} new metric{'s' * (len(res.logged) != 1)} to run {res.run_id} (experiment "
          f"{res.experiment!r}) at step {res.step}, in {uri}" if res.logged else
          f"nothing logged: run {res.run_id} already has every metric evaluated (step {res.step}, {uri})")
    return 0


def _analyze_export(args: argparse.Namespace) -> int:
    from analysis.export import export_experiment

    try:
        res = export_experiment(args.experiment, args.out, args.mlflow_uri, incremental=not args.full)
    except ValueError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    print(f"exported {res.n_runs} runs ({res.n_new_or_changed} new or changed), {res.n_metric_points} metric points "
          f"to {res.path} in {res.seconds:.2f} s ({res.method_used})")
    return 0


def _analyze_table(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from analysis.report import select_sweep
    from analysis.schema import RUNS_FILE
    from analysis.tables import ablation_table, paper_table, per_run_table

    path = Path(args.export_dir) / RUNS_FILE
    if not path.is_file():
        print(f"rims: no {RUNS_FILE} in {args.export_dir}; run `rims analyze export` first", file=sys.stderr)
        return 2
    split = (lambda v: [x for x in v.split(",") if x] if v else None)  # noqa: E731
    try:
        runs, _, _ = select_sweep(pq.read_table(path), args.sweep_id)
        if args.per_run:
            import io

            import pyarrow.csv as pacsv

            buf = io.BytesIO()
            pacsv.write_csv(per_run_table(runs, split(args.rows), split(args.metrics), stat=args.stat), buf)
            print(buf.getvalue().decode(), end="")
            return 0
        if args.paper:
            table = paper_table(runs, which=args.paper, stat=args.stat, ci=args.ci)
        else:
            table = ablation_table(runs, split(args.rows), split(args.metrics), stat=args.stat, ci=args.ci)
    except ValueError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    print({"md": table.to_markdown, "latex": table.to_latex, "csv": table.to_csv}[args.format]())
    return 0


def _analyze_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    try:
        res = build_report(args.experiment, args.mlflow_uri, args.out, sweep_id=args.sweep_id)
    except ValueError as e:
        print(f"rims: {e}", file=sys.stderr)
        return 2
    print(f"report: {res.markdown}\n        {res.html}")
    if res.parent_run_id:
        print(f"logged to the sweep's parent run {res.parent_run_id} (artifacts/report)")
    if res.where:
        print(f"open report.html in MLflow: {res.where}")
    return 0


SUBMIT_EXCLUDES = [".venv", ".git", "ray_results", "mlflow.db", "mlartifacts", "mlruns", ".pytest_cache",
                   ".hypothesis", ".ruff_cache"]


def submit_command(args: argparse.Namespace) -> list[str]:
    """The `ray job submit` that runs `rims sweep run SPEC --address auto` on the cluster, carrying the
    submitting tree's git state (the job's copy of the working directory has no .git)."""
    import json
    import shutil

    from .tracking import git_state

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


def _sweep_submit(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    spec, _ = _load(args.spec, preflight=False)  # refuse a bad spec here; data files are checked on the cluster
    if spec is None:
        return 2
    cmd = submit_command(args)
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rims", description="Recurrent Independent Mechanisms at scale.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="short RIM training on the copying task; prints the loss falling")
    d.add_argument("--kind", choices=["rims", "lstm", "gru"], default="rims", help="model.kind")
    d.add_argument("--steps", type=int, default=600, help="training steps (batch 64)")
    d.add_argument("--blank", type=int, default=5, help="blank span of the training sequences")
    d.add_argument("--hidden-size", type=int, default=120, help="total hidden size (6 units)")
    d.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default 0)")
    d.add_argument("--threads", type=int, default=1, help="torch CPU threads (2+ collapse when a core is busy)")
    d.set_defaults(func=_demo)

    sw = sub.add_parser("sweep", help="run or validate a sweep spec (Ray Tune + MLflow)")
    ssub = sw.add_subparsers(dest="sweep_command", required=True)
    v = ssub.add_parser("validate", help="check a spec (every problem at once, the task's data files on this "
                                         "machine included) and print the trials it expands to; runs nothing")
    v.add_argument("spec", help="path to the YAML spec")
    v.set_defaults(func=_sweep_validate)
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
    r.set_defaults(func=_sweep_run)
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
    sb.set_defaults(func=_sweep_submit)

    db = ssub.add_parser("dashboard", help="open the Optuna study of an optuna sweep in optuna-dashboard")
    db.add_argument("spec", help="path to the YAML spec the sweep ran (its name finds the study)")
    db.add_argument("--storage-path", default=None,
                    help="where the sweep's results are (default ./ray_results); the newest sweep of the name")
    db.add_argument("--host", default="127.0.0.1", help="address the dashboard binds to (default 127.0.0.1)")
    db.add_argument("--port", type=int, default=8080, help="port of the dashboard (default 8080)")
    db.add_argument("--print-only", action="store_true",
                    help="print the optuna-dashboard command and the study's storage URL; start nothing")
    db.set_defaults(func=_sweep_dashboard)

    lo = ssub.add_parser("local", help="run a grid/random spec without Ray (worker processes; CPU or one GPU); "
                                       "offline unless --mlflow-uri is given")
    lo.add_argument("spec", help="path to the YAML spec")
    lo.add_argument("--out", required=True, help="results folder (checkpoints, spill files); run again to resume")
    lo.add_argument("--jobs", type=int, default=1, help="trials at once (worker processes)")
    lo.add_argument("--device", default=None, help="torch device for every trial, e.g. cuda (default: cpu)")
    lo.add_argument("--mlflow-uri", default=None, help="log live to this store (default: offline, spill files)")
    lo.add_argument("--smoke", action="store_true", help="run every trial for a few steps only")
    lo.set_defaults(func=_sweep_local)

    from .rl import add_train_parser

    rl = sub.add_parser("rl", help="reinforcement learning: PPO on Atari with RIM or LSTM policies (RLlib)")
    add_train_parser(rl.add_subparsers(dest="rl_command", required=True))

    tr = sub.add_parser("tracking", help="tracking utilities")
    trsub = tr.add_subparsers(dest="tracking_command", required=True)
    rp_ = trsub.add_parser("replay", help="send spill files (offline sweeps, tracking outages) to an MLflow store")
    rp_.add_argument("paths", nargs="+", help="spill files (.jsonl) or folders of them")
    rp_.add_argument("--mlflow-uri", default=None,
                     help="the store to send them to (http://HOST:PORT); default sqlite:///<cwd>/mlflow.db")
    rp_.set_defaults(func=_tracking_replay)

    uri_help = "the MLflow tracking store: a server (http://HOST:PORT) or sqlite:///PATH; default sqlite:///<cwd>/mlflow.db"
    e = sub.add_parser("eval", help="re-evaluate a finished trial's checkpoint on new conditions, logged to its run",
                       description="Evaluate a finished trial's final checkpoint with changed task.* settings and "
                       "log the eval/* metrics its run does not have yet, at the run's final step; progress per "
                       "condition, then the run id and step logged to.")
    e.add_argument("run_id", help="the trial's MLflow run id (a trial run, not the sweep's parent run)")
    e.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE",
                   help="evaluation settings to change, e.g. task.test_blanks=400,800 (repeatable); a list of "
                   "conditions is evaluated one at a time")
    e.add_argument("--mlflow-uri", default=None, help=uri_help)
    e.set_defaults(func=_eval)

    an = sub.add_parser("analyze", help="export runs to Parquet, ablation tables, the sweep report")
    asub = an.add_subparsers(dest="analyze_command", required=True)
    ex = asub.add_parser("export", help="MLflow experiment -> runs.parquet + metrics.parquet (incremental)")
    ex.add_argument("--experiment", required=True, help="the MLflow experiment's name (a spec's experiment, or its "
                    "name)")
    ex.add_argument("--mlflow-uri", default=None, help=uri_help)
    ex.add_argument("--out", required=True, help="directory for the Parquet files (runs.parquet, metrics.parquet)")
    ex.add_argument("--full", action="store_true", help="re-fetch every run (default: only new or changed ones)")
    ex.set_defaults(func=_analyze_export)
    tb = asub.add_parser("table", help="mean +- CI over seeds per configuration, from an export")
    tb.add_argument("export_dir", help="the --out folder of `rims analyze export` (holds runs.parquet)")
    tb.add_argument("--rows", default=None, help="comma-separated keys (default: the model.* keys that vary)")
    tb.add_argument("--metrics", default=None, help="comma-separated metrics (default: the eval metrics)")
    tb.add_argument("--stat", choices=["final", "best", "min", "max"], default="final",
                    help="which value of each run's metric: its final value (default), its best over the run's "
                    "history (min for ce/bce/loss, max for acc), or its min or max")
    tb.add_argument("--ci", choices=["t", "bootstrap"], default="t",
                    help="95%% interval over seeds: t (default) or percentile bootstrap; none below 3 seeds")
    tb.add_argument("--format", choices=["md", "latex", "csv"], default="md",
                    help="Markdown (default), LaTeX (booktabs) or CSV (full precision, machine-readable)")
    tb.add_argument("--paper", choices=["ce", "ce_all"], default=None,
                    help="the RIMs paper's Table 1 layout (copying), with ce or ce_all")
    tb.add_argument("--per-run", action="store_true",
                    help="CSV of the per-seed values behind the table (one row per finished run) instead")
    tb.add_argument("--sweep-id", default=None,
                    help="one sweep of the experiment (default: the newest); 'all', or ids separated by commas")
    tb.set_defaults(func=_analyze_table)
    rp = asub.add_parser("report", help="Markdown + HTML report with tables and figures, logged to the parent run")
    rp.add_argument("--experiment", required=True, help="the MLflow experiment's name (a spec's experiment, or its "
                    "name)")
    rp.add_argument("--mlflow-uri", default=None, help=uri_help)
    rp.add_argument("--out", default=None, help="folder for report.md, report.html, figures/ and the export "
                    "(default reports/<experiment>)")
    rp.add_argument("--sweep-id", default=None,
                    help="default: the newest sweep of the experiment; 'all', or ids separated by commas")
    rp.set_defaults(func=_analyze_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

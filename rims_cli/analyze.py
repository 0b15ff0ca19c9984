"""``rims analyze export | table | report``: MLflow runs to Parquet, ablation tables, the sweep report.

The analysis library takes an absolute tracking URI; this shell resolves ``--mlflow-uri`` (default: the
sqlite store in the working directory) with sweeps.tracking.absolute_tracking_uri, and hands ``build_report``
the unit-activation loader of sweeps.activations (analysis imports nothing of sweeps but sweeps.keys).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import URI_HELP, fail

__all__ = ["add_analyze_parser"]


def _export(args: argparse.Namespace) -> int:
    from analysis.export import export_experiment
    from sweeps.tracking import absolute_tracking_uri

    try:
        res = export_experiment(args.experiment, args.out, absolute_tracking_uri(args.mlflow_uri),
                                incremental=not args.full)
    except ValueError as e:
        return fail(str(e))
    print(f"exported {res.n_runs} runs ({res.n_new_or_changed} new or changed), {res.n_metric_points} metric points "
          f"to {res.path} in {res.seconds:.2f} s ({res.method_used})")
    return 0


def _split(value: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given: the table's default)."""
    return [x for x in value.split(",") if x] if value else None


def _table(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from analysis.report import select_sweep
    from analysis.schema import RUNS_FILE
    from analysis.tables import ablation_table, paper_table, per_run_table

    path = Path(args.export_dir) / RUNS_FILE
    if not path.is_file():
        return fail(f"no {RUNS_FILE} in {args.export_dir}; run `rims analyze export` first")
    try:
        runs, _, _ = select_sweep(pq.read_table(path), args.sweep_id)
        if args.per_run:
            import io

            import pyarrow.csv as pacsv

            buf = io.BytesIO()
            pacsv.write_csv(per_run_table(runs, _split(args.rows), _split(args.metrics), stat=args.stat), buf)
            print(buf.getvalue().decode(), end="")
            return 0
        if args.paper:
            table = paper_table(runs, which=args.paper, stat=args.stat, ci=args.ci)
        else:
            table = ablation_table(runs, _split(args.rows), _split(args.metrics), stat=args.stat, ci=args.ci)
    except ValueError as e:
        return fail(str(e))
    print({"md": table.to_markdown, "latex": table.to_latex, "csv": table.to_csv}[args.format]())
    return 0


def _report(args: argparse.Namespace) -> int:
    from functools import partial

    from analysis.report import build_report
    from sweeps.activations import unit_activations
    from sweeps.tracking import absolute_tracking_uri

    uri = absolute_tracking_uri(args.mlflow_uri)
    try:
        # analysis never loads a model: the unit-activation figures get their arrays from sweeps' loader
        res = build_report(args.experiment, uri, args.out, sweep_id=args.sweep_id,
                           unit_activations=partial(unit_activations, tracking_uri=uri))
    except ValueError as e:
        return fail(str(e))
    print(f"report: {res.markdown}\n        {res.html}")
    if res.parent_run_id:
        print(f"logged to the sweep's parent run {res.parent_run_id} (artifacts/report)")
    if res.where:
        print(f"open report.html in MLflow: {res.where}")
    return 0


def add_analyze_parser(sub: Any) -> None:
    """``rims analyze ...`` under the root parser's subcommands ``sub``."""
    an = sub.add_parser("analyze", help="export runs to Parquet, ablation tables, the sweep report")
    asub = an.add_subparsers(dest="analyze_command", required=True)
    ex = asub.add_parser("export", help="MLflow experiment -> runs.parquet + metrics.parquet (incremental)")
    ex.add_argument("--experiment", required=True, help="the MLflow experiment's name (a spec's experiment, or its "
                    "name)")
    ex.add_argument("--mlflow-uri", default=None, help=URI_HELP)
    ex.add_argument("--out", required=True, help="directory for the Parquet files (runs.parquet, metrics.parquet)")
    ex.add_argument("--full", action="store_true", help="re-fetch every run (default: only new or changed ones)")
    ex.set_defaults(func=_export)
    tb = asub.add_parser("table", help="mean +- CI over seeds per configuration, from an export")
    tb.add_argument("export_dir", help="the --out folder of `rims analyze export` (holds runs.parquet)")
    tb.add_argument("--rows", default=None, help="comma-separated keys (default: the model.* keys that vary)")
    tb.add_argument("--metrics", default=None, help="comma-separated metrics (default: the eval metrics)")
    tb.add_argument("--stat", choices=["final", "best", "min", "max"], default="final",
                    help="which value of each run's metric: its final value (default), its best over the run's "
                    "history (min for ce/bce/loss, max for acc), or its min or max")
    tb.add_argument("--ci", choices=["t", "bootstrap", "log"], default="t",
                    help="95%% interval over seeds: t (default; mean ± half-width), bootstrap (percentile) or log "
                         "(t on the log values: geometric mean [low, high], for positive skewed metrics such as "
                         "cross-entropies); none below 3 seeds")
    tb.add_argument("--format", choices=["md", "latex", "csv"], default="md",
                    help="Markdown (default), LaTeX (booktabs) or CSV (full precision, machine-readable)")
    tb.add_argument("--paper", choices=["ce", "ce_all"], default=None,
                    help="the RIMs paper's Table 1 layout (copying), with ce or ce_all")
    tb.add_argument("--per-run", action="store_true",
                    help="CSV of the per-seed values behind the table (one row per finished run) instead")
    tb.add_argument("--sweep-id", default=None,
                    help="one sweep of the experiment (default: the newest); 'all', or ids separated by commas")
    tb.set_defaults(func=_table)
    rp = asub.add_parser("report", help="Markdown + HTML report with tables and figures, logged to the parent run")
    rp.add_argument("--experiment", required=True, help="the MLflow experiment's name (a spec's experiment, or its "
                    "name)")
    rp.add_argument("--mlflow-uri", default=None, help=URI_HELP)
    rp.add_argument("--out", default=None, help="folder for report.md, report.html, figures/ and the export "
                    "(default reports/<experiment>)")
    rp.add_argument("--sweep-id", default=None,
                    help="default: the newest sweep of the experiment; 'all', or ids separated by commas")
    rp.set_defaults(func=_report)

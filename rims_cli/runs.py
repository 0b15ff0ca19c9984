"""Commands on tracked runs: ``rims tracking replay`` (spill files to a store) and ``rims eval`` (a finished
trial's checkpoint on new conditions, logged to its run)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import URI_HELP, fail

__all__ = ["add_eval_parser", "add_tracking_parser"]


def _replay(args: argparse.Namespace) -> int:
    from sweeps.tracking import absolute_tracking_uri, replay_paths

    try:
        done = replay_paths(args.paths, absolute_tracking_uri(args.mlflow_uri))
    except ValueError as e:
        return fail(str(e))
    for path, points in done:
        print(f"{path}: {points} metric points sent")
    print(f"{len(done)} files replayed ({sum(n for _, n in done)} metric points; points already in the store are "
          "not sent twice)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sweeps.evaluate import evaluate_run, parse_overrides
    from sweeps.tracking import absolute_tracking_uri

    uri = absolute_tracking_uri(args.mlflow_uri)
    try:
        res = evaluate_run(args.run_id, parse_overrides(args.set), uri, progress=lambda s: print(s, flush=True))
    except ValueError as e:
        return fail(str(e))
    for k, v in sorted(res.logged.items()):
        print(f"{k:32s} {v:.4f}")
    for k, (old, now) in sorted(res.kept.items()):
        same = "same" if abs(old - now) <= 1e-6 * max(1.0, abs(old)) else f"now {now:.4f}: other evaluation settings?"
        print(f"{k:32s} {old:.4f}  already in the run, not logged again ({same})")
    print(f"logged {len(res.logged)} new metric{'s' * (len(res.logged) != 1)} to run {res.run_id} (experiment "
          f"{res.experiment!r}) at step {res.step}, in {uri}" if res.logged else
          f"nothing logged: run {res.run_id} already has every metric evaluated (step {res.step}, {uri})")
    return 0


def add_tracking_parser(sub: Any) -> None:
    """``rims tracking replay`` under the root parser's subcommands ``sub``."""
    tr = sub.add_parser("tracking", help="tracking utilities")
    trsub = tr.add_subparsers(dest="tracking_command", required=True)
    rp = trsub.add_parser("replay", help="send spill files (offline sweeps, tracking outages) to an MLflow store")
    rp.add_argument("paths", nargs="+", help="spill files (.jsonl) or folders of them")
    rp.add_argument("--mlflow-uri", default=None,
                    help="the store to send them to (http://HOST:PORT); default sqlite:///<cwd>/mlflow.db")
    rp.set_defaults(func=_replay)


def add_eval_parser(sub: Any) -> None:
    """``rims eval RUN_ID`` under the root parser's subcommands ``sub``."""
    e = sub.add_parser("eval", help="re-evaluate a finished trial's checkpoint on new conditions, logged to its run",
                       description="Evaluate a finished trial's final checkpoint with changed task.* settings and "
                       "log the eval/* metrics its run does not have yet, at the run's final step; progress per "
                       "condition, then the run id and step logged to.")
    e.add_argument("run_id", help="the trial's MLflow run id (a trial run, not the sweep's parent run)")
    e.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE",
                   help="evaluation settings to change, e.g. task.test_blanks=400,800 (repeatable); a list of "
                   "conditions is evaluated one at a time")
    e.add_argument("--mlflow-uri", default=None, help=URI_HELP)
    e.set_defaults(func=_eval)

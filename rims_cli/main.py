"""The ``rims`` root parser and entry point (``[project.scripts] rims = "rims_cli.main:main"``).

Only argparse and the command-group modules load here; each command imports its library when it runs.
"""

from __future__ import annotations

import argparse
import sys

from .analyze import add_analyze_parser
from .demo import add_demo_parser
from .rl import add_rl_parser
from .runs import add_eval_parser, add_tracking_parser
from .sweep import add_sweep_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Every ``rims`` command, in the order ``rims --help`` lists them."""
    p = argparse.ArgumentParser(prog="rims", description="Recurrent Independent Mechanisms at scale.")
    sub = p.add_subparsers(dest="command", required=True)
    add_demo_parser(sub)
    add_sweep_parser(sub)
    add_rl_parser(sub)
    add_tracking_parser(sub)
    add_eval_parser(sub)
    add_analyze_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv[1:]) and run the command; its exit status (2: refused input)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

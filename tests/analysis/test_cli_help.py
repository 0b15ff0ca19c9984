"""Every option of `rims eval` and `rims analyze ...` says in --help what it is for."""

from __future__ import annotations

import argparse
import subprocess
import sys

from sweeps.cli import build_parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_eval_and_analyze_option_has_a_help_text():
    root = _commands(build_parser())
    parsers = {"eval": root["eval"], **{f"analyze {k}": p for k, p in _commands(root["analyze"]).items()}}
    assert set(parsers) == {"eval", "analyze export", "analyze table", "analyze report"}
    empty = [f"rims {name}: {a.option_strings[0] if a.option_strings else a.dest}"
             for name, p in parsers.items() for a in p._actions
             if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not empty, f"options without a help text: {empty}"


def test_help_is_shown_by_the_real_command():
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "analyze", "export", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "--experiment EXPERIMENT the MLflow experiment's name" in text
    assert "--mlflow-uri MLFLOW_URI the MLflow tracking store" in text

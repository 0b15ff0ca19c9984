"""`rims --help` documents every option of every command, and the real entry points (the console script and
`python -m rims_cli`) run the new package."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from rims_cli.main import build_parser

RIMS = str(Path(sys.executable).parent / "rims")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every leaf subcommand under parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


LEAVES = list(commands(build_parser()))


def test_every_command_is_found_in_its_order():
    names = [" ".join(path) for path, _ in LEAVES]
    assert names == ["demo", "sweep validate", "sweep run", "sweep submit", "sweep dashboard", "sweep local",
                     "rl train", "tracking replay", "eval", "analyze export", "analyze table", "analyze report"]


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_option_has_a_help_text(path, parser):
    empty = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
             if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not empty, f"rims {' '.join(path)}: options without help: {empty}"


def test_help_prints_through_the_console_script():
    done = subprocess.run([RIMS, "sweep", "run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--verbose" in done.stdout and "the progress table at every change" in done.stdout
    script = Path(RIMS).read_text()
    assert "from rims_cli.main import main" in script, "reinstall: .venv/bin/pip install -e . --no-deps"


def test_help_prints_through_python_m():
    out = subprocess.run([sys.executable, "-m", "rims_cli", "analyze", "export", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "--experiment EXPERIMENT the MLflow experiment's name" in text
    assert "--mlflow-uri MLFLOW_URI the MLflow tracking store" in text


def test_a_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["sweep"])
    assert e.value.code == 2
    assert "the following arguments are required: sweep_command" in capsys.readouterr().err

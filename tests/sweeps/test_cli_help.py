"""`rims --help` documents every option: each argument of each subcommand of `rims demo`, `rims sweep`,
`rims rl` and `rims tracking` has a help text (`rims eval` and `rims analyze` are checked by their owners)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.cli import build_parser

CHECKED = ("demo", "sweep", "rl", "tracking")


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for every leaf subcommand under parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


LEAVES = [(path, p) for path, p in commands(build_parser()) if path[0] in CHECKED]


def test_every_checked_command_is_found():
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"sweep run", "sweep submit", "sweep local", "sweep validate", "sweep dashboard", "rl train",
            "tracking replay", "demo"} <= names


@pytest.mark.parametrize("path,parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_option_has_a_help_text(path, parser):
    empty = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
             if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not empty, f"rims {' '.join(path)}: options without help: {empty}"


def test_help_prints_through_the_entry_point():
    rims = str(Path(sys.executable).parent / "rims")
    done = subprocess.run([rims, "sweep", "run", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--verbose" in done.stdout and "the progress table at every change" in done.stdout

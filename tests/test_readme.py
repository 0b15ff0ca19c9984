"""The README's Python examples run as written, and the commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
SPECS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_example_runs(i, capsys):
    exec(compile(BLOCKS[i], f"README.md example {i}", "exec"), {})


def test_readme_make_targets_exist():
    makefile = (README.parent / "Makefile").read_text()
    for target in re.findall(r"make (\w+)", README.read_text()):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_readme_spec_example_validates(i):
    import yaml

    from sweeps.spec import load_spec

    spec = load_spec(yaml.safe_load(SPECS[i]))
    assert spec.name

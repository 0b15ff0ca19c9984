"""`rims sweep validate` and `rims sweep run` refuse a bad spec fast: through the real console script, with the
error text the CLI has always printed, having imported none of torch, Ray, MLflow or Optuna."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rims_cli.common import runs_url

RIMS = str(Path(sys.executable).parent / "rims")
HEAVY = ("torch", "ray", "mlflow", "optuna")
BAD = """name: bad
task: {name: copying, blnk: 10}
model: {kind: rims, hidden_size: 100, num_units: 6, top_k: 7}
"""
# what `rims sweep validate` printed for BAD before the CLI moved to rims_cli (sweeps/cli.py, 2026-12-03)
EXPECTED = """rims: invalid sweep spec:
  task.blnk: unknown key, not permitted (value 10); did you mean 'task.blank'?
  model.top_k: top_k must be <= num_units, got top_k=7 > num_units=6: no configuration satisfies it
  model.hidden_size: Expected hidden_size to be divisible by num_units, got hidden_size=100 and num_units=6; \
num_units in [1, 2, 4, 5, 10, 20, 25, 50] would divide it
"""


def imported_and_stderr(stderr: str) -> tuple[set[str], str]:
    """The top-level packages `-X importtime` (PYTHONPROFILEIMPORTTIME) saw imported, and the rest of stderr."""
    names, rest = set(), []
    for line in stderr.splitlines(keepends=True):
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if m:
            names.add(m.group(1).split(".")[0])
        elif not line.startswith("import time:"):  # the header line
            rest.append(line)
    return names, "".join(rest)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bad_spec_is_refused_without_importing_torch_ray_mlflow_or_optuna(command, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "RAY_ADDRESS": ""}
    done = subprocess.run([RIMS, "sweep", command, str(spec)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    imported, stderr = imported_and_stderr(done.stderr)
    assert done.returncode == 2, done.stderr[-3000:]
    assert stderr == EXPECTED
    assert "argparse" in imported and "sweeps" in imported, "the import log was read"
    assert not imported & set(HEAVY), f"imported {sorted(imported & set(HEAVY))} before refusing the spec"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "no store, no results folder"


def test_runs_url_opens_the_runs_table_or_says_how_to_serve_a_local_store():
    assert runs_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    assert runs_url("sqlite:////x/m.db", "3") == ("mlflow ui --backend-store-uri sqlite:////x/m.db --host 127.0.0.1 "
                                                  "--port 5000, then http://127.0.0.1:5000/#/experiments/3/runs")

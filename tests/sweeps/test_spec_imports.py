"""A spec is validated without the training stack: importing sweeps.spec and loading a spec (valid or refused)
imports no torch, Ray, MLflow or Optuna, so ``rims sweep validate`` answers at once; and the errors read as they
always did."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow", "optuna")

BAD_COPYING = {"name": "t", "task": {"name": "copying", "blnk": 5},
               "model": {"hidden_size": 24, "num_units": 4, "top_k": 2},
               "space": {"model.topk": {"grid": [1, 2]}, "optim.lr": {"loguniform": [0, 1]}}}
BAD_COPYING_ERROR = (
    "invalid sweep spec:\n"
    "  task.blnk: unknown key, not permitted (value 5); did you mean 'task.blank'?\n"
    "  space.model.topk: unknown key 'model.topk'; did you mean 'model.top_k'?\n"
    "  space.optim.lr.loguniform: expected low > 0 for a log-uniform range, got [0, 1]\n"
    "  space.optim.lr: search.algorithm is 'grid', so every space entry must be a grid; got {'loguniform': [0, 1]}")
BAD_ATARI = {"name": "t", "task": {"name": "atari"}, "model": {"kind": "gru"}}
BAD_ATARI_ERROR = ("invalid sweep spec:\n"
                   "  model.kind: Expected 'rims' or 'lstm' for PPO (RLlib has no built-in GRU baseline), got 'gru'")
GOOD = {"name": "t", "task": {"name": "bouncing", "frame_size": 8},
        "space": {"model.kind": {"grid": ["rims", "lstm"]}, "model.top_k": {"grid": [1, 2]}}}

SCRIPT = """
import json, sys
from sweeps.spec import SpecError, load_spec
try:
    load_spec(json.loads(sys.argv[1]))
    error = None
except SpecError as e:
    error = str(e)
print(json.dumps({"error": error, "heavy": [m for m in sys.argv[2].split(",") if m in sys.modules]}))
"""


def _load_in_fresh_process(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(spec), ",".join(HEAVY)], capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_importing_the_spec_imports_no_training_stack():
    code = f"import sys, sweeps.spec; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("spec,error", [
    (BAD_COPYING, BAD_COPYING_ERROR),
    (GOOD, None),
    (BAD_ATARI, BAD_ATARI_ERROR),
], ids=["refused-copying", "valid-bouncing", "refused-atari"])
def test_loading_a_spec_imports_no_training_stack_and_errors_read_as_before(spec, error):
    result = _load_in_fresh_process(spec)
    assert result["error"] == error
    assert result["heavy"] == []


def test_the_atari_error_reads_as_before():
    # in this process (torch may be loaded): the RL check still runs at load time, with its message
    from sweeps.spec import SpecError, load_spec

    with pytest.raises(SpecError) as info:
        load_spec(BAD_ATARI)
    assert str(info.value) == BAD_ATARI_ERROR

"""rims_core's error classes: one torch-free home, importable from where callers have always found them."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rims_core
from rims_core.config import RIMConfig, RIMConfigError
from rims_core.errors import NonFiniteLossError


def test_config_and_errors_import_without_torch():
    # a fresh interpreter: this one has torch loaded already
    code = ("import sys, rims_core.config, rims_core.errors, rllib_models.config; "
            "from rims_core import NonFiniteLossError, RIMConfigError; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_one_class_each_whichever_module_it_is_imported_from():
    assert rims_core.RIMConfigError is RIMConfigError and rims_core.NonFiniteLossError is NonFiniteLossError
    with pytest.raises(RIMConfigError, match="top_k <= num_units"):
        RIMConfig(hidden_size=12, num_units=3, top_k=4)


def test_a_diverged_loss_is_still_a_floating_point_error():
    # code written against the plain FloatingPointError raised before keeps catching it
    with pytest.raises(FloatingPointError, match="non-finite PPO loss"):
        raise NonFiniteLossError("non-finite PPO loss (nan) at env step 256")
    assert not issubclass(NonFiniteLossError, ValueError)  # not a bad setting: a run that diverged

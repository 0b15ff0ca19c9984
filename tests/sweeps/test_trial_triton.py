"""A RIM trial runs the Triton step where it passes its check, and records whether it did (tag rims.triton).

Without a GPU the kernels run under Triton's interpreter (the triton_interpreter fixture, tests/conftest.py),
which stands in for CUDA here: on a plain CPU nothing is decided and no tag is written."""

from __future__ import annotations

import pytest

from sweeps.keys import TAG_TRITON
from sweeps.spec import load_spec

from .logged import logged_trial

SPEC = {"name": "t", "task": {"name": "copying", "blank": 2, "num_symbols": 2, "test_blanks": [4], "eval_size": 8},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 4, "max_steps": 3, "eval_every": 3}}


@pytest.mark.slow
def test_a_trial_with_the_triton_step_trains_as_the_torch_step_does_and_says_so(tmp_path, triton_interpreter):
    _, _, on = logged_trial(tmp_path / "on", SPEC, "00000", "t")
    _, _, off = logged_trial(tmp_path / "off", SPEC, "00000", "t", triton=False)
    assert on.data.tags[TAG_TRITON] == "on"
    assert off.data.tags[TAG_TRITON] == "off: turned off by the setting"
    metrics = [k for k in on.data.metrics if k.startswith(("train/ce", "val/", "eval/"))]
    assert "val/ce" in metrics and "eval/ce_blank4" in metrics
    for k in metrics:  # same seed, same batches: the two steps agree to float rounding
        assert on.data.metrics[k] == pytest.approx(off.data.metrics[k], rel=1e-4, abs=1e-5), k


def test_a_cpu_trial_records_nothing(tmp_path):
    _, _, run = logged_trial(tmp_path, SPEC, "00000", "t")
    assert TAG_TRITON not in run.data.tags


def test_resources_triton_is_a_sweep_setting_with_a_default():
    assert load_spec(SPEC).resources.triton is True
    assert load_spec({**SPEC, "resources": {"triton": False}}).resources.triton is False

"""rims_core.enable_triton: the Triton step turned on only where it runs and agrees with the torch step.

Without a GPU the kernels run under Triton's interpreter (the triton_interpreter fixture, tests/conftest.py).
A miscompiled kernel is simulated by perturbing the Triton step's output: what a GPU could get wrong, shown
here on the CPU."""

from __future__ import annotations

import torch
from torch import nn

import rims_core.fused as fused
from rims_core import RIM, enable_triton
from rims_core.triton_check import self_check

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def cells_on(model):
    return [c.use_triton for c in model.cells]


def test_a_passing_check_turns_every_cell_on_and_leaves_the_rng_as_it_was(triton_interpreter):
    model = RIM(5, 12, 2, num_units=3, top_k=2, device=DEVICE)
    state = torch.get_rng_state()
    assert self_check(DEVICE) is None
    assert torch.equal(torch.get_rng_state(), state)  # a trial's draws do not depend on the check
    assert enable_triton(model, DEVICE) == "on"
    assert cells_on(model) == [True, True]


def test_a_step_that_disagrees_with_torch_stays_off_and_says_why(triton_interpreter, monkeypatch):
    real = fused.triton_rim_step

    def miscompiled(*args, **kw):
        h, *rest = real(*args, **kw)
        return (h * 1.01, *rest)

    monkeypatch.setattr(fused, "triton_rim_step", miscompiled)
    model = RIM(5, 12, num_units=3, top_k=2, device=DEVICE)
    status = enable_triton(model, DEVICE)
    assert status.startswith("off: output differs from the torch step's by up to")
    assert cells_on(model) == [False]


def test_a_step_that_fails_to_run_stays_off_with_the_error(triton_interpreter, monkeypatch):
    def broken(*args, **kw):
        raise RuntimeError("PTX compilation failed\nsecond line")

    monkeypatch.setattr(fused, "triton_rim_step", broken)
    status = enable_triton(RIM(5, 12, num_units=3, top_k=2, device=DEVICE), DEVICE)
    assert status == "off: RuntimeError: PTX compilation failed"


def test_the_setting_turns_it_off_and_models_without_rim_cells_need_no_decision(triton_interpreter):
    model = RIM(5, 12, num_units=3, top_k=2, device=DEVICE)
    assert enable_triton(model, DEVICE, enabled=False) == "off: turned off by the setting"
    assert cells_on(model) == [False]
    assert enable_triton(nn.LSTM(5, 12), DEVICE) is None


def test_on_a_cpu_nothing_is_decided_outside_the_tests_interpreter_fixture():
    # TRITON_INTERPRET=1 is set for the whole test session on a machine without a GPU (tests/conftest.py): it
    # alone must not turn the interpreted kernels on for CPU models
    model = RIM(5, 12, num_units=3, top_k=2)
    assert enable_triton(model, "cpu") is None
    assert cells_on(model) == [False]

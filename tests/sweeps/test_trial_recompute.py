"""resources.recompute: a RIM trial's cells keep less for backward (rims_core.set_recompute) and the trial logs
what it logs without: the same losses, evaluations and selection statistics, from the same gradients."""

from __future__ import annotations

import pytest

import rims_core.fused
from sweeps.spec import load_spec, sweep_params

from .logged import logged_trial

SPEC = {"name": "t", "task": {"name": "copying", "blank": 2, "test_blanks": [4], "eval_size": 8},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 4, "max_steps": 6, "eval_every": 3}}


@pytest.fixture
def kept(monkeypatch):
    """Counts the steps whose saved tensors the fused scan cut down (rims_core.fused._Compact.keep)."""
    calls = []
    keep = rims_core.fused._Compact.keep
    monkeypatch.setattr(rims_core.fused._Compact, "keep", lambda self, st, active: calls.append(1) or
                        keep(self, st, active))
    return calls


def test_a_recompute_trial_logs_what_the_saving_one_does(tmp_path, kept):
    _, _, off = logged_trial(tmp_path / "off", SPEC, "00000", "t")
    assert kept == []
    _, _, on = logged_trial(tmp_path / "on", SPEC, "00000", "t", recompute=True)
    assert len(kept) == 6 * 22  # every training step's scan, every time step of its sequences (T = 22)
    metrics = [k for k in off.data.metrics if k.startswith(("train/", "val/", "eval/", "sel/"))]
    assert {"train/ce", "val/ce", "eval/ce_blank4"} <= set(metrics)
    for k in metrics:
        assert on.data.metrics[k] == off.data.metrics[k], k


def test_resources_recompute_is_a_sweep_setting_off_by_default_and_a_parent_param():
    spec = load_spec(SPEC)
    assert spec.resources.recompute is False and sweep_params(spec, False)["resources.recompute"] is False
    spec = load_spec({**SPEC, "resources": {"recompute": True}})
    assert spec.resources.recompute is True and sweep_params(spec, False)["resources.recompute"] is True

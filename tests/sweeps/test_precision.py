"""optim.precision: a trial under bf16 autocast (the CPU's bf16 autocast here; the same code path as CUDA's)."""

from __future__ import annotations

import pytest
import torch

from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.trial import load_checkpoint, run_trial

OFFLINE = {"tracking_uri": None, "sweep_id": "s", "seeds": [0]}  # no tracking: the reports are what is checked
MODELS = {"rims": {"num_units": 4, "top_k": 2}, "lstm": {}, "gru": {}, "transformer": {}, "rmc": {}}


def run(kind: str, precision: str) -> list[tuple[dict, dict]]:
    spec = load_spec({"name": "t", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
                      "model": {"kind": kind, "hidden_size": 16, **MODELS[kind]},
                      "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 6, "eval_every": 3,
                                "precision": precision}})
    reports = []
    run_trial(resolve({**base_config(spec), "seed": 0}), OFFLINE, trial_id=f"{kind}-{precision}",
              checkpoint_dir=None, report=lambda m, d: reports.append((m, load_checkpoint(d))))
    return reports


@pytest.mark.parametrize("kind", list(MODELS))
def test_bf16_trains_every_model_kind_in_bf16_with_fp32_weights(kind):
    """The same seed and data in fp32 and bf16: the bf16 run's metrics are finite, differ from fp32's (autocast
    acted) by bf16's rounding only, and its weights and optimizer state stay fp32."""
    fp32, bf16 = run(kind, "fp32"), run(kind, "bf16")
    assert [m["step"] for m, _ in bf16] == [3, 6]
    for (a, _), (b, state) in zip(fp32, bf16, strict=True):
        assert all(torch.isfinite(torch.tensor(v)) for v in b.values())
        assert a["train/ce"] != b["train/ce"] and abs(a["train/ce"] - b["train/ce"]) < 0.05 * a["train/ce"]
        assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())
        assert all(v.dtype == torch.float32 for s in state["optimizer"]["state"].values() for v in s.values()
                   if torch.is_tensor(v) and v.is_floating_point() and v.dim())


def test_precision_is_one_config_key_with_fp32_the_default():
    spec = load_spec({"name": "t", "task": {"name": "copying"}, "model": {"kind": "lstm"}})
    assert base_config(spec)["optim.precision"] == "fp32"

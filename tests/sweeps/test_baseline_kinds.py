"""The seed's other baselines, ``model.kind: transformer`` and ``rmc``, through the sweep: the spec accepts them
(``rims sweep validate``), the trial code builds them via make_core, and a copying trial trains and evaluates at
the test lengths, with the same metric names as every other kind."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from rims_cli.main import main
from rims_core import RelationalMemory, TransformerCore, count_parameters, macs_per_step
from sweeps.local import run_local
from sweeps.spec import load_spec
from sweeps.tasks.base import make_core, recurrent_core
from sweeps.tasks.bouncing import BouncingModel, rollout_logits
from sweeps.tasks.copying import CopyingSettings, CopyingTask

RAW = {"name": "baselines", "experiment": "baselines",
       "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
       "model": {"kind": "transformer", "hidden_size": 16},
       "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 4, "eval_every": 2},
       "space": {"model.kind": {"grid": ["transformer", "rmc"]}}}


def test_validate_accepts_the_new_kinds(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(RAW))
    assert main(["sweep", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model.kind=transformer" in out and "model.kind=rmc" in out
    bad = {**RAW, "space": {"model.kind": {"grid": ["transformer", "mamba"]}}}
    path.write_text(yaml.safe_dump(bad))
    assert main(["sweep", "validate", str(path)]) != 0  # the kinds are a closed list


@pytest.mark.parametrize("kind,cls", [("transformer", TransformerCore), ("rmc", RelationalMemory)])
def test_make_core_builds_them_and_ignores_the_rim_only_settings(kind, cls):
    spec = load_spec({**RAW, "model": {"kind": kind, "hidden_size": 16}, "space": {}})
    model = spec.model.model_dump()  # the resolved model.* keys, RIM-only ones included
    core = make_core(model, 10)
    assert type(core) is cls and core.batch_first and core.hidden_size == 16
    task = CopyingTask(CopyingSettings(blank=3, test_blanks=[6], eval_size=4), model)
    net = task.build_model()
    assert recurrent_core(net) is not None and macs_per_step(recurrent_core(net)) > 0 < count_parameters(net)


@pytest.mark.slow
def test_a_copying_trial_of_each_kind_trains_and_evaluates(tmp_path):
    res = run_local(load_spec(RAW), yaml.safe_dump(RAW), tmp_path / "out", tracking=False)  # one torch thread
    assert res.counts["completed"] == 2 and not res.failures, res.failures
    kinds = set()
    for trial in res.results.values():
        last = trial["last"]
        for name in ("train/ce", "val/ce", "val/acc", "eval/ce_blank3", "eval/ce_blank6"):
            assert math.isfinite(last[name]), (trial["trial_id"], name)
        kinds.add(trial["trial_id"])
    assert len(kinds) == 2


@pytest.mark.parametrize("kind", ["transformer", "rmc"])
def test_bouncing_closed_loop_rollout_carries_their_state(kind):
    """The rollout feeds one predicted frame at a time with the state carried: it must give what one pass over the
    same inputs gives (the state contract, as the bouncing task uses it)."""
    torch.manual_seed(0)
    model = BouncingModel({"kind": kind, "hidden_size": 16}, frame_size=6).eval()
    frames = (torch.rand(2, 3, 6, 6) > 0.8).float()
    with torch.no_grad():
        rolled = rollout_logits(model, frames, burn_in=3, steps=4)  # (B, 4, S, S)
        inputs = torch.cat([frames, torch.sigmoid(rolled[:, :-1])], 1)  # what the rollout fed, in one sequence
        whole, _ = model(inputs)
    torch.testing.assert_close(whole[:, 2:], rolled, rtol=1e-4, atol=1e-5)

"""`rims demo`: a one-trial copying spec through the local runner, offline. The RIM learns (learning check) and
the entry point runs for real, without Ray or an MLflow store, leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rims_cli.demo import LOG_EVERY, demo_spec, run_demo
from sweeps.spec import load_spec
from sweeps.tasks.copying import CHANCE_CE, copying_metrics, make_batch
from tests.sweeps.servers import GUARD_S

RIMS = str(Path(sys.executable).parent / "rims")


def test_copying_batches_follow_the_task_definition():
    x, y = make_batch(32, 7, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 27)
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()
    assert (x[:, 16] == 9).all() and (x[:, 10:16] == 0).all() and (x[:, 17:] == 0).all()
    assert torch.equal(y[:, -10:], x[:, :10]) and (y[:, :-10] == 0).all()
    logits = torch.zeros(32, 27, 10)
    logits[..., 1:9] = 5.0  # uniform over the 8 symbols
    _, m = copying_metrics(logits, y)
    assert abs(m.ce - CHANCE_CE) < 1e-2


def test_the_flags_set_the_spec_keys():
    spec = load_spec(demo_spec("gru", steps=300, blank=7, hidden_size=64, seed=3))
    assert spec.model.kind == "gru" and spec.model.hidden_size == 64
    assert (spec.task["name"], spec.task["blank"]) == ("copying", 7)
    assert (spec.optim.max_steps, spec.optim.eval_every) == (300, LOG_EVERY)
    assert spec.seed_list == [3]
    assert demo_spec("lstm")["model"] == {"kind": "lstm", "hidden_size": 120}, "no RIM keys for a baseline"
    assert demo_spec(steps=20)["optim"]["eval_every"] == 20, "a report even when steps < LOG_EVERY"


def test_a_size_the_spec_refuses_exits_2_before_training(tmp_path):
    done = subprocess.run([RIMS, "demo", "--hidden-size", "100"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 2
    assert "model.hidden_size: Expected hidden_size to be divisible by num_units" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.learning
@pytest.mark.slow
def test_rim_learns_copying_at_a_short_blank_length():
    """~50 s of CPU time. A model without memory cannot beat chance (ce = ln 8 = 2.08, acc 1/8) on
    the recall positions, so a train ce below 1.6 and an accuracy above 0.3 show the RIM is remembering."""
    res = run_demo(demo_spec(steps=700, seed=0))
    assert res.status == "completed"
    trained = sorted(step for step, m in res.reports.items() if "train/ce" in m)  # step 0: the model's size
    assert trained == list(range(LOG_EVERY, 701, LOG_EVERY))
    first, last = res.train_ce[0], res.train_ce[-1]  # each the mean over 50 steps
    assert first > 1.9
    assert last < 1.6, f"train ce {first:.3f} -> {last:.3f}"
    final = res.reports[700]
    assert final["eval/acc_blank5"] > 0.3 and final["eval/ce_blank5"] < 1.7


@pytest.mark.slow
def test_rims_demo_cli_prints_the_loss_falling(tmp_path):
    """The entry point for real, on a budget: 100 steps, the first 50 against the last 50 (learning itself is the
    test above). No Ray, no MLflow store: nothing is left in the working directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "RAY_ADDRESS": ""}
    proc = subprocess.run([RIMS, "demo", "--steps", "100"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert "eval blank   20" in proc.stdout
    assert "train ce fell from" in proc.stdout
    assert list(tmp_path.iterdir()) == [], "the demo writes into a temporary folder only"

"""The demo's copying training: a RIM learns (learning check) and the CLI entry point runs for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sweeps.demo import DemoConfig, train_copying
from sweeps.tasks.copying import CHANCE_CE, copying_metrics, make_batch
from tests.sweeps.servers import GUARD_S


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


@pytest.mark.learning
@pytest.mark.slow
def test_rim_learns_copying_at_a_short_blank_length():
    """~30 s on 2 idle CPU cores. A model without memory cannot beat chance (ce = ln 8 = 2.08, acc 1/8) on
    the recall positions, so a train ce below 1.6 and an accuracy above 0.3 show the RIM is remembering."""
    torch.set_num_threads(1)
    out = train_copying(DemoConfig(steps=700, seed=0), log=lambda s: None)
    first, last = sum(out["ce"][:50]) / 50, sum(out["ce"][-50:]) / 50
    assert first > 1.9
    assert last < 1.6, f"train ce {first:.3f} -> {last:.3f}"
    ce, acc = out["eval"][5]
    assert acc > 0.3 and ce < 1.7


@pytest.mark.slow
def test_rims_demo_cli_prints_the_loss_falling(tmp_path):
    """The entry point for real, on a budget: 100 steps, the first 50 against the last 50 (learning itself is the
    test above)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "demo", "--steps", "100"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert "eval blank   20" in proc.stdout
    assert "train ce fell from" in proc.stdout

"""The RIM policy carries its state through long episodes without diverging (issue 13).

An env runner feeds each step's STATE_OUT back as the next STATE_IN for a whole episode; nothing resets or
detaches it in between. Here: 5,000 one-step exploration forwards (4 parallel episodes), with the RIM's weights
scaled up x10 (a loop gain far above 1, the stress that training can drift into), on random observations. With the
default communication output every unit's h stays within its bound at every step (|h| < 2 with LSTM units, |h| <= 1
with GRU units); with the paper's literal residual it overflows.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_models.module import RIMRLModule

OBS = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
ACTIONS = gym.spaces.Discrete(6)
STEPS, ENVS = 5000, 4


def run_episode(cell: str, scale: float, stop_above: float = float("inf"), **model_config
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step: max |h| over envs and units, and whether the logits were finite, up to the end of the episode or
    the first step where max |h| exceeds stop_above or is nan."""
    torch.manual_seed(0)
    m = RIMRLModule(observation_space=OBS, action_space=ACTIONS, model_config={
        "num_units": 4, "top_k": 2, "hidden_size": 32, "cell": cell, "encoder_hiddens": [16], **model_config})
    with torch.no_grad():
        for w in m.core.rim.parameters():
            w.mul_(scale)
    state = {k: torch.from_numpy(v).unsqueeze(0).repeat(ENVS, 1, 1) for k, v in m.get_initial_state().items()}
    obs = torch.rand(STEPS, ENVS, 1, 5) * 2 - 1
    peak, finite = torch.empty(STEPS), torch.empty(STEPS, dtype=torch.bool)
    with torch.no_grad():
        for t in range(STEPS):
            out = m.forward_exploration({Columns.OBS: obs[t], Columns.STATE_IN: state})
            state = out[Columns.STATE_OUT]
            peak[t] = state["h"].abs().max()
            finite[t] = torch.isfinite(out[Columns.ACTION_DIST_INPUTS]).all()
            if not peak[t] <= stop_above:
                return peak[:t + 1], finite[:t + 1]
    return peak, finite


@pytest.mark.slow
@pytest.mark.parametrize("cell,bound", [("lstm", 2.0), ("gru", 1.0)])
def test_policy_state_stays_bounded_over_a_5000_step_episode(cell, bound):
    torch.set_num_threads(1)
    peak, finite = run_episode(cell, scale=10.0)
    assert len(peak) == STEPS and finite.all()
    assert peak.max() <= bound + 1e-6, f"max |h| {peak.max():.6g} at step {int(peak.argmax())}"
    assert peak[-1000:].min() > 0.5 * bound  # the stress does drive the state to its bound, to the end


@pytest.mark.slow
def test_policy_with_the_literal_residual_overflows_under_the_same_stress():
    """The same test can fail: the paper's residual leaves any bound within the episode."""
    torch.set_num_threads(1)
    peak, finite = run_episode("lstm", scale=10.0, stop_above=1e3, comm={"output": "residual"})
    assert not finite.all() or peak.nan_to_num(nan=float("inf")).max() > 1e3
    assert len(peak) < STEPS  # it left the bound before the episode ended

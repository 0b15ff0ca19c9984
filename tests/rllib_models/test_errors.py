"""Bad PPO input is refused while building the config, in the driver: no Ray, no env runner, no learner."""

from __future__ import annotations

import pytest
import ray

from rllib_models.config import ModelConfigError
from rllib_models.ppo import PPOSettings, build_ppo_config

SETTINGS = PPOSettings(env="ALE/Pong-v5", num_envs=2, rollout_length=32)


def build(settings: PPOSettings = SETTINGS, model: dict | None = None, minibatch: int = 32):
    return build_ppo_config(settings, model or {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2},
                            lr=2.5e-4, minibatch_size=minibatch, grad_clip=0.5, total_steps=64, seed=0)


@pytest.mark.parametrize("settings,model,minibatch,error,match", [
    (SETTINGS.model_copy(update={"env": "ALE/Pongg-v5"}), None, 32, ValueError,
     r"env: Expected an ALE game id like 'ALE/Pong-v5', got 'ALE/Pongg-v5'; did you mean 'ALE/Pong-v5'"),
    (SETTINGS.model_copy(update={"env": "NoSuchGame"}), None, 32, ValueError, "ale-py provides"),
    (SETTINGS, {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 5}, 32, ModelConfigError,
     "top_k <= num_units, got top_k=5 > num_units=4"),
    (SETTINGS, {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2, "comm": {"head": 2}}, 32,
     ModelConfigError, r"unknown key\(s\) \['head'\] in comm"),
    (SETTINGS, {"kind": "gru", "hidden_size": 32}, 32, ValueError, "model.kind: Expected 'rims' or 'lstm' for PPO"),
    (SETTINGS, {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2, "num_layers": 2}, 32, ValueError,
     "model.num_layers: Expected 1"),
    (SETTINGS, None, 128, ValueError, "optim.batch_size: Expected a PPO minibatch <= num_envs x rollout_length = 64"),
    (SETTINGS.model_copy(update={"api_stack": "old"}), {"kind": "lstm", "hidden_size": 32}, 32, ValueError,
     "the LSTM baseline runs on the new stack"),
])
def test_refused_before_anything_starts(settings, model, minibatch, error, match):
    assert not ray.is_initialized()
    with pytest.raises(error, match=match):
        build(settings, model, minibatch)
    assert not ray.is_initialized(), "nothing was started"


def test_unknown_ppo_setting_is_refused_by_name():
    with pytest.raises(ValueError, match=r"clip\n  Extra inputs are not permitted"):
        PPOSettings(clip=0.2)

"""Learning checks: PPO with the RIM policy (and RLlib's LSTM as the reference) learns a task that needs memory.

RepeatPrevious (rllib_models.envs): observe a random bit, be paid +1 for emitting the bit seen one step earlier,
-1 otherwise; 16 steps, 15 paid. The bit to emit is independent of everything a memoryless policy sees, so any
memoryless policy has expected return 0 (each paid step is +-1 with probability 1/2: the mean over 20 episodes
has standard deviation sqrt(15 / 20) = 0.87). The threshold, a mean training return of 10 over the last 20
episodes (out of 15), is 11 standard deviations above what a policy without memory can get by luck.
Measured on 2 CPU cores (seed 0, advantages standardised over real steps by rllib_models/connectors.py): the RIM
policy passed 10 after 32 iterations (16.4k env steps), the LSTM after 25 (12.8k).
"""

from __future__ import annotations

import pytest

from rllib_models.ppo import PPOSettings

from .ppo_learning import local_ray, returns_until  # noqa: F401 (local_ray: a fixture, used by name)

pytestmark = [pytest.mark.learning, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.usefixtures("local_ray")]

THRESHOLD = 10.0
MAX_ITERATIONS = 70  # 70 x 512 = 35,840 env steps: more than twice what either needed when measured (RIM: 32)
SETTINGS = PPOSettings(env="RepeatPrevious", num_envs=8, rollout_length=64, num_epochs=4, eval_episodes=0,
                       max_seq_len=16, entropy_coeff=0.003, gamma=0.9, anneal_lr=False,
                       env_config={"episode_len": 16, "delay": 1})


@pytest.mark.parametrize("model", [
    {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2, "input_attention": {"dropout": 0.0},
     "comm": {"dropout": 0.0}},
    {"kind": "lstm", "hidden_size": 32},
], ids=["rims", "lstm"])
def test_ppo_learns_to_remember(model):
    curve = returns_until(SETTINGS, model, THRESHOLD, MAX_ITERATIONS, lr=1e-3, minibatch_size=128, grad_clip=0.5)
    print(f"\nLEARNING {model['kind']}: return by iteration (512 env steps each) {[round(r, 1) for r in curve]}")
    assert curve[0] < 5, "starts near the memoryless 0"
    assert curve[-1] >= THRESHOLD, f"did not reach {THRESHOLD} in {MAX_ITERATIONS} iterations: {curve[-5:]}"

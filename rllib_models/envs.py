"""Environments: ALE Atari games with the standard preprocessing, and a small memory task.

Atari (``make_atari``): ale-py's ROMs, frameskip=1 and no sticky actions at the ALE level, then the DeepMind /
CleanRL preprocessing from RLlib's wrappers: no-op reset (up to 30), max-pooled frame skip 4, 84x84 grayscale in
[-1, 1] (a (84, 84, 1) float32 frame; the recurrent core carries the memory that frame stacking would), fire reset
where the game has FIRE, and, for training only, episodic life and rewards clipped to [-1, 1]. Evaluation envs
keep whole games and raw scores.

``RepeatPrevious``: observe a random token, be rewarded for emitting the token seen ``delay`` steps earlier. A
policy without memory sees only the current token, which is independent of the one it must emit, so its
expected return is exactly 0 whatever it does; a policy with memory can get ``episode_len - delay``.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ATARI_ENV", "MEMORY_ENV", "RepeatPrevious", "check_env_id", "make_atari", "register_envs"]

ATARI_ENV = "rims_atari"  # the name RLlib's env runners create Atari envs by (env_config["env"] = the game)
MEMORY_ENV = "rims_repeat_previous"


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def check_env_id(env_id: str) -> None:
    """Raise ValueError naming the id and close valid ones unless env_id is an ALE game gymnasium knows."""
    _register_ale()
    ale = sorted(k for k in gym.registry if k.startswith("ALE/"))
    if env_id in ale:
        return
    close = difflib.get_close_matches(env_id, ale, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        f"; ale-py provides {len(ale)} games, e.g. 'ALE/Pong-v5', 'ALE/Breakout-v5'"
    raise ValueError(f"env: Expected an ALE game id like 'ALE/Pong-v5', got {env_id!r}{hint}")


def make_atari(env_config: dict[str, Any]) -> gym.Env:
    """An Atari env for RLlib's env runners.

    env_config: env (ALE id, default 'ALE/Pong-v5'), train (bool, default True: episodic life and reward
    clipping), dim (84).
    """
    from ray.rllib.env.wrappers.atari_wrappers import (
        EpisodicLifeEnv,
        FireResetEnv,
        MaxAndSkipEnv,
        NoopResetEnv,
        NormalizedImageEnv,
        WarpFrame,
    )

    _register_ale()  # env runners are separate processes: register there too
    cfg = dict(env_config)
    train = bool(cfg.get("train", True))
    env = gym.make(cfg.get("env", "ALE/Pong-v5"), frameskip=1, repeat_action_probability=0.0,
                   full_action_space=False)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=108_000)  # 30 min of play, in raw frames
    env = WarpFrame(env, dim=int(cfg.get("dim", 84)), grayscale=True)
    env = NormalizedImageEnv(env)
    env = MaxAndSkipEnv(env, skip=4)
    env = NoopResetEnv(env, noop_max=30)
    if train:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    if train:
        env = gym.wrappers.TransformReward(env, lambda r: float(np.clip(r, -1.0, 1.0)))
    return env


class RepeatPrevious(gym.Env):
    """Emit the token observed ``delay`` steps ago: +1 if right, -1 if wrong (0 during the first delay steps).

    Observation: one-hot of the current token, (num_tokens,) float32. Action: Discrete(num_tokens).
    env_config: num_tokens (2), delay (1), episode_len (32).
    """

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        cfg = dict(env_config or {})
        self.num_tokens = int(cfg.get("num_tokens", 2))
        self.delay = int(cfg.get("delay", 1))
        self.episode_len = int(cfg.get("episode_len", 32))
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.num_tokens,), np.float32)
        self.action_space = gym.spaces.Discrete(self.num_tokens)
        self._tokens: list[int] = []

    def _obs(self) -> np.ndarray:
        token = int(self.np_random.integers(self.num_tokens))
        self._tokens.append(token)
        return np.eye(self.num_tokens, dtype=np.float32)[token]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._tokens = []
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        t = len(self._tokens)  # steps taken so far + 1
        reward = 0.0
        if t > self.delay:
            reward = 1.0 if int(action) == self._tokens[t - 1 - self.delay] else -1.0
        obs = self._obs()
        return obs, reward, t >= self.episode_len, False, {}


def register_envs() -> None:
    """Register ATARI_ENV and MEMORY_ENV with Ray Tune's registry (by name, so env runners find them)."""
    from ray.tune.registry import register_env

    register_env(ATARI_ENV, make_atari)
    register_env(MEMORY_ENV, lambda cfg: RepeatPrevious(cfg))

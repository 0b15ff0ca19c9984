"""Environments: ALE Atari games with the standard preprocessing, and a small memory task.

Atari (``make_atari``): ale-py's ROMs, frameskip=1 and no sticky actions at the ALE level, then the DeepMind /
CleanRL preprocessing from RLlib's wrappers: no-op reset (up to 30), max-pooled frame skip 4, 84x84 grayscale in
[-1, 1] (a (84, 84, 1) float32 frame; the recurrent core carries the memory that frame stacking would), fire reset
where the game has FIRE, and, for training only, episodic life and rewards clipped to [-1, 1]. Evaluation envs
keep whole games and raw scores.

``RepeatPrevious``: observe a random token, be rewarded for emitting the token seen ``delay`` steps earlier. A
policy without memory sees only the current token, which is independent of the one it must emit, so its
expected return is exactly 0 whatever it does; a policy with memory can get ``episode_len - delay``.

StatelessCartPole (``make_stateless_cartpole``): RLlib's CartPole without the two velocities (observation: cart
position and pole angle, (2,) float32), so a policy must infer them from past observations. RLlib's class has no
step limit; here it gets CartPole-v1's (500 steps, ``env_config["max_episode_steps"]``), so returns lie in [1, 500].
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["ATARI_ENV", "CARTPOLE_ENV", "CARTPOLE_ENV_CONFIG", "MEMORY_ENV", "RepeatPrevious", "cartpole_config",
           "check_env_id", "make_atari", "make_stateless_cartpole", "register_envs"]

ATARI_ENV = "rims_atari"  # the name RLlib's env runners create Atari envs by (env_config["env"] = the game)
MEMORY_ENV = "rims_repeat_previous"
CARTPOLE_ENV = "rims_stateless_cartpole"
CARTPOLE_ENV_CONFIG = {"max_episode_steps": 500}  # the env_config keys make_stateless_cartpole reads, with defaults


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def check_env_id(env_id: str, others: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the id and close valid ones unless env_id is an ALE game gymnasium knows or one of
    ``others`` (the non-ALE env ids the caller accepts, named in the error)."""
    if env_id in others:
        return
    _register_ale()
    ale = sorted(k for k in gym.registry if k.startswith("ALE/"))
    if env_id in ale:
        return
    close = difflib.get_close_matches(env_id, [*others, *ale], n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        f"; ale-py provides {len(ale)} games, e.g. 'ALE/Pong-v5', 'ALE/Breakout-v5'"
    also = f" (or a non-ALE env: {', '.join(repr(o) for o in others)})" if others else ""
    raise ValueError(f"env: Expected an ALE game id like 'ALE/Pong-v5', got {env_id!r}{hint}{also}")


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


def cartpole_config(env_config: dict[str, Any] | None) -> dict[str, Any]:
    """StatelessCartPole's env_config with defaults filled in; ValueError names a key or value it cannot take."""
    cfg = {**CARTPOLE_ENV_CONFIG, **(env_config or {})}
    cfg.pop("num_envs", None)  # RLlib's vector entry point adds it
    unknown = sorted(set(cfg) - set(CARTPOLE_ENV_CONFIG))
    if unknown:
        raise ValueError(f"env_config: Expected keys among {sorted(CARTPOLE_ENV_CONFIG)} for StatelessCartPole, "
                         f"got {unknown}")
    steps = cfg["max_episode_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"env_config: Expected max_episode_steps to be a positive int, got {steps!r}")
    return cfg


def make_stateless_cartpole(env_config: dict[str, Any] | None = None) -> gym.Env:
    """RLlib's StatelessCartPole in a TimeLimit of env_config["max_episode_steps"] (CartPole-v1's 500).

    Observation (2,) float32: cart position, pole angle; actions Discrete(2); reward 1 per step until the pole
    falls, the cart leaves the track or the limit ends the episode (truncated).
    """
    from ray.rllib.examples.envs.classes.stateless_cartpole import StatelessCartPole

    cfg = cartpole_config(env_config)
    return gym.wrappers.TimeLimit(StatelessCartPole(), max_episode_steps=cfg["max_episode_steps"])


def _make_fetch(env_config: dict[str, Any]) -> gym.Env:
    from .fetch_env import FetchDistractors  # MiniGrid is imported where a Fetch env is built, not before

    return FetchDistractors(env_config)


def register_envs() -> None:
    """Register ATARI_ENV, MEMORY_ENV, CARTPOLE_ENV and FETCH_ENV with Ray Tune's registry (by name, so env
    runners find them)."""
    from ray.tune.registry import register_env

    from .fetch_rooms import FETCH_ENV

    register_env(ATARI_ENV, make_atari)
    register_env(MEMORY_ENV, lambda cfg: RepeatPrevious(cfg))
    register_env(CARTPOLE_ENV, make_stateless_cartpole)
    register_env(FETCH_ENV, _make_fetch)

"""Run a recurrent RLlib module (new API stack) on a batch of envs, one episode each, outside RLlib's runners.

Used for evaluation on fixed seeds (every trial of a sweep scored on the same episodes) and by the tests that
check the recurrent contract: the state each step starts from is exactly the state the previous step returned,
and each episode starts from ``module.get_initial_state()``. Works for any TorchRLModule whose forward takes
``Columns.OBS`` (B, T, ...) and ``Columns.STATE_IN`` and returns ``Columns.ACTION_DIST_INPUTS`` (logits of a
Discrete action) and ``Columns.STATE_OUT``: rllib_models.RIMRLModule and RLlib's default LSTM module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

__all__ = ["Episode", "initial_states", "map_state", "run_episodes"]


@dataclass(frozen=True)
class Episode:
    """One finished (or cut) episode: its seed, undiscounted return, length and whether it succeeded
    (``info["success"]`` on its last step; False where the env does not say)."""

    seed: int
    ret: float
    length: int
    success: bool


def map_state(fn: Callable[[Any], Any], state: Any) -> Any:
    """Apply fn to every array of a (nested dict) state."""
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    return fn(state)


def initial_states(module: Any, batch: int) -> Any:
    """The module's initial state for ``batch`` sequences: get_initial_state() (no batch dim) tiled, as tensors."""
    return map_state(lambda a: torch.as_tensor(np.asarray(a)).unsqueeze(0).repeat(batch, *([1] * np.ndim(a))),
                     module.get_initial_state())


@torch.no_grad()
def run_episodes(module: Any, make_env: Callable[[], Any], seeds: Sequence[int], *, explore: bool = True,
                 sample_seed: int = 0, max_steps: int = 100_000) -> list[Episode]:
    """One episode per seed, all envs stepped together (a batch of len(seeds)), each reset with its seed.

    explore=True samples actions from the policy's categorical (a torch generator seeded with sample_seed, so
    the result depends only on the weights and the seeds); explore=False takes the most likely action. An env
    that finishes stays finished (its later outputs are ignored); max_steps cuts every episode still running.
    """
    envs = [make_env() for _ in seeds]
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    state = initial_states(module, len(envs))
    running = np.ones(len(envs), bool)
    rets, lens, success = np.zeros(len(envs)), np.zeros(len(envs), int), np.zeros(len(envs), bool)
    gen = torch.Generator().manual_seed(sample_seed)
    for _ in range(max_steps):
        out = module.forward_inference({Columns.OBS: torch.as_tensor(obs).unsqueeze(1), Columns.STATE_IN: state})
        logits = out[Columns.ACTION_DIST_INPUTS][:, -1].float()
        if explore:
            actions = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1).numpy()
        else:
            actions = logits.argmax(-1).numpy()
        state = out[Columns.STATE_OUT]
        for i in np.flatnonzero(running):
            o, r, term, trunc, info = envs[i].step(int(actions[i]))
            obs[i] = o
            rets[i] += r
            lens[i] += 1
            if term or trunc:
                running[i] = False
                success[i] = bool(info.get("success", False))
        if not running.any():
            break
    return [Episode(int(s), float(r), int(n), bool(w)) for s, r, n, w in zip(seeds, rets, lens, success, strict=True)]

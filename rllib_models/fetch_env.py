"""Fetch among distractors (the seed's "environment with novel distractors"), on Farama's MiniGrid.

The agent stands in a walled room of ``size`` x ``size`` cells (the walls included) with one target object and
``num_distractors`` other objects; it is told which object to fetch (a colour and a kind) and sees only the
``view_size`` x ``view_size`` cells in front of it (MiniGrid's egocentric partial view). Picking up the target
ends the episode with MiniGrid's sparse reward ``1 - 0.9 * steps / max_steps``; picking up anything else, or
running out of steps, ends it with 0. This is MiniGrid's FetchEnv with the distractors made a setting of their
own: FetchEnv draws every object, the target among them, from one pool of kinds and colours, so a "novel
distractor" cannot be expressed with it. Here the target is always of a training kind and colour, the
distractors are drawn from ``distractor_kinds`` x ``distractor_colors`` (never the target's own colour-and-kind,
so exactly one object is right), and a test condition changes only the distractors.

Observation (a flat float32 vector, what the RIM and LSTM policies' MLP encoders take): the view as one-hot
object kind (11), colour (6) and state (3) per cell, ``view_size**2 * 20`` values, then the mission as one-hot
target colour (6) and target kind (len(TARGET_KINDS)). Actions: MiniGrid's left, right, forward, pickup (the
other three do nothing in this task and are left out).

The conditions (distractors<n>, novelcolors<n>, novelkinds<n>, novel<n>) are rllib_models.fetch_rooms'.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Key
from minigrid.minigrid_env import MiniGridEnv

from .fetch_rooms import COLORS, TARGET_COLORS, TARGET_KINDS, FetchConfig, condition_config

__all__ = ["ACTIONS", "FetchDistractors"]

ACTIONS = 4  # left, right, forward, pickup
_OBJECTS = {"key": Key, "ball": Ball, "box": Box}
_CELL = len(OBJECT_TO_IDX) + len(COLOR_TO_IDX) + len(STATE_TO_IDX)  # one-hot width of one viewed cell
assert tuple(COLOR_TO_IDX) == COLORS, "fetch_rooms.COLORS must follow MiniGrid's colour order"


class _Room(MiniGridEnv):
    """The MiniGrid room itself: walls, the target, the distractors, the agent; Fetch's pickup rule."""

    def __init__(self, cfg: FetchConfig) -> None:
        self.cfg = cfg
        self.target: tuple[str, str] = ("red", "key")
        mission = MissionSpace(mission_func=lambda color, kind: f"fetch a {color} {kind}",
                               ordered_placeholders=[list(TARGET_COLORS), list(TARGET_KINDS)])
        super().__init__(mission_space=mission, width=cfg.size, height=cfg.size,
                         max_steps=cfg.max_steps or 5 * cfg.size ** 2, see_through_walls=True,
                         agent_view_size=cfg.view_size)

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        color, kind = self._rand_elem(TARGET_COLORS), self._rand_elem(TARGET_KINDS)
        self.target = (color, kind)
        self.place_obj(_OBJECTS[kind](color))
        pool = [(c, k) for c in self.cfg.distractor_colors for k in self.cfg.distractor_kinds
                if (c, k) != self.target and (self.cfg.share_color or c != color)]
        for _ in range(self.cfg.num_distractors):
            c, k = pool[self._rand_int(0, len(pool))]  # never empty: FetchConfig checks it
            self.place_obj(_OBJECTS[k](c))
        self.place_agent()
        self.mission = f"fetch a {color} {kind}"

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = super().step(action)
        if self.carrying is not None:  # any pickup ends the episode; only the target pays
            terminated = True
            right = (self.carrying.color, self.carrying.type) == self.target
            reward = self._reward() if right else 0.0
            info["success"] = right
        return obs, reward, terminated, truncated, info


class FetchDistractors(gym.Env):
    """Fetch among distractors as a gymnasium env with a flat observation (see the module docstring).

    env_config: the fields of FetchConfig (size, view_size, num_distractors, distractor_kinds,
    distractor_colors, max_steps, share_color), and optionally ``condition`` (a fetch_rooms condition name such as
    'novelcolors2', applied to the room the other fields describe).
    ``info["success"]`` is set on the step that ends an episode by a pickup.
    """

    metadata = {"render_modes": []}

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        cfg = dict(env_config or {})
        condition = cfg.pop("condition", None)
        for key in ("distractor_kinds", "distractor_colors"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        base = FetchConfig(**cfg)
        self.config = condition_config(condition, base) if condition else base
        self.room = _Room(self.config)
        v = self.config.view_size
        self.observation_space = gym.spaces.Box(0.0, 1.0, (v * v * _CELL + len(TARGET_COLORS) + len(TARGET_KINDS),),
                                                np.float32)
        self.action_space = gym.spaces.Discrete(ACTIONS)
        self._offsets = np.array([0, len(OBJECT_TO_IDX), len(OBJECT_TO_IDX) + len(COLOR_TO_IDX)])

    def _encode(self, obs: dict[str, Any]) -> np.ndarray:
        image = np.asarray(obs["image"], dtype=np.int64).reshape(-1, 3)  # (v*v, [kind, colour, state])
        view = np.zeros((image.shape[0], _CELL), np.float32)
        np.put_along_axis(view, image + self._offsets, 1.0, axis=1)
        mission = np.zeros(len(TARGET_COLORS) + len(TARGET_KINDS), np.float32)
        color, kind = self.room.target
        mission[TARGET_COLORS.index(color)] = 1.0
        mission[len(TARGET_COLORS) + TARGET_KINDS.index(kind)] = 1.0
        return np.concatenate([view.reshape(-1), mission])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self.room.reset(seed=seed)
        return self._encode(obs), info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.room.step(int(action))
        return self._encode(obs), float(reward), terminated, truncated, info

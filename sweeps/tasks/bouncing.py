"""Bouncing balls, next-frame prediction, as in the RIMs paper (Goyal et al., ICLR 2021).

n balls of radius RADIUS move in the unit box with elastic collisions (equal masses: a colliding pair
exchanges the velocity components along the line of centres; a wall mirrors the ball), integrated with
SUBSTEPS steps per frame, and are rendered to binary frames (a pixel is 1 where its centre lies inside a
ball). Training is next-frame prediction with teacher forcing at train_balls; evaluation also runs the
model in closed loop after burn_in true frames, at test_balls (more balls than seen in training) and, with
curtain, at 3 balls behind an occluding curtain: the middle third of the columns is 0 in every frame, so
the curtain is part of both the inputs and the targets (balls vanish behind it and are not scored there).

Training videos come from a pool of train_size videos generated once from TRAIN_SEED (fixed, like the
evaluation data); the trial's generator draws which videos form a batch. The pool is kept bit-packed.

Shape legend: N videos, B batch, T = n_frames, n balls, S = frame_size (frames S x S, row y, column x),
P = S * S pixels, E = EMBED_SIZE encoder features, H hidden size, R = rollout.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EVAL_SEED, Task, make_core
from .declared import MAX_BALLS, TRAIN_SEED, BouncingDeclaration, BouncingSettings

__all__ = [
    "EMBED_SIZE",
    "MAX_BALLS",
    "RADIUS",
    "TRAIN_SEED",
    "BouncingModel",
    "BouncingSettings",
    "BouncingTask",
    "collide",
    "curtain_band",
    "make_videos",
    "render",
    "rollout_logits",
    "simulate",
]

RADIUS = 0.1  # ball radius in box units: 3.2 pixels at S = 32
SPEED = (0.02, 0.05)  # range of initial speeds, box units per frame (0.6 to 1.6 pixels at S = 32)
SUBSTEPS = 4  # integration steps per frame: a pair interpenetrates by at most 2 * 0.05 / 4 = 0.025
EMBED_SIZE = 64  # E
WIDTH = 256  # hidden width of the encoder and decoder MLPs
EVAL_BATCH = 256  # bounds the memory of an evaluation forward


def collide(pos: np.ndarray, vel: np.ndarray, radius: float = RADIUS) -> np.ndarray:
    """New velocities (..., n, 2) after elastic collisions between overlapping, approaching balls.

    Pairs are handled one after another (each exchange conserves momentum and kinetic energy exactly, which
    a simultaneous sum of impulses would not when a ball touches two others). Receding pairs are left alone
    so that a pair still overlapping after an exchange does not stick.
    """
    vel = vel.copy()
    n = pos.shape[-2]
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[..., i, :] - pos[..., j, :]
            dist2 = (d * d).sum(-1, keepdims=True)
            normal = d / np.sqrt(np.maximum(dist2, 1e-12))
            vn = ((vel[..., i, :] - vel[..., j, :]) * normal).sum(-1, keepdims=True)  # < 0: approaching
            dv = np.where((dist2 < (2 * radius) ** 2) & (vn < 0), vn * normal, 0.0)
            vel[..., i, :] -= dv
            vel[..., j, :] += dv
    return vel


def _place(rng: np.random.Generator, n_videos: int, n_balls: int, radius: float) -> np.ndarray:
    """Non-overlapping positions (N, n, 2) inside the box, by rejection one ball at a time."""
    pos = np.zeros((n_videos, n_balls, 2))
    for k in range(n_balls):
        todo = np.arange(n_videos)
        for _ in range(1000):
            pos[todo, k] = rng.uniform(radius, 1 - radius, (len(todo), 2))
            gap = np.linalg.norm(pos[todo, :k] - pos[todo, k:k + 1], axis=-1)  # (len(todo), k)
            todo = todo[(gap < 2 * radius).any(-1)]
            if len(todo) == 0:
                break
        else:
            raise ValueError(f"bouncing: could not place {n_balls} balls of radius {radius} without overlap")
    return pos


def simulate(n_videos: int, n_balls: int, n_frames: int, seed: int, radius: float = RADIUS,
             substeps: int = SUBSTEPS) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (N, T, n, 2) at every frame; velocities in box units per frame."""
    if not 1 <= n_balls <= MAX_BALLS:
        raise ValueError(f"bouncing: Expected 1 <= n_balls <= {MAX_BALLS}, got {n_balls}")
    rng = np.random.default_rng(seed)
    pos = _place(rng, n_videos, n_balls, radius)
    angle = rng.uniform(0, 2 * np.pi, (n_videos, n_balls))
    vel = rng.uniform(*SPEED, (n_videos, n_balls))[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    out_pos, out_vel = np.empty((2, n_videos, n_frames, n_balls, 2))
    for t in range(n_frames):
        out_pos[:, t], out_vel[:, t] = pos, vel
        for _ in range(substeps):
            pos = pos + vel / substeps
            low, high = pos < radius, pos > 1 - radius  # mirror at the walls: keeps |v| and stays inside
            pos = np.where(low, 2 * radius - pos, np.where(high, 2 * (1 - radius) - pos, pos))
            vel = np.where(low, np.abs(vel), np.where(high, -np.abs(vel), vel))
            vel = collide(pos, vel, radius)
    return out_pos, out_vel


def curtain_band(size: int) -> slice:
    """The occluded columns: the middle third."""
    return slice(size // 3, size - size // 3)


def render(pos: np.ndarray, size: int, radius: float = RADIUS, curtain: bool = False) -> np.ndarray:
    """Positions (N, T, n, 2) -> binary frames (N, T, S, S) uint8; with curtain, the band is 0."""
    centres = (np.arange(size) + 0.5) / size
    dx2 = ((centres - pos[..., 0:1]) ** 2).astype(np.float32)  # (N, T, n, S), separable distances
    dy2 = ((centres - pos[..., 1:2]) ** 2).astype(np.float32)
    frames = np.zeros((*pos.shape[:2], size, size), dtype=bool)
    for k in range(pos.shape[2]):  # one ball at a time bounds memory to N * T * P
        frames |= dy2[:, :, k, :, None] + dx2[:, :, k, None, :] < radius**2
    if curtain:
        frames[..., curtain_band(size)] = False
    return frames.astype(np.uint8)


def make_videos(n_videos: int, n_balls: int, n_frames: int, size: int, seed: int,
                curtain: bool = False) -> np.ndarray:
    """(N, T, S, S) uint8 binary videos, deterministic by seed."""
    return render(simulate(n_videos, n_balls, n_frames, seed)[0], size, curtain=curtain)


class BouncingModel(nn.Module):
    """Frames (B, T, S, S) -> MLP encoder (B, T, E) -> core (RIM, LSTM or GRU) -> MLP decoder -> logits."""

    def __init__(self, model: dict[str, Any], frame_size: int, base_rate: float = 0.1,
                 embed_size: int = EMBED_SIZE, width: int = WIDTH) -> None:
        super().__init__()
        P = frame_size * frame_size
        # An empty frame (all zeros) is encoded to LayerNorm(relu(b1) W2 + b2), a learnt vector, not the zero
        # vector the RIM's input attention offers as the null input: "no ball visible" stays an observation.
        # The LayerNorm keeps the features O(1) whatever the number of lit pixels (it also learnt faster).
        self.encoder = nn.Sequential(nn.Flatten(-2), nn.Linear(P, width), nn.ReLU(), nn.Linear(width, embed_size),
                                     nn.LayerNorm(embed_size))
        self.rnn = make_core(model, input_size=embed_size)
        self.decoder = nn.Sequential(nn.Linear(model["hidden_size"], width), nn.ReLU(), nn.Linear(width, P),
                                     nn.Unflatten(-1, (frame_size, frame_size)))
        # Start at the base rate (the expected fraction of lit pixels). From a zero bias the first steps push
        # every output down together and training sits on the mean-occupancy plateau for hundreds of steps.
        with torch.no_grad():
            self.decoder[2].bias.fill_(float(np.log(base_rate / (1 - base_rate))))

    def forward(self, frames: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """frames (B, T, S, S) in [0, 1] -> (logits (B, T, S, S) of the frames at t + 1, core state)."""
        out, state = self.rnn(self.encoder(frames), state)
        return self.decoder(out), state


def rollout_logits(model: nn.Module, frames: Tensor, burn_in: int, steps: int) -> Tensor:
    """Logits (B, R, S, S) of frames burn_in .. burn_in + R - 1, predicted in closed loop.

    The core runs over the first burn_in true frames, then each predicted frame is fed back as the next
    input, as probabilities (not binarised: a blurred ball thresholded at 0.5 could vanish for good).
    """
    logits, state = model(frames[:, :burn_in])
    out = [logits[:, -1:]]
    for _ in range(steps - 1):
        logits, state = model(torch.sigmoid(out[-1]), state)
        out.append(logits)
    return torch.cat(out, 1)


def _bce(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


class BouncingTask(BouncingDeclaration, Task):
    """Bouncing balls: train at task.train_balls; val at it, eval at it, every task.test_balls and curtain3."""

    @cached_property
    def eval_videos(self) -> dict[str, Tensor]:
        """Fixed evaluation sets (uint8, N, T, S, S) by condition: "val", "balls{n}", "curtain3".

        Built on first use and cached; seeds derive from EVAL_SEED and the condition, never the trial's seed.
        """
        s = self.settings

        def videos(n_balls: int, offset: int, curtain: bool = False) -> Tensor:
            v = make_videos(s.eval_size, n_balls, s.n_frames, s.frame_size, EVAL_SEED + offset, curtain)
            return torch.from_numpy(v)

        out = {"val": videos(s.train_balls, 0)}
        out.update({f"balls{n}": videos(n, n) for n in dict.fromkeys([s.train_balls, *s.test_balls])})
        if s.curtain:
            out["curtain3"] = videos(3, 1000 + 3, curtain=True)
        return out

    @cached_property
    def train_pool(self) -> np.ndarray:
        """The training pool, bit-packed along columns: (train_size, T, S, ceil(S / 8)) uint8."""
        s = self.settings
        return np.packbits(make_videos(s.train_size, s.train_balls, s.n_frames, s.frame_size, TRAIN_SEED), axis=-1)

    def build_model(self) -> nn.Module:
        base_rate = min(self.settings.train_balls * np.pi * RADIUS**2, 0.5)  # ignores overlaps: an upper bound
        return BouncingModel(self.model_settings, self.settings.frame_size, base_rate).to(self.device)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """(B, T, S, S) float frames in {0, 1} on self.device, videos drawn from the pool with generator."""
        idx = torch.randint(0, self.settings.train_size, (batch_size,), generator=generator,
                            device=generator.device).cpu().numpy()
        frames = np.unpackbits(self.train_pool[idx], axis=-1, count=self.settings.frame_size)
        return torch.from_numpy(frames).to(self.device, torch.float32)

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits, _ = model(batch[:, :-1])
        bce = _bce(logits, batch[:, 1:])
        return bce, {"bce": bce.item()}

    @torch.no_grad()
    def _score(self, model: nn.Module, videos: Tensor) -> dict[str, float]:
        s, sums = self.settings, {"bce": 0.0, "rollout_bce": 0.0}
        for i in range(0, len(videos), EVAL_BATCH):
            v = videos[i:i + EVAL_BATCH].to(self.device, torch.float32)
            sums["bce"] += _bce(model(v[:, :-1])[0], v[:, 1:]).item() * len(v)
            roll = rollout_logits(model, v, s.burn_in, s.rollout)
            sums["rollout_bce"] += _bce(roll, v[:, s.burn_in:s.burn_in + s.rollout]).item() * len(v)
        return {k: total / len(videos) for k, total in sums.items()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for cond, videos in self.eval_videos.items():
            prefix, suffix = ("val", "") if cond == "val" else ("eval", f"_{cond}")
            out.update({f"{prefix}/{k}{suffix}": v for k, v in self._score(model, videos).items()})
        return out

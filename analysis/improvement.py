"""Probability of improvement (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"; rliable's
definition): P(X > Y) for a run of X and a run of Y drawn at random, ties counting one half, averaged over tasks
(here: evaluation conditions), with a stratified percentile bootstrap interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["poi_ci", "probability_of_improvement"]


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0 or not np.isfinite(a).all():
        raise ValueError(f"{name}: Expected finite scores shaped (runs,) or (runs, tasks) with at least one run, "
                         f"got shape {np.shape(x)}")
    return a


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) per task for x (..., nx, T) and y (..., ny, T): the Mann-Whitney U of x over (nx * ny)."""
    diff = x[..., :, None, :] - y[..., None, :, :]  # (..., nx, ny, T)
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-3, -2))


def probability_of_improvement(x: Any, y: Any) -> float:
    """P(X > Y) averaged over tasks. x: (runs_x, tasks) or (runs_x,); y: (runs_y, tasks) or (runs_y,), the same
    tasks in the same order. 0.5: no tendency either way; 1: every run of X beats every run of Y."""
    a, b = _matrix(x, "x"), _matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"y: Expected the same number of tasks as x ({a.shape[1]}), got {b.shape[1]}")
    return float(_poi(a, b).mean())


def poi_ci(x: Any, y: Any, level: float = 0.95, n_boot: int = 2_000, seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), low, high): the probability of improvement and its stratified percentile bootstrap interval
    (runs of X and of Y resampled with replacement within each task, as rliable's StratifiedBootstrap).
    Deterministic by ``seed``."""
    if not 0 < level < 1:
        raise ValueError(f"level: Expected a probability in (0, 1), got {level}")
    a, b = _matrix(x, "x"), _matrix(y, "y")
    point = probability_of_improvement(a, b)
    rng = np.random.default_rng(seed)
    cols = np.arange(a.shape[1])
    xa = a[rng.integers(0, a.shape[0], (n_boot, a.shape[0], a.shape[1])), cols]  # (n_boot, nx, T)
    yb = b[rng.integers(0, b.shape[0], (n_boot, b.shape[0], b.shape[1])), cols]
    boots = _poi(xa, yb).mean(axis=-1)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)

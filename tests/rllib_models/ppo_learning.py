"""What the PPO learning checks share: a local Ray with one torch thread in this process, and the training
return by iteration until a threshold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
import torch

from rllib_models.ppo import PPOBase, build_ppo_config, ppo_metrics


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray for the module; sampling and learning run in this process, on one torch thread as a trial
    gets (2 threads per process on 2 busy cores made a PPO iteration 20-40x slower: docs/benchmarks.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def returns_until(settings: PPOBase, model: dict[str, Any], threshold: float, max_iterations: int,
                  **optim: Any) -> list[float]:
    """train/episode_return_mean after each PPO iteration (seed 0), until it reaches ``threshold`` or
    ``max_iterations`` have run. optim: lr, minibatch_size, grad_clip of build_ppo_config."""
    algo = build_ppo_config(settings, model, total_steps=10**6, seed=0, **optim).build_algo()
    curve: list[float] = []
    try:
        for _ in range(max_iterations):
            ret = ppo_metrics(algo.train(), None).get("train/episode_return_mean")
            if ret is not None:
                curve.append(ret)
            if ret is not None and ret >= threshold:
                break
    finally:
        algo.stop()
    return curve

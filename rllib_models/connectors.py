"""PPO's advantages standardised over the real steps only (a learner connector after RLlib's GAE step).

RLlib 2.60's GeneralAdvantageEstimation connector standardises ADVANTAGES over every position of a chunk it
computed an advantage for: the real steps plus the bootstrap step it appends to each episode chunk (reward 0,
chained into the next chunk), which the loss then masks out (LOSS_MASK). The statistics include a step that is
not trained on (measured on short random episodes: mean 0.013, std 0.974 over the real steps instead of 0 and 1;
tests/rllib_models/test_recurrent_correctness.py). RealStepPPOTorchLearner appends RealStepAdvantages, which
re-standardises over LOSS_MASK, after RLlib's own step; build_ppo_config uses it on the new stack.
"""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

__all__ = ["RealStepAdvantages", "RealStepPPOTorchLearner"]


class RealStepAdvantages(ConnectorV2):
    """Re-standardise ADVANTAGES (B, T) over LOSS_MASK: RLlib 2.60's GeneralAdvantageEstimation takes the mean
    and std over the real steps plus each chunk's appended bootstrap step, which the loss then masks out."""

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any) -> Any:
        for module_batch in batch.values():
            if Postprocessing.ADVANTAGES not in module_batch or Columns.LOSS_MASK not in module_batch:
                continue
            adv, mask = module_batch[Postprocessing.ADVANTAGES], module_batch[Columns.LOSS_MASK].bool()
            real = adv[mask]
            scaled = (adv - real.mean()) / real.std(correction=0).clamp_min(1e-4)  # GAE's floor, numpy's std
            module_batch[Postprocessing.ADVANTAGES] = torch.where(mask, scaled, torch.zeros_like(adv))
        return batch


class RealStepPPOTorchLearner(PPOTorchLearner):
    """PPO's torch learner with RealStepAdvantages after RLlib's GAE piece (PPOLearner.build appends GAE)."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None:
            self._learner_connector.append(RealStepAdvantages())

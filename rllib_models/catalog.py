"""RIMs for configs on RLlib's old API stack: a ModelV2 registered in ModelCatalog under the name ``rims``.

    from rllib_models import register_rims_model
    register_rims_model()
    config = (PPOConfig().api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
              .training(model={"custom_model": "rims", "max_seq_len": 32,
                               "custom_model_config": {"num_units": 6, "top_k": 4, "hidden_size": 600}}))

A thin adapter over the same RIMPolicyCore as RIMRLModule; ``custom_model_config`` takes the same keys and is
validated the same way. RLlib logs deprecation warnings for the old stack; they are expected.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.models import ModelCatalog
from ray.rllib.models.torch.recurrent_net import RecurrentNetwork
from torch import Tensor, nn

from .config import parse_model_config
from .torch_core import RIMPolicyCore

__all__ = ["MODEL_NAME", "RIMModelV2", "register_rims_model"]

MODEL_NAME = "rims"


class RIMModelV2(RecurrentNetwork, nn.Module):
    """Old-stack recurrent ModelV2: state [h, c] (LSTM cells) or [h] (GRU cells), each (B, hidden_size)."""

    def __init__(self, obs_space: Any, action_space: Any, num_outputs: int, model_config: dict[str, Any],
                 name: str) -> None:
        nn.Module.__init__(self)
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        custom = dict(model_config.get("custom_model_config") or {})
        custom.setdefault("max_seq_len", model_config.get("max_seq_len", 32))
        self.rims_config = parse_model_config(custom)
        space = getattr(obs_space, "original_space", obs_space)
        self.core = RIMPolicyCore(tuple(space.shape), num_outputs, self.rims_config)
        self._value: Tensor | None = None

    def get_initial_state(self) -> list[Tensor]:
        return [v[0] for v in self.core.initial_state().values()]  # each (hidden_size,), no batch dim

    def forward_rnn(self, inputs: Tensor, state: list[Tensor], seq_lens: Tensor) -> tuple[Tensor, list[Tensor]]:
        """inputs (B, T, prod(obs_shape)) flattened observations; state [(B, hidden_size)...]."""
        B, T = inputs.shape[:2]
        obs = inputs.reshape(B, T, *self.core.obs_shape)
        st = {k: s.unsqueeze(1) for k, s in zip(self.core.state_keys, state, strict=True)}  # (B, 1, Hd)
        emb, logits, new = self.core(obs, st, collect=not self.training)
        self._value = self.core.value(emb).reshape(-1)
        return logits, [new[k][:, 0] for k in self.core.state_keys]

    def value_function(self) -> Tensor:
        assert self._value is not None, "value_function() before forward()"
        return self._value

    def selection_stats(self, reset: bool = True) -> dict[str, float]:
        return self.core.selection_stats(reset)


def register_rims_model(name: str = MODEL_NAME) -> str:
    """Register RIMModelV2 with ModelCatalog (idempotent); returns the name for ``custom_model``."""
    ModelCatalog.register_custom_model(name, RIMModelV2)
    return name


register_rims_model()  # importing the adapter makes the name usable

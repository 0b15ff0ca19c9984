"""RIMs as a new-API-stack RLlib module: ``RIMRLModule`` (TorchRLModule + ValueFunctionAPI) and its spec factory.

    from ray.rllib.algorithms.ppo import PPOConfig
    from rllib_models import rims_module_spec
    config = PPOConfig().environment("CartPole-v1").rl_module(
        rl_module_spec=rims_module_spec({"num_units": 6, "top_k": 4, "hidden_size": 120}))

RLlib's recurrent contract: ``get_initial_state()`` gives the state of one sequence without batch dim; a forward
gets ``Columns.OBS`` (B, T, ...) and ``Columns.STATE_IN`` (the state at each sequence's first step) and returns
``Columns.STATE_OUT``. The env runners start every new episode from the initial state and the learner cuts
episodes into ``max_seq_len`` chunks that never cross an episode boundary, so the state is reset at episode
starts without the module seeing ``is_first`` flags. In a learner batch the last chunk of an episode is zero-padded
and ``Columns.SEQ_LENS`` gives each chunk's real length: the STATE_OUT returned is then the state after the last
real step (tests/rllib_models/test_recurrent_correctness.py, docs/rl_correctness.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule

from .config import parse_model_config
from .torch_core import RIMPolicyCore

__all__ = ["RIMRLModule", "rims_module_spec"]


class RIMRLModule(TorchRLModule, ValueFunctionAPI):
    """Encoder (CNN for image observations, MLP for vectors) -> rims_core.RIM -> policy and value heads.

    model_config: the keys of rllib_models.RIMModelConfig.to_model_config() (the RIM's: num_units, top_k,
    hidden_size, cell, selection, input_attention, comm; the policy's: max_seq_len, conv_filters,
    encoder_hiddens); unknown keys raise ModelConfigError.
    Discrete action spaces only (logits of size action_space.n).
    """

    def setup(self) -> None:
        self.rims_config = parse_model_config(self.model_config)
        if not hasattr(self.action_space, "n"):
            raise ValueError(f"RIMRLModule: Expected a Discrete action space, got {self.action_space}")
        self.core = RIMPolicyCore(tuple(self.observation_space.shape), int(self.action_space.n), self.rims_config)

    def get_initial_state(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.core.initial_state().items()}  # each (S, Hd), no batch dim

    def _run(self, batch: dict[str, Any], collect: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        # SEQ_LENS is in learner batches (zero-padded max_seq_len chunks): the state out is then the state after
        # each chunk's last real step (RLlib's own LSTM returns the state after the padding)
        emb, logits, state = self.core(batch[Columns.OBS], batch[Columns.STATE_IN], collect=collect,
                                       seq_lens=batch.get(Columns.SEQ_LENS))
        return emb, {Columns.ACTION_DIST_INPUTS: logits, Columns.STATE_OUT: state}

    # acting (inference and exploration) never backpropagates, but RLlib 2.60's env runner calls these with grad
    # enabled: without grad here, no autograd graph is built per env step, and CUDA graphs can serve the step
    @torch.no_grad()
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._run(batch, collect=False)[1]

    @torch.no_grad()
    def _forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # sampling steps (T = 1): the unit selections the env runner sees feed rims/active_frac/<k>
        return self._run(batch, collect=True)[1]

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        emb, out = self._run(batch, collect=False)
        out[Columns.EMBEDDINGS] = emb
        return out

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Values (B, T); from the embeddings of _forward_train when given (the trunk is shared)."""
        if embeddings is None:
            embeddings, _ = self._run(batch, collect=False)
        return self.core.value(embeddings)

    def selection_stats(self, reset: bool = True) -> dict[str, float]:
        """``rims/active_frac/<k>`` over the exploration steps since the last call."""
        return self.core.selection_stats(reset)


def rims_module_spec(model_config: dict[str, Any] | None = None) -> RLModuleSpec:
    """An RLModuleSpec for RIMRLModule; the model_config is validated here, in the driver, so a typo or a
    top_k > num_units fails before any env runner or learner starts. max_seq_len (RLlib requires it of stateful
    modules) is filled in from the default when missing."""
    cfg = parse_model_config(model_config)
    return RLModuleSpec(module_class=RIMRLModule, model_config={**dict(model_config or {}),
                                                                "max_seq_len": cfg.max_seq_len})

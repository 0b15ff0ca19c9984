"""rllib_models: RIMs as RLlib policies (new API stack RLModule, old-stack ModelV2 ``rims``), PPO on Atari.

    from rllib_models import rims_module_spec          # new stack: config.rl_module(rl_module_spec=...)
    from rllib_models import register_rims_model       # old stack: register_rims_model(), then
                                                       #   model={"custom_model": "rims", ...}

Names load on first use (PEP 562), so ``import rllib_models`` and the settings in ``rllib_models.ppo`` do not pull
in RLlib: the sweep runner imports them on machines and in processes that never start Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MODEL_NAME": "catalog", "RIMModelV2": "catalog", "register_rims_model": "catalog",
    "DEFAULT_ATARI_FILTERS": "config", "DEFAULT_HIDDEN_SIZE": "config", "RIM_KEYS": "config",
    "RLLIB_MERGED_KEYS": "config", "ModelConfigError": "config",
    "RIMModelConfig": "config", "parse_model_config": "config",
    "RepeatPrevious": "envs", "check_env_id": "envs", "make_atari": "envs", "register_envs": "envs",
    "RIMRLModule": "module", "rims_module_spec": "module",
    "PPOBase": "ppo", "PPOSettings": "ppo", "build_ppo_config": "ppo", "model_spec": "ppo", "ppo_metrics": "ppo",
    "train_ppo": "ppo",
    "RIMPolicyCore": "torch_core",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rllib_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

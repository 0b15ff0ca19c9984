"""rims_core: Recurrent Independent Mechanisms (Goyal et al., ICLR 2021) in pure PyTorch.

``RIM`` drops in for ``nn.LSTM`` / ``nn.GRU`` and ``RIMCell`` for ``nn.LSTMCell`` / ``nn.GRUCell``; the
baselines ``TransformerCore`` (causal) and ``RelationalMemory`` (Santoro et al. 2018) share that contract.
This package imports nothing from ray, mlflow or optuna. Its names load on first use, so the configuration
(``rims_core.config``: RIMConfig, the model kinds, the RIM-only keys) can be validated without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CELLS",
    "COMM_OUTPUTS",
    "KIND_SETTINGS",
    "MODEL_KINDS",
    "RIM",
    "RIM_ONLY_KEYS",
    "SELECTIONS",
    "AutocastSafeLSTM",
    "CommConfig",
    "GraphedRIM",
    "InputAttentionConfig",
    "NonFiniteLossError",
    "RIMCell",
    "RIMConfig",
    "RIMConfigError",
    "RIMTrace",
    "RelationalMemory",
    "TransformerCore",
    "TransformerState",
    "build_recurrent",
    "count_parameters",
    "cpu_autocast_lstm_supported",
    "cuda_graphed",
    "enable_triton",
    "install_graphs",
    "macs_per_step",
    "saved_bytes",
    "set_recompute",
]

_WHERE = {
    **dict.fromkeys(("CELLS", "COMM_OUTPUTS", "MODEL_KINDS", "RIM_ONLY_KEYS", "SELECTIONS", "CommConfig",
                     "InputAttentionConfig", "RIMConfig"), "config"),
    **dict.fromkeys(("NonFiniteLossError", "RIMConfigError"), "errors"),
    "RIMCell": "cell",
    **dict.fromkeys(("KIND_SETTINGS", "AutocastSafeLSTM", "build_recurrent", "count_parameters",
                     "cpu_autocast_lstm_supported", "macs_per_step"), "factory"),
    **dict.fromkeys(("GraphedRIM", "cuda_graphed", "install_graphs"), "graphs"),
    "enable_triton": "triton_check",
    **dict.fromkeys(("RIM", "RIMTrace"), "rim"),
    "RelationalMemory": "rmc",
    **dict.fromkeys(("saved_bytes", "set_recompute"), "memory"),
    **dict.fromkeys(("TransformerCore", "TransformerState"), "transformer"),
}


def __getattr__(name: str) -> Any:
    # PEP 562: import the submodule that defines a name the first time it is asked for
    if name not in _WHERE:
        raise AttributeError(f"module 'rims_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""rims_core: Recurrent Independent Mechanisms (Goyal et al., ICLR 2021) in pure PyTorch.

``RIM`` drops in for ``nn.LSTM`` / ``nn.GRU`` and ``RIMCell`` for ``nn.LSTMCell`` / ``nn.GRUCell``.
This package imports nothing from ray, mlflow or optuna.
"""

from .cell import RIMCell
from .config import CELLS, COMM_OUTPUTS, SELECTIONS, CommConfig, InputAttentionConfig, RIMConfig, RIMConfigError
from .factory import MODEL_KINDS, build_recurrent, count_parameters, macs_per_step
from .graphs import cuda_graphed
from .rim import RIM, RIMTrace

__all__ = [
    "CELLS",
    "COMM_OUTPUTS",
    "MODEL_KINDS",
    "RIM",
    "SELECTIONS",
    "CommConfig",
    "InputAttentionConfig",
    "RIMCell",
    "RIMConfig",
    "RIMConfigError",
    "RIMTrace",
    "build_recurrent",
    "count_parameters",
    "cuda_graphed",
    "macs_per_step",
]

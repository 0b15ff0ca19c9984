"""One factory for every recurrent core a sweep compares (``model.kind``), plus size accounting.

``build_recurrent("rims" | "lstm" | "gru", ...)`` returns a module with the nn.LSTM / nn.GRU
contract, so a task's model code never branches on the kind.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import MODEL_KINDS, RIM_ONLY_KEYS
from .rim import RIM

__all__ = ["build_recurrent", "count_parameters", "macs_per_step"]


def build_recurrent(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    **rim_kwargs: Any,
) -> nn.Module:
    """A recurrent core by ``model.kind``: ``rims`` -> RIM, ``lstm`` -> nn.LSTM, ``gru`` -> nn.GRU.

    rim_kwargs (num_units, top_k, cell, selection, input_attention, comm) apply to ``rims`` only; giving
    them for a baseline is an error rather than silently ignored.
    """
    common = {"num_layers": num_layers, "batch_first": batch_first, "dropout": dropout,
              "bidirectional": bidirectional}
    if kind == "rims":
        unknown = sorted(set(rim_kwargs) - set(RIM_ONLY_KEYS))
        if unknown:
            raise ValueError(f"build_recurrent: unknown RIM setting(s) {unknown}; expected a subset of "
                             f"{list(RIM_ONLY_KEYS)}")
        return RIM(input_size, hidden_size, **common, **rim_kwargs)
    if kind in ("lstm", "gru"):
        if rim_kwargs:
            raise ValueError(
                f"build_recurrent: {sorted(rim_kwargs)} apply only to kind='rims', got kind={kind!r}; "
                "drop them for the baseline"
            )
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        return cls(input_size, hidden_size, **common)
    raise ValueError(f"build_recurrent: Expected kind to be one of {MODEL_KINDS}, got {kind!r}")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def macs_per_step(module: nn.Module, rows: int | None = None) -> int:
    """Multiply-adds per time step and sample of a recurrent core, as computed (not as idealised).

    RIM counts every unit: the inactive units' candidate updates are computed and discarded, since a
    gather of per-sample weights would cost more than it saves. Its input side is counted the way the cell
    runs it for a forward over ``rows`` = T*B input rows (None: a long sequence), as RIMCell.folds_value
    decides; folding's one-time cost is not counted. Pointwise work is not counted.
    """
    if isinstance(module, RIM):
        total = 0
        for cell in module.cells:
            cfg = cell.config
            K, H, D = cfg.num_units, cfg.unit_size, cell.input_size
            G = cell.weight_hh.shape[-1]
            nh, dk, dv = cfg.input_attention.heads, cfg.input_attention.key_size, cfg.input_value_size
            total += D * nh * dk  # shared input keys
            total += D * K * nh * G if cell.folds_value(rows) else D * dv + K * dv * G  # input gates
            total += K * nh * dk + K * nh * G  # attention scores, gate scaling
            total += K * H * (G + nh * dk)  # recurrent gates and queries
            if cfg.comm.enabled:
                c = cfg.comm
                total += K * H * c.heads * (2 * c.key_size + c.value_size)  # q, k, v
                total += c.heads * K * K * (c.key_size + c.value_size)  # scores, read
                total += K * c.heads * c.value_size * H * (1 if cfg.comm_output == "residual" else 2)  # W^o (and W^g)
        return total
    if isinstance(module, nn.LSTM | nn.GRU):
        gates = 4 if isinstance(module, nn.LSTM) else 3
        dirs = 2 if module.bidirectional else 1
        H, total = module.hidden_size, 0
        for layer in range(module.num_layers):
            d_in = module.input_size if layer == 0 else H * dirs
            total += dirs * gates * H * (d_in + H)
        return total
    raise TypeError(f"macs_per_step: Expected a RIM, nn.LSTM or nn.GRU, got {type(module).__name__}")

"""One factory for every recurrent core a sweep compares (``model.kind``), plus size accounting.

``build_recurrent("rims" | "lstm" | "gru" | "transformer" | "rmc", ...)`` returns a module with the nn.LSTM /
nn.GRU contract, ``forward(x, state=None) -> (out (.., hidden_size), state)``, so a task's model code never
branches on the kind.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .config import MODEL_KINDS, RIM_ONLY_KEYS
from .rim import RIM
from .rmc import RelationalMemory
from .transformer import TransformerCore

__all__ = ["KIND_SETTINGS", "AutocastSafeLSTM", "build_recurrent", "count_parameters", "cpu_autocast_lstm_supported",
           "macs_per_step"]

# The keyword settings each kind accepts besides the common ones (each module's docstring gives their defaults)
KIND_SETTINGS: dict[str, tuple[str, ...]] = {
    "rims": RIM_ONLY_KEYS,
    "lstm": (),
    "gru": (),
    "transformer": ("heads", "ff_mult", "max_context"),
    "rmc": ("mem_slots", "num_heads", "head_size", "num_blocks", "mlp_layers", "forget_bias", "input_bias"),
}


def build_recurrent(
    kind: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    **settings: Any,
) -> nn.Module:
    """A recurrent core by ``model.kind``.

    ``rims`` -> RIM, ``lstm`` -> nn.LSTM (as AutocastSafeLSTM), ``gru`` -> nn.GRU, ``transformer`` ->
    TransformerCore (causal, pre-LN, d_model = hidden_size, num_layers blocks, 4 heads, sinusoidal positions, a
    sliding window of 1024 tokens), ``rmc`` -> RelationalMemory (4 slots, 4 heads, head size hidden_size // 16,
    output hidden_size).

    settings are the kind's own (KIND_SETTINGS): num_units, top_k, cell, selection, input_attention, comm for
    ``rims``; heads, ff_mult, max_context for ``transformer``; mem_slots, num_heads, head_size, num_blocks,
    mlp_layers, forget_bias, input_bias for ``rmc``. Another kind's setting is an error, not silently ignored.
    dropout is between layers for rims / lstm / gru / rmc and inside the blocks for the transformer.
    bidirectional is for rims / lstm / gru only: the other two are causal by construction.
    """
    if kind not in KIND_SETTINGS:
        raise ValueError(f"build_recurrent: Expected kind to be one of {MODEL_KINDS}, got {kind!r}")
    unknown = sorted(set(settings) - set(KIND_SETTINGS[kind]))
    if unknown and kind != "rims" and set(unknown) <= set(RIM_ONLY_KEYS):
        raise ValueError(f"build_recurrent: {unknown} apply only to kind='rims', got kind={kind!r}; "
                         "drop them for the baseline")
    if unknown:
        what = "RIM setting(s)" if kind == "rims" else f"setting(s) for kind={kind!r}"
        raise ValueError(f"build_recurrent: unknown {what} {unknown}; expected a subset of "
                         f"{list(KIND_SETTINGS[kind])}")
    if kind in ("transformer", "rmc"):
        if bidirectional:
            raise ValueError(f"build_recurrent: Expected bidirectional=False for kind={kind!r}, got True; a "
                             f"{kind} core is causal (it reads past and present only); use rims, lstm or gru")
        cls = TransformerCore if kind == "transformer" else RelationalMemory
        return cls(input_size, hidden_size, num_layers, batch_first=batch_first, dropout=dropout, **settings)
    common = {"num_layers": num_layers, "batch_first": batch_first, "dropout": dropout,
              "bidirectional": bidirectional}
    if kind == "rims":
        return RIM(input_size, hidden_size, **common, **settings)
    cls = AutocastSafeLSTM if kind == "lstm" else nn.GRU
    return cls(input_size, hidden_size, **common)


@functools.cache
def cpu_autocast_lstm_supported(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether this CPU runs nn.LSTM under torch.autocast("cpu", dtype): oneDNN's low-precision LSTM needs CPU
    instructions some machines lack (seen: an AMD EPYC without AVX-512 raises "could not create a primitive
    descriptor for the LSTM forward propagation primitive"). Checked once per dtype on a tiny LSTM."""
    try:
        with torch.autocast("cpu", dtype=dtype):
            nn.LSTM(2, 2)(torch.zeros(1, 1, 2))
    except RuntimeError:
        return False
    return True


class AutocastSafeLSTM(nn.LSTM):
    """nn.LSTM (the same parameters, state_dict keys and contract; isinstance nn.LSTM) that, under CPU autocast
    on a CPU without a low-precision LSTM kernel (cpu_autocast_lstm_supported), runs its recurrence in fp32
    instead of failing; the layers around it stay under autocast. Everywhere else it is nn.LSTM."""

    def forward(self, input: Any, hx: Any = None) -> Any:
        data = input.data if isinstance(input, PackedSequence) else input
        if data.device.type != "cpu" or not torch.is_autocast_enabled("cpu") \
                or cpu_autocast_lstm_supported(torch.get_autocast_dtype("cpu")):
            return super().forward(input, hx)
        input = input._replace(data=data.float()) if isinstance(input, PackedSequence) else input.float()
        hx = None if hx is None else tuple(h.float() for h in hx)
        with torch.autocast("cpu", enabled=False):
            return super().forward(input, hx)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def macs_per_step(module: nn.Module, rows: int | None = None, context: int | None = None) -> int:
    """Multiply-adds per time step and sample of a recurrent core, as computed (not as idealised).

    TransformerCore: per token at ``context`` tokens attended (None: its max_context, 1024 by default: the cost
    of a step of a long stream once the window is full; a token of a shorter sequence costs less in the
    attention term 2 * E * context per layer). RelationalMemory: per step, every slot and the input row.

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
    if isinstance(module, TransformerCore):
        E, ctx = module.hidden_size, module.max_context if context is None else context
        per_block = 4 * E * E + 2 * module.ff_mult * E * E + 2 * E * ctx  # qkv + out, feed-forward, scores + read
        return module.input_size * E + module.num_layers * per_block
    if isinstance(module, RelationalMemory):
        S, M, E, total = module.mem_slots, module.mem_size, module.hidden_size, 0
        R = S + 1  # memory rows and the input row
        for n in range(module.num_layers):
            d_in = module.input_size if n == 0 else E
            total += d_in * M + M * 2 * M + S * M * 2 * M  # input row, input gates, memory gates
            # per block: q, k, v of every row, scores and read, the MLP on every row
            total += module.num_blocks * (R * M * 3 * M + 2 * R * R * M + R * module.mlp_layers * M * M)
            total += 0 if S * M == E else S * M * E  # output map
        return total
    raise TypeError(f"macs_per_step: Expected a RIM, nn.LSTM, nn.GRU, TransformerCore or RelationalMemory, got "
                    f"{type(module).__name__}")

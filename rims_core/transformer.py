"""A causal Transformer baseline with the nn.LSTM calling convention (``model.kind: transformer``).

Pre-LN decoder-only blocks (Vaswani et al. 2017 with the layer norm before each sublayer, as in GPT-2): an input
projection to d_model = hidden_size, sinusoidal positions added to it, ``num_layers`` blocks of causal multi-head
self-attention and a 4x feed-forward, and a final layer norm. The positions are the sinusoids of Vaswani et al.
(section 3.5), computed from the absolute position on the fly, so they are defined at every length: a model
trained at one length can be evaluated at longer ones (what the copying and sequential-MNIST tables test). They
were chosen over ALiBi because a fixed-offset lookup (copying's "the symbol n + blank steps back") is a linear
map of the sinusoidal code, learnable by one head, while ALiBi's distance penalty cannot single out one offset;
whether the model generalises past the trained length is what the tables measure, not something the code claims.

Recurrent use: each token attends to at most the last ``max_context`` tokens, itself included (a sliding
window). The state is the per-layer cache of the last max_context - 1 keys and values and the number of tokens
seen, so feeding a sequence in chunks, carrying the state, gives the same outputs as feeding it whole, and the
cost of a step is bounded however long the stream runs. Past max_context tokens the oldest ones drop out of
the window; the positions keep counting.

Shape legend: B batch, T new tokens, C cached tokens (<= max_context - 1), D input size, E = hidden_size,
nh heads, dh = E // nh head size, N = num_layers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TransformerCore", "TransformerState", "sinusoidal_positions"]


class TransformerState(NamedTuple):
    """What a TransformerCore carries between chunks.

    keys, values: (N, B, nh, C, dh), the last C <= max_context - 1 tokens of each layer (C = 0 at the start).
    position: (B,) int64, tokens seen so far (the absolute position of the next token).
    """

    keys: Tensor
    values: Tensor
    position: Tensor


def sinusoidal_positions(position: Tensor, size: int) -> Tensor:
    """Vaswani et al.'s encoding: position (...) int -> (..., size), sin on even features, cos on odd ones."""
    half = torch.arange(0, size, 2, device=position.device, dtype=torch.float32)
    freq = torch.exp(half * (-math.log(10000.0) / size))  # (ceil(size/2),)
    angle = position.to(torch.float32).unsqueeze(-1) * freq  # (..., ceil(size/2))
    pe = torch.zeros(*position.shape, size, device=position.device)
    pe[..., 0::2] = torch.sin(angle)
    pe[..., 1::2] = torch.cos(angle[..., : size // 2])
    return pe


class _Block(nn.Module):
    """x + Attn(LN(x)), then + FF(LN(x)); attention over [cache; x] under a causal sliding-window mask."""

    def __init__(self, size: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(size), nn.LayerNorm(size)
        self.qkv = nn.Linear(size, 3 * size)
        self.proj = nn.Linear(size, size)
        self.ff = nn.Sequential(nn.Linear(size, ff_mult * size), nn.GELU(), nn.Linear(ff_mult * size, size))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, k_past: Tensor, v_past: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, E), k_past/v_past (B, nh, C, dh), mask (T, C + T) bool (True = may attend)
        -> (x (B, T, E), keys and values of [cache; x], each (B, nh, C + T, dh))."""
        B, T, E = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, E // self.heads).permute(2, 0, 3, 1, 4)
        k = torch.cat([k_past, k], dim=2)  # (B, nh, C + T, dh)
        v = torch.cat([v_past, v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, E)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, k, v


class TransformerCore(nn.Module):
    r"""Causal Transformer over a stream: ``forward(x, state=None) -> (out, state)`` like nn.LSTM.

    Args:
        input_size: D, features per input step.
        hidden_size: E, d_model and the output size.
        num_layers: decoder blocks.
        batch_first: x is (B, T, D) if True, else (T, B, D); out follows it. Unbatched (T, D) is accepted
            (its state has B = 1).
        dropout: on the attention probabilities and on each sublayer's output (as in Vaswani et al.).
        heads: attention heads; must divide hidden_size (default 4).
        ff_mult: feed-forward width as a multiple of hidden_size (default 4).
        max_context: tokens each token sees, itself included (default 1024: the longest sequence of the paper's
            tasks, sequential MNIST's 784 pixels, fits whole). The state keeps max_context - 1 tokens.

    Inputs: x, state (a TransformerState, or None for an empty cache at position 0).
    Outputs: out (.., E) shaped like x, and the new TransformerState.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False,
                 dropout: float = 0.0, heads: int = 4, ff_mult: int = 4, max_context: int = 1024) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("heads", heads), ("ff_mult", ff_mult), ("max_context", max_context)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerCore: Expected {name} to be a positive int, got {value!r}")
        if hidden_size % heads:
            ok = [h for h in range(1, min(hidden_size, 16) + 1) if hidden_size % h == 0]
            raise ValueError(f"TransformerCore: Expected heads to divide hidden_size, got heads={heads} and "
                             f"hidden_size={hidden_size}; heads in {ok} would divide it")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TransformerCore: Expected dropout in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.heads, self.ff_mult, self.max_context = batch_first, heads, ff_mult, max_context
        self.dropout = dropout
        self.inp = nn.Linear(input_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden_size, heads, ff_mult, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(hidden_size)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, heads={self.heads}, "
                f"max_context={self.max_context}, batch_first={self.batch_first}, dropout={self.dropout}")

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> TransformerState:
        """An empty cache at position 0."""
        dh = self.hidden_size // self.heads
        empty = torch.zeros(self.num_layers, batch_size, self.heads, 0, dh, device=device, dtype=dtype)
        return TransformerState(empty, empty.clone(), torch.zeros(batch_size, dtype=torch.long, device=device))

    def forward(self, x: Tensor, state: TransformerState | None = None) -> tuple[Tensor, TransformerState]:
        if x.dim() not in (2, 3):
            raise ValueError(f"TransformerCore: Expected input to be 2D or 3D, got {x.dim()}D instead")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"TransformerCore: Expected input.size(-1) == input_size = {self.input_size}, "
                             f"got {x.shape[-1]}")
        batched = x.dim() == 3
        x = x.unsqueeze(0) if not batched else x if self.batch_first else x.transpose(0, 1)  # (B, T, D)
        B, T, _ = x.shape
        if state is None:
            state = self.initial_state(B, x.device, x.dtype)
        elif isinstance(state, tuple) and len(state) == 3:
            state = TransformerState(*state)  # a plain tuple, e.g. tuple(s.detach() for s in state)
        if not isinstance(state, TransformerState) or state.keys.shape[:3] != (self.num_layers, B, self.heads):
            raise ValueError(f"TransformerCore: Expected state to be a TransformerState with keys of shape "
                             f"({self.num_layers}, {B}, {self.heads}, C, {self.hidden_size // self.heads}), got "
                             f"{type(state).__name__}")
        keys, values, position = state
        C = keys.shape[3]
        pos = position[:, None] + torch.arange(T, device=x.device)  # (B, T)
        h = self.drop(self.inp(x) + sinusoidal_positions(pos, self.hidden_size).to(x.dtype))  # (B, T, E)
        # query i sits at index C + i of [cache; x]; it sees keys j with C + i - max_context < j <= C + i
        qi = torch.arange(T, device=x.device)[:, None] + C
        kj = torch.arange(C + T, device=x.device)[None, :]
        mask = (kj <= qi) & (kj > qi - self.max_context)  # (T, C + T)
        keep = min(self.max_context - 1, C + T)
        new_k, new_v = [], []
        for n, block in enumerate(self.blocks):
            h, k, v = block(h, keys[n], values[n], mask)
            new_k.append(k[:, :, C + T - keep:])
            new_v.append(v[:, :, C + T - keep:])
        out = self.ln_f(h)  # (B, T, E)
        if not batched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, TransformerState(torch.stack(new_k), torch.stack(new_v), position + T)

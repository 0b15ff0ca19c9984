r"""Relational Memory Core (Santoro et al. 2018, "Relational recurrent neural networks"), ``model.kind: rmc``.

A memory of ``mem_slots`` rows of size M = num_heads * head_size. At each step the input is projected to one
row x~; the memory attends over [memory; x~] with multi-head dot-product attention (queries from every row, keys
and values from every row, no output projection, as in Sonnet's reference code), then a residual MLP, each
followed by a layer norm (``num_blocks`` times); the input row is dropped and the result enters the memory
through LSTM-style gates computed from the input and tanh of the previous memory:

.. math::
    \tilde M = \mathrm{LN}(M' + \mathrm{MLP}(M')),\quad M' = \mathrm{LN}([M; \tilde x] + \mathrm{MHA}([M; \tilde x]))
    \qquad M_t = \sigma(i_t + b_i) \odot \tanh(\tilde M_{1:S}) + \sigma(f_t + b_f) \odot M_{t-1}

with :math:`[i_t; f_t] = \tilde x_t W^x + \tanh(M_{t-1}) W^m` per slot, :math:`b_i = 0`, :math:`b_f = 1` (the
paper's "unit" gating). The output is the flattened memory (S * M); when that differs from hidden_size a linear
map sizes it to hidden_size. The memory starts as the identity (row s is e_s, padded or cut to M), so the slots
differ from the first step: from equal rows the attention and the MLP would keep them equal.

The memory is not bounded: |M_t| <= |M_{t-1}| + 1 elementwise, so over a horizon of T steps it grows at most
linearly (tested finite over thousands of steps).

Shape legend: B batch, T time, D input size, S mem_slots, M = num_heads * head_size memory row size, N layers,
E = hidden_size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RelationalMemory", "rmc_sizes"]


def rmc_sizes(hidden_size: int, mem_slots: int = 4, num_heads: int = 4, head_size: int | None = None) -> dict:
    """Resolved memory sizes: head_size defaults to hidden_size // (mem_slots * num_heads), so the flattened
    memory is hidden_size (no output map) whenever mem_slots * num_heads divides it."""
    for name, value in (("hidden_size", hidden_size), ("mem_slots", mem_slots), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"RelationalMemory: Expected {name} to be a positive int, got {value!r}")
    if head_size is None:
        head_size = hidden_size // (mem_slots * num_heads)
        if head_size < 1:
            raise ValueError(f"RelationalMemory: Expected hidden_size >= mem_slots * num_heads = "
                             f"{mem_slots * num_heads} to derive head_size, got hidden_size={hidden_size}; give "
                             "head_size or fewer mem_slots / num_heads")
    elif isinstance(head_size, bool) or not isinstance(head_size, int) or head_size < 1:
        raise ValueError(f"RelationalMemory: Expected head_size to be a positive int or None, got {head_size!r}")
    return {"mem_slots": mem_slots, "num_heads": num_heads, "head_size": head_size}


class _RMCLayer(nn.Module):
    """One relational memory over a sequence: x (B, T, D), memory (B, S, M) -> out (B, T, S*M), memory."""

    def __init__(self, input_size: int, mem_slots: int, num_heads: int, head_size: int, num_blocks: int,
                 mlp_layers: int, forget_bias: float, input_bias: float) -> None:
        super().__init__()
        M = num_heads * head_size
        self.S, self.M, self.heads, self.head_size, self.num_blocks = mem_slots, M, num_heads, head_size, num_blocks
        self.forget_bias, self.input_bias = forget_bias, input_bias
        self.inp = nn.Linear(input_size, M)
        self.qkv = nn.Linear(M, 3 * M)  # key size = head size, as in the paper's default
        mlp: list[nn.Module] = []
        for i in range(mlp_layers):
            mlp += [nn.Linear(M, M)] + ([nn.ReLU()] if i < mlp_layers - 1 else [])
        self.mlp = nn.Sequential(*mlp)
        self.ln_attn, self.ln_mlp = nn.LayerNorm(M), nn.LayerNorm(M)
        self.gate_x = nn.Linear(M, 2 * M)
        self.gate_m = nn.Linear(M, 2 * M)

    def _attend(self, mem: Tensor) -> Tensor:
        """mem (B, S+1, M) -> (B, S+1, M): num_blocks of LN(m + MHA(m)), LN(m + MLP(m))."""
        B, R, M = mem.shape
        for _ in range(self.num_blocks):
            q, k, v = self.qkv(mem).view(B, R, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)  # (B, nh, R, hs)
            att = torch.softmax(q @ k.transpose(-1, -2) * self.head_size ** -0.5, dim=-1)  # (B, nh, R, R)
            mem = self.ln_attn(mem + (att @ v).transpose(1, 2).reshape(B, R, M))
            mem = self.ln_mlp(mem + self.mlp(mem))
        return mem

    def forward(self, x: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        xt = self.inp(x)  # (B, T, M), every step at once: it does not depend on the memory
        gx = self.gate_x(xt)  # (B, T, 2M)
        outs = []
        for t in range(x.shape[1]):
            row = xt[:, t : t + 1]  # (B, 1, M)
            new = self._attend(torch.cat([memory, row], dim=1))[:, : self.S]  # (B, S, M), input row dropped
            i_gate, f_gate = (gx[:, t : t + 1] + self.gate_m(torch.tanh(memory))).chunk(2, dim=-1)  # (B, S, M) each
            memory = (torch.sigmoid(i_gate + self.input_bias) * torch.tanh(new)
                      + torch.sigmoid(f_gate + self.forget_bias) * memory)
            outs.append(memory.flatten(1))
        return torch.stack(outs, dim=1), memory  # (B, T, S*M), (B, S, M)


class RelationalMemory(nn.Module):
    """Relational Memory Core with the nn.GRU calling convention: ``forward(x, state=None) -> (out, state)``.

    Args:
        input_size: D. hidden_size: E, the output size.
        num_layers: stacked cores, each reading the one below's output (dropout between them, as nn.LSTM).
        batch_first: x is (B, T, D) if True, else (T, B, D); out follows it. Unbatched (T, D) is accepted.
        mem_slots: S, memory rows (default 4).
        num_heads: attention heads (default 4).
        head_size: per head; M = num_heads * head_size (default hidden_size // (mem_slots * num_heads), so the
            flattened memory is hidden_size when that divides; otherwise a linear map sizes the output).
        num_blocks: attention + MLP rounds per step (default 1). mlp_layers: MLP depth (default 2).
        forget_bias, input_bias: added to the gates' pre-activations (defaults 1 and 0, as in the paper's code).

    Inputs: x, state: the memory (N, B, S, M), or None for the identity memory.
    Outputs: out (.., E) shaped like x, state (N, B, S, M) (layer-first, as nn.GRU's h_n; B = 1 if unbatched).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False,
                 dropout: float = 0.0, mem_slots: int = 4, num_heads: int = 4, head_size: int | None = None,
                 num_blocks: int = 1, mlp_layers: int = 2, forget_bias: float = 1.0, input_bias: float = 0.0) -> None:
        super().__init__()
        sizes = rmc_sizes(hidden_size, mem_slots, num_heads, head_size)
        for name, value in (("input_size", input_size), ("num_layers", num_layers), ("num_blocks", num_blocks),
                            ("mlp_layers", mlp_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RelationalMemory: Expected {name} to be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RelationalMemory: Expected dropout in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.dropout = batch_first, dropout
        self.mem_slots, self.num_heads, self.head_size = sizes["mem_slots"], sizes["num_heads"], sizes["head_size"]
        self.mem_size = self.num_heads * self.head_size
        self.num_blocks, self.mlp_layers = num_blocks, mlp_layers
        flat = self.mem_slots * self.mem_size
        self.layers = nn.ModuleList(
            _RMCLayer(input_size if n == 0 else hidden_size, self.mem_slots, self.num_heads, self.head_size,
                      num_blocks, mlp_layers, forget_bias, input_bias) for n in range(num_layers))
        # one map per layer, so the next layer (and the task head) always sees hidden_size features
        self.out = nn.ModuleList(nn.Identity() if flat == hidden_size else nn.Linear(flat, hidden_size)
                                 for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, mem_slots={self.mem_slots}, "
                f"num_heads={self.num_heads}, head_size={self.head_size}, batch_first={self.batch_first}")

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> Tensor:
        """(N, B, S, M): every layer's memory the identity (row s = e_s, padded with zeros or cut to M)."""
        eye = torch.eye(self.mem_slots, self.mem_size, device=device, dtype=dtype)
        return eye.expand(self.num_layers, batch_size, -1, -1).clone()

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() not in (2, 3):
            raise ValueError(f"RelationalMemory: Expected input to be 2D or 3D, got {x.dim()}D instead")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"RelationalMemory: Expected input.size(-1) == input_size = {self.input_size}, "
                             f"got {x.shape[-1]}")
        batched = x.dim() == 3
        x = x.unsqueeze(0) if not batched else x if self.batch_first else x.transpose(0, 1)  # (B, T, D)
        B = x.shape[0]
        want = (self.num_layers, B, self.mem_slots, self.mem_size)
        if state is None:
            state = self.initial_state(B, x.device, x.dtype)
        elif not isinstance(state, Tensor) or tuple(state.shape) != want:
            got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"RelationalMemory: Expected state of shape {want} (num_layers, batch, mem_slots, "
                             f"mem_size), got {got}")
        h, memories = x, []
        for n, (layer, out) in enumerate(zip(self.layers, self.out, strict=True)):
            flat, mem = layer(h, state[n])
            h = out(flat)  # (B, T, E)
            if n < self.num_layers - 1:
                h = self.drop(h)
            memories.append(mem)
        if not batched:
            h = h[0]
        elif not self.batch_first:
            h = h.transpose(0, 1)
        return h, torch.stack(memories)

"""RIM: a multi-layer, optionally bidirectional RIM sequence model with the nn.LSTM / nn.GRU contract.

Shape legend: L sequence length, N batch, D input size, S = num_layers * num_directions,
K units, nh input-attention heads. States are (S, N, hidden_size), units unit-major:
h.view(S, N, num_units, hidden_size // num_units).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils.hooks import RemovableHandle

from .cell import RIMCell, unpack_state
from .config import RIMConfig

__all__ = ["RIM", "RIMTrace"]


@dataclass
class RIMTrace:
    """What the selection and the attentions did during one forward, per layer and direction.

    active: (S, L, N, K) bool, the units that updated at each step (False everywhere at padded steps).
    input_attention: (S, L, N, K, nh), attention each unit put on the real input (1 - attention on null).
    comm_attention: (S, L, N, heads, K, K) or None when communication is off.
    Time runs in input order for both directions; N in the caller's batch order.
    """

    active: Tensor
    input_attention: Tensor
    comm_attention: Tensor | None

    def active_fraction(self) -> Tensor:
        """(S, K) fraction of valid steps at which each unit was active."""
        return self.active.float().mean(dim=(1, 2))


class RIM(nn.Module):
    r"""Recurrent Independent Mechanisms as a drop-in for ``nn.LSTM`` (cell="lstm") or ``nn.GRU``.

    .. math::
        \tilde h_{t,k} = \mathrm{cell}_k(a_{t,k}\, x_t W^v, h_{t-1,k}) \text{ for } k \in S_t,
        \quad \tilde h_{t,k} = h_{t-1,k} \text{ otherwise};\quad
        h_{t,k} = \mathrm{out}(\tilde h_{t,k}, \mathrm{MHA}_k(\tilde h)) \text{ for } k \in S_t

    where :math:`S_t` holds the ``top_k`` units that attend least to the null input, and out is
    ``comm.output``: by default bounded (LSTM units: :math:`\tilde h + g \tanh(W^o r + b^o)`, the official
    code's, |h| < 2; GRU units: :math:`(1 - g) \tilde h + g \tanh(W^o r + b^o)`, |h| <= 1), or the paper's
    plain residual :math:`\tilde h + W^o r` (unbounded). See docs/model.md.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype:
            as in nn.LSTM. hidden_size is the TOTAL over units and must be divisible by num_units.
        proj_size: refused (nn.LSTM's projections have no RIM counterpart); must be 0.
        num_units: k_T, number of units. Default: 6.
        top_k: k_A, active units per step. Default: 4.
        cell: "lstm" (states (h, c), like nn.LSTM) or "gru" (state h, like nn.GRU). Default: "lstm".
        selection: "topk" (paper), "random" (ablation), "all" (requires top_k == num_units).
        input_attention, comm: :class:`InputAttentionConfig` / :class:`CommConfig` or dicts of their fields.

    Inputs: input, hx
        - input: (L, N, D), (N, L, D) with batch_first, (L, D) unbatched, or a PackedSequence.
        - hx: (h_0, c_0) for LSTM cells, h_0 for GRU cells, each (S, N, hidden_size) or (S, hidden_size)
          for unbatched input; zeros when omitted.

    Outputs: output, h_n
        - output: (L, N, num_directions * hidden_size) (batch_first / unbatched / packed like input).
        - h_n: (h_n, c_n) for LSTM cells, h_n for GRU cells, each shaped like hx.
        With ``return_trace=True`` a third value, a :class:`RIMTrace`, is returned.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
        num_units: int = 6,
        top_k: int = 4,
        cell: str = "lstm",
        selection: str = "topk",
        input_attention: Any = None,
        comm: Any = None,
    ) -> None:
        super().__init__()
        if proj_size != 0:
            raise ValueError(f"RIM: proj_size is not supported (units have no projection), got proj_size={proj_size}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"RIM: Expected num_layers to be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
            raise ValueError(f"RIM: Expected dropout to be a number in [0, 1], got {dropout!r}")
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"RIM: Expected input_size to be a positive int, got {input_size!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, 0
        self.num_directions = 2 if bidirectional else 1
        kw = {"num_units": num_units, "top_k": top_k, "cell": cell, "selection": selection,
              "input_attention": input_attention, "comm": comm}
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else hidden_size * self.num_directions
            for _ in range(self.num_directions):
                self.cells.append(RIMCell(d_in, hidden_size, bias, device, dtype, **kw))
        self.config: RIMConfig = self.cells[0].config
        self._trace_hooks: OrderedDict[int, Callable] = OrderedDict()  # weak-referencable, for RemovableHandle

    # ------------------------------------------------------------------ nn.LSTM conveniences
    @property
    def mode(self) -> str:
        return self.config.cell.upper()

    def reset_parameters(self) -> None:
        for c in self.cells:
            c.reset_parameters()

    def flatten_parameters(self) -> None:
        """No-op, for code written for nn.LSTM (the RIM's weights need no cuDNN flattening)."""

    def extra_repr(self) -> str:
        s = self.cells[0].extra_repr().split(", ", 2)[2]
        head = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            head += f", num_layers={self.num_layers}"
        for name, default in (("batch_first", False), ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                head += f", {name}={getattr(self, name)}"
        return f"{head}, {s}"

    def compile_step(self, **compile_kwargs: Any) -> None:
        """torch.compile every cell's step (see RIMCell.compile_step); the module stays an nn.Module."""
        for c in self.cells:
            c.compile_step(**compile_kwargs)

    def register_trace_hook(self, hook: Callable[[RIM, RIMTrace], None]) -> RemovableHandle:
        """Call ``hook(module, trace)`` after every forward; the trace is recorded only while a hook exists."""
        handle = RemovableHandle(self._trace_hooks)
        self._trace_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------------ forward
    def _check_hx(self, hx: Any, N: int, batched: bool, dtype, device) -> tuple[Tensor, Tensor | None]:
        S = self.num_layers * self.num_directions
        want = (S, N, self.hidden_size) if batched else (S, self.hidden_size)
        is_lstm = self.config.cell == "lstm"
        if hx is None:
            z = torch.zeros(S, N, self.hidden_size, dtype=dtype, device=device)
            return z, (z if is_lstm else None)
        h, c = unpack_state("RIM", hx, is_lstm, want)
        if not batched:
            h, c = h.unsqueeze(1), (c.unsqueeze(1) if c is not None else None)
        return h, c

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, *, return_trace: bool = False):
        packed = isinstance(input, PackedSequence)
        valid = lengths = None
        if packed:
            x, lengths = pad_packed_sequence(input)  # (L, N, D), caller's order
            L = x.shape[0]
            valid = torch.arange(L)[:, None] < lengths[None, :]  # (L, N)
            valid = valid.to(x.device)
            batched = True
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"RIM: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise RuntimeError(
                f"RIM: input.size(-1) must be equal to input_size. Expected {self.input_size}, got {x.shape[-1]}"
            )
        L, N, _ = x.shape
        h0, c0 = self._check_hx(hx, N, batched, x.dtype, x.device)
        want_trace = return_trace or bool(self._trace_hooks)
        output, h_n, c_n, traces = self._layers(x, h0, c0, valid, lengths, want_trace)
        if packed:
            output = self._repack(output, input)
        else:
            if not batched:
                output, h_n = output.squeeze(1), h_n.squeeze(1)
                c_n = c_n.squeeze(1) if c_n is not None else None
            elif self.batch_first:
                output = output.transpose(0, 1)
        state = (h_n, c_n) if c0 is not None else h_n
        trace = None
        if want_trace:
            comm = [t.get("comm_attention") for t in traces]
            trace = RIMTrace(
                active=torch.stack([t["active"] for t in traces]),
                input_attention=torch.stack([t["input_attention"] for t in traces]),
                comm_attention=torch.stack(comm) if comm[0] is not None else None,
            )
            if not batched and not packed:
                trace = RIMTrace(trace.active[:, :, 0], trace.input_attention[:, :, 0],
                                 None if trace.comm_attention is None else trace.comm_attention[:, :, 0])
            for hook in list(self._trace_hooks.values()):
                hook(self, trace)
        return (output, state, trace) if return_trace else (output, state)

    def _layers(self, x: Tensor, h0: Tensor, c0: Tensor | None, valid: Tensor | None, lengths: Tensor | None,
                want_trace: bool) -> tuple[Tensor, Tensor, Tensor | None, list[dict[str, Tensor] | None]]:
        """Every layer and direction over x (L, N, D), time-major, from h0, c0 (S, N, H); valid (L, N) bool or
        None, lengths (N,) or None (derived from valid where needed). Returns output (L, N, dirs*H), h_n, c_n
        (S, N, H) (c_n None for GRU) and each cell's trace dict (None without want_trace)."""
        L, N, _ = x.shape
        rev = None
        if self.bidirectional:  # per-sequence time reversal (respects lengths of packed input)
            t = torch.arange(L, device=x.device)[:, None].expand(L, N)
            if lengths is None and valid is not None:
                lengths = valid.sum(0)
            lens = (lengths.to(x.device)[None, :] if lengths is not None else torch.full((1, N), L, device=x.device))
            rev = torch.where(t < lens, lens - 1 - t, t)  # (L, N), an involution

        def flip(a: Tensor) -> Tensor:  # a: (L, N, ...)
            idx = rev.view(L, N, *([1] * (a.dim() - 2))).expand_as(a)
            return a.gather(0, idx)

        h_n, c_n, traces = [], [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = layer * self.num_directions + d
                xi = layer_in if d == 0 else flip(layer_in)
                out, hT, cT, tr = self.cells[i].scan(xi, h0[i], None if c0 is None else c0[i], valid, want_trace)
                if d == 1:
                    out = flip(out)
                    if tr is not None:
                        tr = {k: flip(v) for k, v in tr.items()}
                outs.append(out)
                h_n.append(hT)
                c_n.append(cT)
                traces.append(tr)
            layer_in = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        h_n = torch.stack(h_n)
        c_n = torch.stack(c_n) if c0 is not None else None
        return layer_in, h_n, c_n, traces

    @staticmethod
    def _repack(output: Tensor, like: PackedSequence) -> PackedSequence:
        """Pack output (L, N, F), caller's order, with exactly the batch_sizes and indices of ``like``."""
        lengths = torch.zeros(output.shape[1], dtype=torch.int64)
        for t, bs in enumerate(like.batch_sizes.tolist()):
            lengths[:bs] = t + 1  # lengths in sorted order
        if like.sorted_indices is not None:
            output = output.index_select(1, like.sorted_indices.to(output.device))
        data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
        return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)

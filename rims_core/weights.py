"""The parameters of a RIM cell: their layout, their initialisation, and the forms the step reads them in.

RIMCellWeights holds what a RIMCell learns and how it is prepared once per scan (prepare, input_maps); the step
itself is rims_core.step, the sequence driver and the nn.LSTMCell contract rims_core.cell.RIMCell.

Shape legend: T time, B batch, K units (num_units), H unit size (hidden_size // K), D input size, G gate width
(4H for LSTM, 3H for GRU), nh/dk/dv input heads, key and value size, F the input features of the maps (D or dv).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .config import CommConfig, InputAttentionConfig, RIMConfig
from .step import Prepared

__all__ = ["CONVEX_GATE_BIAS", "RIMCellWeights", "build_config"]


#: Initial bias of the convex communication gate g (comm.output="convex"): sigmoid(-3) = 0.05, so a unit starts
#: close to its own update h~ and learns how far to open the gate, as a highway layer's transform gate starts
#: closed (Srivastava et al., 2015, recommend -1 to -3). With the gate half open at the start (bias ~0), a GRU RIM
#: stayed at the unigram loss for 300 updates of the word-LM check, where -3 let it learn (docs/model.md).
CONVEX_GATE_BIAS = -3.0


def build_config(hidden_size: int, **rim_kwargs: Any) -> RIMConfig:
    """RIMConfig from the keyword arguments RIM and RIMCell accept (config objects or dicts)."""
    ia = rim_kwargs.pop("input_attention", None)
    comm = rim_kwargs.pop("comm", None)
    return RIMConfig(
        hidden_size=hidden_size,
        input_attention=InputAttentionConfig() if ia is None else ia,
        comm=CommConfig() if comm is None else comm,
        **rim_kwargs,
    )


class RIMCellWeights(nn.Module):
    """A RIM cell's parameters and their prepared forms; RIMCell (rims_core.cell) adds the step and the scan.

    Per-unit weights are (K, in, out) tensors, never masked blocks of one big matrix. See RIMCell for the
    arguments.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        num_units: int = 6,
        top_k: int = 4,
        cell: str = "lstm",
        selection: str = "topk",
        input_attention: InputAttentionConfig | dict | None = None,
        comm: CommConfig | dict | None = None,
    ) -> None:
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"RIMCell: Expected input_size to be a positive int, got {input_size!r}")
        self.config = build_config(
            hidden_size, num_units=num_units, top_k=top_k, cell=cell, selection=selection,
            input_attention=input_attention, comm=comm,
        )
        cfg = self.config
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        fk = {"device": device, "dtype": dtype}
        K, H, D = cfg.num_units, cfg.unit_size, input_size
        G = (4 if cfg.cell == "lstm" else 3) * H
        nh, dk, dv = cfg.input_attention.heads, cfg.input_attention.key_size, cfg.input_value_size
        # Input attention: shared key/value projections of X (no bias, so the null row stays 0), and a
        # query projection per unit.
        self.inp_key = nn.Parameter(torch.empty(D, nh * dk, **fk))
        self.inp_value = nn.Parameter(torch.empty(D, nh * dv, **fk))
        self.inp_query = nn.Parameter(torch.empty(K, H, nh * dk, **fk))
        # Per-unit recurrent cells, truly independent weights: (K, in, out), gate order as nn.LSTMCell
        # (i, f, g, o) or nn.GRUCell (r, z, n).
        self.weight_ih = nn.Parameter(torch.empty(K, nh * dv, G, **fk))
        self.weight_hh = nn.Parameter(torch.empty(K, H, G, **fk))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(K, G, **fk))
            self.bias_hh = nn.Parameter(torch.empty(K, G, **fk))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        c = cfg.comm
        for name in ("comm_qkv", "comm_out", "comm_gate", "comm_out_bias", "comm_gate_bias"):
            self.register_parameter(name, None)
        if c.enabled:
            self.comm_qkv = nn.Parameter(torch.empty(K, H, c.heads * (2 * c.key_size + c.value_size), **fk))
            self.comm_out = nn.Parameter(torch.empty(K, c.heads * c.value_size, H, **fk))  # W^o, per unit
            if cfg.comm_output != "residual":  # bounded forms: a gate per unit and feature, biases as nn.Linear has
                self.comm_gate = nn.Parameter(torch.empty(K, c.heads * c.value_size, H, **fk))  # W^g
                if bias:
                    self.comm_out_bias = nn.Parameter(torch.empty(K, H, **fk))
                    self.comm_gate_bias = nn.Parameter(torch.empty(K, H, **fk))
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Re-draw every weight: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nn.LSTMCell and nn.Linear do; the convex
        communication gate's bias starts at CONVEX_GATE_BIAS."""
        H = self.config.unit_size
        c, form = self.config.comm, self.config.comm_output
        with torch.no_grad():
            for name, p in self.named_parameters(recurse=False):
                if name in ("weight_hh", "bias_ih", "bias_hh"):
                    bound = 1.0 / math.sqrt(H)  # nn.LSTMCell's rule, with the unit's hidden size
                elif name in ("comm_out_bias", "comm_gate_bias"):
                    bound = 1.0 / math.sqrt(c.heads * c.value_size)  # nn.Linear's rule: the read's width
                elif p.dim() == 3:
                    bound = 1.0 / math.sqrt(p.shape[1])  # per-unit (K, in, out): fan_in = in
                else:
                    bound = 1.0 / math.sqrt(p.shape[0])  # shared (in, out)
                p.uniform_(-bound, bound)
            if form == "convex" and self.comm_gate_bias is not None:
                self.comm_gate_bias.fill_(CONVEX_GATE_BIAS)

    def extra_repr(self) -> str:
        cfg = self.config
        s = f"{self.input_size}, {self.hidden_size}, num_units={cfg.num_units}, top_k={cfg.top_k}"
        s += f", cell={cfg.cell!r}, selection={cfg.selection!r}"
        ia = cfg.input_attention
        s += f", input_attention=(heads={ia.heads}, key_size={ia.key_size}, value_size={cfg.input_value_size}"
        s += f", dropout={ia.dropout})"
        c = cfg.comm
        if c.enabled:
            s += (f", comm=(heads={c.heads}, key_size={c.key_size}, value_size={c.value_size}, dropout={c.dropout}"
                  f", output={cfg.comm_output!r})")
        else:
            s += ", comm=off"
        return s + ("" if self.bias else ", bias=False")

    # ------------------------------------------------------------------ the forms the step reads
    def folds_value(self, rows: int | None = None) -> bool:
        """Whether the value projection W^v is folded into each unit's W^ih for a forward over ``rows`` = T*B
        input rows (None: a long sequence, where folding's one-time cost per row vanishes).

        This is the one decision: input_maps follows it and macs_per_step (rims_core.factory) counts by it.
        Folded, every row costs K*D*nh*G multiply-adds (x times the D x G map of each unit) after a one-time
        K*D*nh*dv*G to form the maps; unfolded, D*dv + K*dv*G (x W^v first, then W^ih). With several input
        heads the maps are always folded: each head's part of the gates is scaled by its own attention, which
        the unfolded product (summed over heads by W^ih) would lose.
        """
        cfg = self.config
        K, D, nh, dv = cfg.num_units, self.input_size, cfg.input_attention.heads, cfg.input_value_size
        G = (4 if cfg.cell == "lstm" else 3) * cfg.unit_size
        if nh > 1:
            return True
        folded_row, unfolded_row = K * D * G, D * dv + K * dv * G
        if rows is None:
            return folded_row <= unfolded_row
        return K * D * dv * G + rows * folded_row <= rows * unfolded_row

    def input_maps(self, x: Tensor, gate_scale: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The input side of every step, for all steps at once.

        Returns keys (T, B, nh, dk), features z (T, B, F) and per-unit maps w_u (K, F, nh*G) such that
        u_t = z_t @ w_u[k] (viewed (nh, G)) is x_t W^v_h W^ih_k,h for every head h: the input part of unit k's
        gates before scaling by its attention. W^v is folded into W^ih (z = x, F = D) when folds_value(T*B)
        says so, otherwise z = x W^v and w_u = W^ih (F = dv): long sequences and small inputs fold, one step of a
        small batch (an RL policy acting) does not. gate_scale multiplies the gate columns.
        """
        cfg = self.config
        T, B, D = x.shape
        K, nh, dk, dv = cfg.num_units, cfg.input_attention.heads, cfg.input_attention.key_size, cfg.input_value_size
        G = self.weight_ih.shape[-1]
        keys = (x @ self.inp_key).view(T, B, nh, dk)
        w_ih = self.weight_ih if gate_scale is None else self.weight_ih * gate_scale  # (K, nh*dv, G)
        if self.folds_value(T * B):
            w_u = torch.einsum("dhv,khvg->kdhg", self.inp_value.view(D, nh, dv), w_ih.view(K, nh, dv, G))
            return keys, x, w_u.reshape(K, D, nh * G)
        return keys, x @ self.inp_value, w_ih

    def precompute(self, x: Tensor, gate_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """keys (T, B, nh, dk) and u (K, T, B, nh, G) for all steps (the plain path materialises u)."""
        keys, z, w_u = self.input_maps(x, gate_scale)
        T, B, F = z.shape
        K, nh = self.config.num_units, self.config.input_attention.heads
        u = torch.matmul(z.reshape(1, T * B, F), w_u)  # (K, T*B, nh*G)
        return keys, u.view(K, T, B, nh, -1)

    def prepare(self) -> Prepared:
        """Weights as the step uses them, built once per scan rather than once per step.

        Constant factors are folded into the weights (exact up to rounding): the attention scales
        1/sqrt(dk) into the query projections, and for LSTM cells a factor 2 into the g-gate block, so
        that a single sigmoid gives i, f, o and (tanh(g) + 1) / 2. For LSTM cells b_ih + b_hh are added
        with the recurrent matmul (baddbmm); GRU cells keep b_ih apart, since r multiplies only W_hn h + b_hn.
        """
        cfg = self.config
        K, H = cfg.num_units, cfg.unit_size
        nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
        lstm = cfg.cell == "lstm"
        G = self.weight_hh.shape[-1]
        gate_scale = torch.ones(G, dtype=self.weight_hh.dtype, device=self.weight_hh.device)
        if lstm:
            gate_scale[2 * H:3 * H] = 2
        w_hq = torch.cat([self.weight_hh * gate_scale, self.inp_query * dk ** -0.5], dim=-1)
        b_hq = b_ih = None
        if self.bias_ih is not None:
            b_h = (self.bias_ih + self.bias_hh) * gate_scale if lstm else self.bias_hh
            b_hq = torch.cat([b_h, b_h.new_zeros(K, nh * dk)], dim=-1).unsqueeze(1)  # (K, 1, G + nh*dk)
            b_ih = None if lstm else self.bias_ih.unsqueeze(1)  # (K, 1, G)
        comm_qkv = comm_w = comm_b = None
        if self.comm_qkv is not None:
            c = cfg.comm
            qscale = torch.ones(2 * c.key_size + c.value_size, dtype=w_hq.dtype, device=w_hq.device)
            qscale[:c.key_size] = c.key_size ** -0.5
            comm_qkv = (self.comm_qkv.view(K, H, c.heads, -1) * qscale).view(K, H, -1)
            comm_w = self.comm_out
            if cfg.comm_output != "residual":  # factor 2 on W^o, b^o: one sigmoid gives (tanh + 1) / 2 and the gate
                oscale = torch.ones(2 * H, dtype=w_hq.dtype, device=w_hq.device)
                oscale[:H] = 2
                comm_w = torch.cat([self.comm_out, self.comm_gate], dim=-1) * oscale  # (K, heads*dv, 2H)
                if self.comm_out_bias is not None:
                    comm_b = (torch.cat([self.comm_out_bias, self.comm_gate_bias], dim=-1) * oscale).unsqueeze(1)
        return Prepared(w_hq, b_hq, b_ih, gate_scale, comm_qkv, comm_w, comm_b)

"""The specification of one RIM step: a plain per-unit version written from the paper's equations.

Deliberately slow and literal: an explicit null row, softmax over [null, x], Python loops over units
and heads, the standard LSTM/GRU equations with torch.tanh, every communication output form
(comm.output) as its equation reads, and no algebraic shortcuts. Ties in the selection go to the lower
unit index (the eval-mode rule). It reads the weights of a rims_core.RIMCell (same layout), so the fast
path (rims_core.step, rims_core.fused) is checked against it on the same parameters
(tests/rims_core/test_cell.py). Nothing on a fast path uses it; it is not exported from rims_core.

Shape legend: B batch, K units, H unit size, D input size, nh/dk/dv input heads, key and value size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .cell import RIMCell

__all__ = ["reference_step"]


def reference_step(
    cell: RIMCell, x: Tensor, h: Tensor, c: Tensor | None, active: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """x: (B, D); h, c: (B, K*H). Returns h', c' (B, K*H) and the active mask (B, K).

    active: optional (B, K) bool that overrides the selection (for the random rule).
    """
    cfg = cell.config
    B = x.shape[0]
    K, H, k_A = cfg.num_units, cfg.unit_size, cfg.top_k
    nh, dk, dv = cfg.input_attention.heads, cfg.input_attention.key_size, cfg.input_value_size
    hs = list(h.view(B, K, H).unbind(1))
    cs = list(c.view(B, K, H).unbind(1)) if c is not None else None
    X = torch.stack([torch.zeros_like(x), x], dim=1)  # (B, 2, D): the null input is a zero row
    keys = X @ cell.inp_key  # (B, 2, nh*dk)
    values = X @ cell.inp_value  # (B, 2, nh*dv)
    A, null_att = [], []
    for k in range(K):
        q = hs[k] @ cell.inp_query[k]  # (B, nh*dk)
        reads, nulls = [], []
        for a in range(nh):
            qa = q[:, a * dk:(a + 1) * dk]
            ka = keys[:, :, a * dk:(a + 1) * dk]
            va = values[:, :, a * dv:(a + 1) * dv]
            p = torch.softmax((ka @ qa.unsqueeze(-1)).squeeze(-1) / math.sqrt(dk), dim=-1)  # (B, 2)
            reads.append((p.unsqueeze(-1) * va).sum(1))
            nulls.append(p[:, 0])
        A.append(torch.cat(reads, dim=-1))
        null_att.append(torch.stack(nulls, -1).mean(-1))
    null_att = torch.stack(null_att, dim=1)  # (B, K)
    if active is None:
        active = torch.zeros(B, K, dtype=torch.bool)
        for b in range(B):
            order = sorted(range(K), key=lambda j: (null_att[b, j].item(), j))  # least null attention
            for j in order[:k_A]:
                active[b, j] = True
    new_h, new_c = [], []
    for k in range(K):
        gi = A[k] @ cell.weight_ih[k]
        gh = hs[k] @ cell.weight_hh[k]
        if cell.bias_ih is not None:
            gi, gh = gi + cell.bias_ih[k], gh + cell.bias_hh[k]
        m = active[:, k].unsqueeze(-1)
        if cfg.cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c1 = torch.sigmoid(f) * cs[k] + torch.sigmoid(i) * torch.tanh(g)
            h1 = torch.sigmoid(o) * torch.tanh(c1)
            new_c.append(torch.where(m, c1, cs[k]))
        else:
            ir, iz, in_ = gi.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            h1 = (1 - z) * n + z * hs[k]
        new_h.append(torch.where(m, h1, hs[k]))
    if cfg.comm.enabled:
        cm = cfg.comm
        w = 2 * cm.key_size + cm.value_size
        proj = [new_h[j] @ cell.comm_qkv[j] for j in range(K)]  # (B, heads*w) per unit
        out = []
        for k in range(K):
            reads = []
            for a in range(cm.heads):
                base = a * w
                q = proj[k][:, base:base + cm.key_size]
                ks = torch.stack([proj[j][:, base + cm.key_size:base + 2 * cm.key_size] for j in range(K)], 1)
                vs = torch.stack([proj[j][:, base + 2 * cm.key_size:base + w] for j in range(K)], 1)
                p = torch.softmax((ks @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(cm.key_size), dim=-1)
                reads.append((p.unsqueeze(-1) * vs).sum(1))
            r = torch.cat(reads, -1)  # the unit's read, (B, heads*dv)
            if cfg.comm_output == "residual":  # the paper's text: h = h~ + W^o r
                h2 = new_h[k] + r @ cell.comm_out[k]
            else:
                a_o, a_g = r @ cell.comm_out[k], r @ cell.comm_gate[k]
                if cell.comm_out_bias is not None:
                    a_o, a_g = a_o + cell.comm_out_bias[k], a_g + cell.comm_gate_bias[k]
                gate, cand = torch.sigmoid(a_g), torch.tanh(a_o)
                if cfg.comm_output == "gated_residual":  # the official code: h = h~ + g * tanh(W^o r + b^o)
                    h2 = new_h[k] + gate * cand
                else:  # convex: h = (1 - g) h~ + g tanh(W^o r + b^o)
                    h2 = (1 - gate) * new_h[k] + gate * cand
            out.append(torch.where(active[:, k].unsqueeze(-1), h2, new_h[k]))
        new_h = out
    h2 = torch.stack(new_h, 1).reshape(B, K * H)
    c2 = torch.stack(new_c, 1).reshape(B, K * H) if c is not None else None
    return h2, c2, active

"""One RIM step's arithmetic, written once: the autograd path (RIMCell.step) and the fused forward (RIMScan)
both call ``rim_step``; only the fused backward (fused.py) is written by hand.

The step, on unit-first states (the module docstring of rims_core.cell gives the paper's equations):
  scores      hq = h [W^hh | W^q]; att = sigmoid(q . key), the attention on x_t (the null row's score is 0)
  selection   active = the top_k units by att (select_units), and only samples whose step is valid
  gates       LSTM: sigmoid over all four gates (the g block carries a factor 2); GRU: r, z, n
  update      active units take the cell's h~ (and c~), inactive ones keep theirs bit for bit
  comm        active units read all units' h~ through multi-head attention and update as comm.output says

Shape legend: K units, B batch, H unit size, G gate width (4H for LSTM, 3H for GRU), nh/dk input heads and key
size, ch/ck/cv communication heads, key and value size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .config import CommConfig, RIMConfig

__all__ = ["STEP_KEYS", "Prepared", "comm_heads", "comm_pre", "comm_read", "comm_update", "rim_step",
           "select_units"]

# per-step tensors rim_step hands to ``keep`` for the fused backward (unit-first): the state before the step
# (h, c; appended by the caller), the gates' sigmoids (sg), tanh(c) or W_hn h (x2), h~ (ht), the communication
# projections (qkv) and the bounded output's sigmoids (co)
STEP_KEYS = ("h", "c", "sg", "x2", "ht", "qkv", "co")


class Prepared(NamedTuple):
    """Per-scan weights (see RIMCell.prepare)."""

    w_hq: Tensor  # (K, H, G + nh*dk): [W^hh | W^q / sqrt(dk)]
    b_hq: Tensor | None  # (K, 1, G + nh*dk)
    b_ih: Tensor | None  # (K, 1, G), GRU only
    gate_scale: Tensor | None  # (G,), for the input maps; None where only the step reads the weights (RIMScan)
    comm_qkv: Tensor | None  # (K, H, heads * (2 dk + dv)), q columns / sqrt(dk)
    comm_w: Tensor | None  # (K, heads*dv, H) residual: W^o; bounded forms (K, heads*dv, 2H): [2 W^o | W^g]
    comm_b: Tensor | None  # (K, 1, 2H): [2 b^o | b^g], bounded forms with bias only


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 on CPU, where torch's sigmoid is vectorised and tanh is ~5x slower;
    the two agree to 2e-7 in float32. torch.tanh elsewhere."""
    return torch.tanh(x) if x.device.type != "cpu" else 2 * torch.sigmoid(2 * x) - 1


def select_units(cfg: RIMConfig, score: Tensor, order: Tensor | None = None) -> Tensor:
    """score: (K, B) attention on the real input (averaged over heads) -> active mask (K, B), bool.

    topk keeps the k units that attend least to the null row, i.e. most to x_t. Exact ties (every unit
    scores 1/2 at a zero state) are broken by ``order``, a (K, B) random permutation of the units per
    sample (RIMCell.tie_orders, drawn in training), else by the lower unit index (eval: deterministic).
    """
    K, k = cfg.num_units, cfg.top_k
    if k == K:
        return torch.ones_like(score, dtype=torch.bool)
    if cfg.selection == "random":
        score = torch.rand(score.shape, device=score.device)
    if order is None:
        idx = torch.argsort(score, dim=0, descending=True, stable=True)[:k]  # (k, B)
    else:  # a stable sort of the randomly ordered units: tied units keep their random order
        idx = order.gather(0, torch.argsort(score.gather(0, order), dim=0, descending=True, stable=True)[:k])
    return torch.zeros_like(score, dtype=torch.bool).scatter_(0, idx, True)


def comm_heads(qkv: Tensor, comm: CommConfig) -> tuple[Tensor, Tensor, Tensor]:
    """qkv (K, B, ch*(2ck+cv)) -> q, k (B, ch, K, ck) and v (B, ch, K, cv), head-major for the attention."""
    K, B, _ = qkv.shape
    ck, cv = comm.key_size, comm.value_size
    return qkv.view(K, B, comm.heads, 2 * ck + cv).permute(1, 2, 0, 3).split([ck, ck, cv], dim=-1)


def comm_read(att: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Each unit's read of all units: att (B, ch, K, K) (dropout mask of the same shape, or None), v (B, ch, K, cv)
    -> (K, B, ch*cv)."""
    B, ch, K, cv = v.shape
    return ((att if mask is None else att * mask) @ v).permute(2, 0, 1, 3).reshape(K, B, ch * cv)


def comm_pre(read: Tensor, comm_w: Tensor, comm_b: Tensor | None) -> Tensor:
    """The bounded output forms' pre-activation read [2 W^o | W^g] (+ b): read (K, B, ch*cv), comm_w
    (K, ch*cv, 2H), comm_b (K, 1, 2H) or None -> (K, B, 2H). The forward step and the backward that recomputes it
    (RIMCell.recompute) share it, so both compute the same values."""
    return torch.bmm(read, comm_w) if comm_b is None else torch.baddbmm(comm_b, read, comm_w)


def comm_update(h: Tensor, m: Tensor, read: Tensor, w: Prepared, form: str) -> tuple[Tensor, Tensor | None]:
    """Active units (m (K, B, 1)) take the read into h~ (K, B, H) as comm.output ``form`` says.

    Returns the new h and, for the bounded forms, s = sigmoid(read [2 W^o | W^g] + b) = [(t + 1) / 2 | g],
    t = tanh(read W^o + b^o), which the fused backward keeps (None for the residual form).
    """
    if form == "residual":  # h = h~ + read W^o
        if read.dtype == h.dtype:
            return torch.where(m, torch.baddbmm(h, read, w.comm_w), h), None
        # autocast: baddbmm would round h to the autocast dtype; add in h's own precision instead
        return torch.where(m, h + torch.bmm(read, w.comm_w).to(h.dtype), h), None
    pre = comm_pre(read, w.comm_w, w.comm_b)
    s = torch.sigmoid(pre)  # (K, B, 2H)
    if s.dtype != h.dtype:  # autocast: the update in h's own precision
        s = s.to(h.dtype)
    H = h.shape[-1]
    t, g = 2 * s[..., :H] - 1, s[..., H:]
    new = torch.addcmul(h, g, t) if form == "gated_residual" else torch.addcmul(h, g, t - h)  # convex: (1-g) h~ + g t
    return torch.where(m, new, h), s


def rim_step(
    cfg: RIMConfig, w: Prepared, h: Tensor, c: Tensor | None, key: Tensor, u: Tensor,
    valid: Tensor | None = None, in_mask: Tensor | None = None, comm_mask: Tensor | None = None,
    order: Tensor | None = None, keep: dict[str, list[Tensor]] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """One step on unit-first states.

    h, c: (K, B, H) (c None for GRU cells); key: (B, nh, dk); u: (K, B, nh*G) or (K, B, nh, G), the input part
    of the gates before scaling by attention (RIMCell.input_maps); w: RIMCell.prepare's weights; valid: (B,) bool
    or None (False freezes a sample); in_mask (K, B, nh) and comm_mask (B, ch, K, K): this step's dropout masks,
    scaled, or None; order (K, B): the tie-breaking unit order or None; keep: lists that receive the tensors the
    fused backward needs (STEP_KEYS but h and c), or None.

    Returns h, c (K, B, H), active (K, B) bool, att (K, B, nh) (before dropout) and the communication attention
    (B, ch, K, K) or None.
    """
    K, B, _H = h.shape
    nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
    lstm = cfg.cell == "lstm"
    G = w.w_hq.shape[-1] - nh * dk
    hq = torch.bmm(h, w.w_hq) if w.b_hq is None else torch.baddbmm(w.b_hq, h, w.w_hq)  # (K, B, G + nh*dk)
    gh, q = hq[..., :G], hq[..., G:]
    att = torch.sigmoid((q.view(K, B, nh, dk) * key).sum(-1))  # (K, B, nh) = softmax([0, s])[1] per head
    active = select_units(cfg, att.squeeze(-1) if nh == 1 else att.mean(-1), order)  # (K, B)
    if valid is not None:
        active = active & valid
    a = att if in_mask is None else att * in_mask
    base = gh if lstm else w.b_ih  # LSTM: the whole pre-activation; GRU: the input part only
    if nh == 1:
        u1 = u if u.dim() == 3 else u.reshape(K, B, G)  # the fused scan passes (K, B, G) already
        gi = a * u1 if base is None else torch.addcmul(base, a, u1)  # (K, B, G)
    else:
        gi = (a.unsqueeze(-1) * u.reshape(K, B, nh, G)).sum(-2)
        gi = gi if base is None else gi + base
    m = active.unsqueeze(-1)  # (K, B, 1)
    if lstm:
        sg = torch.sigmoid(gi)
        i, f, g, o = sg.chunk(4, dim=-1)  # g holds (tanh(g) + 1) / 2
        c_new = f * c + i * (2 * g - 1)
        tc = _tanh(c_new)
        h_new = o * tc
        c = torch.where(m, c_new if c_new.dtype == c.dtype else c_new.to(c.dtype), c)  # .to: autocast only
        if keep is not None:
            keep["sg"].append(sg)
            keep["x2"].append(tc)
    else:
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = _tanh(torch.addcmul(in_, r, hn))
        h_new = torch.addcmul(n, z, h - n)  # = (1 - z) n + z h
        if keep is not None:
            keep["sg"].append(torch.cat([r, z, n], dim=-1))
            keep["x2"].append(hn.contiguous())
    if h_new.dtype != h.dtype:  # autocast; .to even as a no-op costs ~3% of a small fused forward
        h_new = h_new.to(h.dtype)
    h = torch.where(m, h_new, h)  # inactive units keep h bit for bit
    P = None
    if w.comm_qkv is not None:
        qkv = torch.bmm(h, w.comm_qkv)  # (K, B, ch*(2ck+cv)); q carries 1/sqrt(ck)
        qc, kc, vc = comm_heads(qkv, cfg.comm)
        P = torch.softmax(qc @ kc.transpose(-1, -2), dim=-1)  # (B, ch, K, K)
        h_tilde = h
        h, s = comm_update(h, m, comm_read(P, vc, comm_mask), w, cfg.comm_output)
        if keep is not None:
            keep["ht"].append(h_tilde)
            keep["qkv"].append(qkv)
            if s is not None:
                keep["co"].append(s)
    return h, c, active, att, P

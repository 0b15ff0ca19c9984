"""The RIM scan as one autograd Function with a hand-written backward.

Autograd through the step loop records ~45 nodes per step and computes every weight gradient as a
small per-step matmul. Here the forward runs the same step (rims_core.step.rim_step) without recording,
keeps only what the backward needs, and the backward walks the steps in reverse with fused pointwise
formulas, collecting the per-step gradients of the weights and doing one large matmul per weight at the end.
The step path (RIMCell.step, autograd through the same rim_step) serves torch.compile; tests check that both
give the same outputs and gradients. Under autocast the scan runs in fp32 on input maps computed in the autocast
dtype (RIMCell.scan).

With RIMCell.recompute the forward keeps less and the backward recomputes the rest (see _Compact): saved
activations drop from about 2.3x to 0.9x of cuDNN nn.LSTM's at the paper's size (docs/benchmarks.md).

Storage is per step (lists of (K, B, .) tensors), never one (T, K, B, .) buffer: buffers of tens of MB are
fresh mmap'd pages on every call (glibc never recycles blocks above 32 MB), and the first-touch page faults
cost more than the arithmetic. For the same reason u_t = z_t w_u is recomputed per step instead of stored.

Shape legend: T time, K units, B batch, H unit size, G gate width, nh/dk input heads and key size,
ch/ck/cv communication heads, key and value size. Everything here is unit-first: (K, B, ...).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .step import STEP_KEYS, Prepared, _tanh, comm_heads, comm_pre, comm_read, rim_step
from .triton_step import (
    triton_cell_backward,
    triton_comm_backward,
    triton_keep_rows,
    triton_rebuild,
    triton_rim_step,
)

__all__ = ["RIMScan", "cell_backward", "comm_backward"]


class _Sizes(NamedTuple):
    T: int
    B: int
    K: int
    H: int
    nh: int
    dk: int
    G: int


def _sizes(keys: Tensor, z: Tensor, w_hq: Tensor) -> _Sizes:
    """The scan's sizes, read off its inputs: keys (T, B, nh, dk), z (T, B, F), w_hq (K, H, G + nh*dk)."""
    T, B, _ = z.shape
    K, H, width = w_hq.shape
    nh, dk = keys.shape[-2], keys.shape[-1]
    return _Sizes(T, B, K, H, nh, dk, width - nh * dk)


def _chunk(T: int, K: int, B: int, width: int, itemsize: int, budget: int = 8 << 20) -> int:
    """Steps per chunk of u: as many as fit in ~8 MB (malloc recycles blocks that size; see above)."""
    return max(1, min(T, budget // max(1, K * B * width * itemsize)))


def _u_chunk(z: Tensor, w_u: Tensor, t0: int, S: int) -> Tensor:
    """u for steps t0 .. t0+S-1: (K, S', B, nh*G) from z (T, B, F) and w_u (K, F, nh*G)."""
    zc = z[t0:t0 + S]
    S_, B, F = zc.shape
    K = w_u.shape[0]
    # bmm over an explicit copy of z per unit: about 2x faster than matmul's broadcast for small F
    return torch.bmm(zc.reshape(1, S_ * B, F).expand(K, -1, -1).contiguous(), w_u).view(K, S_, B, -1)


def _kept_rows(active: Tensor, k: int) -> Tensor:
    """active (K, B) bool -> (k*B,) rows of a (K*B, .) view: per sample the active units first (in unit order),
    then inactive ones where a sample has fewer than k (frozen samples); the rows of sg that recompute keeps.
    Row indices, not a gather/scatter along the units: index_select / index_copy_ move whole rows, 4-10x faster
    on a CPU at the paper's size."""
    B = active.shape[1]
    units = torch.argsort(active.to(torch.uint8), dim=0, descending=True, stable=True)[:k]  # (k, B)
    return (units * B + torch.arange(B, device=active.device)).reshape(-1)


class _Compact:
    """What RIMCell.recompute keeps of a step, and how the backward rebuilds the rest.

    Only active units change state, so the backward reads the gates' sigmoids (sg) of the active units only:
    the forward keeps those k_A rows of K. x2 = tanh(c') is tanh of the next state for active units (LSTM; the
    state list gets c_T so that every step has its next state), h~ follows from sg, x2 and h, the communication
    projections qkv = h~ W^qkv are one bmm, and the bounded forms' sigmoids come from the read the backward
    computes anyway. The rebuilt tensors equal the saved ones wherever the backward reads them: the rows of sg
    not kept, all of inactive units, are zeros, and every term they enter is multiplied by the zero gradient of
    an inactive unit.
    """

    def __init__(self, cfg, triton: bool):
        self.k, self.K = cfg.top_k, cfg.num_units
        self.lstm = cfg.cell == "lstm"
        self.triton = triton  # the step ran as Triton kernels: keep and rebuild in one kernel each (triton_step)

    def keep(self, st: dict[str, list[Tensor]], active: Tensor) -> None:
        """Replace the step's just-appended tensors by what recompute keeps."""
        if self.k < self.K:
            sg = st["sg"][-1]  # (K, B, G) -> (k*B, G)
            st["sg"][-1] = (triton_keep_rows(sg, active, self.k) if self.triton
                            else sg.reshape(-1, sg.shape[-1]).index_select(0, _kept_rows(active, self.k)))
        for key in ("ht", "qkv", "co") + (("x2",) if self.lstm else ()):
            if st[key]:
                st[key].pop()

    def sg(self, sg: Tensor, active: Tensor) -> Tensor:
        """(k*B, G) kept rows -> (K, B, G), zeros at the units not kept."""
        if self.k == self.K:
            return sg
        K, B = active.shape
        return sg.new_zeros(K * B, sg.shape[-1]).index_copy_(0, _kept_rows(active, self.k), sg).view(K, B, -1)

    def rebuild(self, kept: Tensor, active: Tensor, h_prev: Tensor, c_next: Tensor | None, x2: Tensor | None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """What the step saved, rebuilt: sg (K, B, G) from the kept rows, x2 (LSTM: tanh of the next state
        c_next; GRU: the saved x2 = W_hn h) and h~ = where(active, the cell's h, h_prev), each (K, B, H)."""
        if self.triton and self.k < self.K:
            return triton_rebuild(kept, active, h_prev, c_next, x2)
        sg = self.sg(kept, active)
        return (sg, *self.x2_ht(sg, active, h_prev, c_next, x2))

    def x2_ht(self, sg: Tensor, active: Tensor, h_prev: Tensor, c_next: Tensor | None, x2: Tensor | None
              ) -> tuple[Tensor, Tensor]:
        """x2 (LSTM: tanh of the next state; GRU: the saved W_hn h) and h~ = where(active, the cell's h, h_prev),
        each (K, B, H)."""
        m = active.unsqueeze(-1)
        if self.lstm:
            x2 = _tanh(c_next)  # as rim_step took it (on CUDA the Triton kernels' form differs by rounding)
            h_new = sg[..., 3 * x2.shape[-1]:] * x2
        else:
            _r, z, n = sg.chunk(3, dim=-1)
            h_new = torch.addcmul(n, z, h_prev - n)
        return x2, torch.where(m, h_new, h_prev)


class _CommGrads(NamedTuple):
    """The communication weights' gradients, accumulated in place over the steps."""

    qkv: Tensor  # like comm_qkv
    w: Tensor  # like comm_w
    b: Tensor | None  # like comm_b


def comm_backward(cfg, dh: Tensor, active: Tensor, ht: Tensor, qkv: Tensor, P: Tensor, cmask: Tensor | None,
                  co: Tensor | None, comm_w_t: Tensor, comm_qkv_t: Tensor,
                  grads: _CommGrads, comm_w: Tensor | None = None, comm_b: Tensor | None = None) -> Tensor:
    """One step's communication backward: dh (K, B, H), the gradient of h_t, -> the gradient of h~ (K, B, H).

    active (K, B) bool; ht = h~ (K, B, H), qkv (K, B, ch*(2ck+cv)), P (B, ch, K, K), cmask (B, ch, K, K) or None,
    co (K, B, 2H) the bounded forms' sigmoids or None: what the forward step saved. A bounded form with co None
    recomputes it from the read and comm_w (K, ch*cv, 2H), comm_b (K, 1, 2H) or None (RIMCell.recompute).
    Accumulates into grads."""
    K, B, H = dh.shape
    ch, cv = cfg.comm.heads, cfg.comm.value_size
    form = cfg.comm_output
    m = active.unsqueeze(-1)
    qc, kc, vc = comm_heads(qkv, cfg.comm)
    Pd = P if cmask is None else P * cmask
    read = comm_read(Pd, vc, None)  # as rim_step read it
    d_upd = dh * m
    if form == "residual":  # upd = read W^o
        d_pre = d_upd
    else:  # upd = g t (gated_residual) or g (t - h~) (convex); [so | g] = sigmoid(pre)
        if co is None:
            co = torch.sigmoid(comm_pre(read, comm_w, comm_b))
        so, g = co[..., :H], co[..., H:]
        t_o = 2 * so - 1
        d_pre = torch.cat([2 * d_upd * g * so * (1 - so),
                           d_upd * (t_o if form == "gated_residual" else t_o - ht) * g * (1 - g)], dim=-1)
        if form == "convex":
            dh = dh - d_upd * g  # h~ enters with weight 1 - g
        if grads.b is not None:
            grads.b.add_(d_pre.sum(1, keepdim=True))
    grads.w.baddbmm_(read.transpose(1, 2), d_pre)
    d_read = torch.bmm(d_pre, comm_w_t).view(K, B, ch, cv).permute(1, 2, 0, 3)  # (B, ch, K, cv)
    d_v = Pd.transpose(-1, -2) @ d_read
    d_P = d_read @ vc.transpose(-1, -2)
    if cmask is not None:
        d_P = d_P * cmask
    d_S = P * (d_P - (d_P * P).sum(-1, keepdim=True))  # softmax backward
    d_qkv = torch.cat([d_S @ kc, d_S.transpose(-1, -2) @ qc, d_v], dim=-1)
    d_qkv = d_qkv.permute(2, 0, 1, 3).reshape(K, B, -1)
    grads.qkv.baddbmm_(ht.transpose(1, 2), d_qkv)
    return torch.baddbmm(dh, d_qkv, comm_qkv_t)


def cell_backward(cfg, dh: Tensor, dc: Tensor | None, active: Tensor, sg: Tensor, x2: Tensor, c_prev: Tensor | None,
                  h_prev: Tensor, att: Tensor, in_mask: Tensor | None, ut: Tensor, key: Tensor, d_u: Tensor,
                  d_hq: Tensor, d_b_ih: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """One step's cell and input-attention backward, up to (not including) the recurrent matmul.

    dh (K, B, H): the gradient of h~; dc (K, B, H) or None (GRU); active (K, B) bool; sg, x2, c_prev, h_prev:
    what the forward step saved; att (K, B, nh); in_mask (K, B, nh) or None; ut (K, B, nh*G) this step's input
    part; key (B, nh, dk). Writes d_u (K, B, nh*G) and d_hq (K, B, G + nh*dk), accumulates d_b_ih (GRU).
    Returns the gradient of h_prev except through hq (K, B, H), of c_prev (K, B, H) or None, and of the scores
    s = q . key (K, B, nh)."""
    K, B, H = dh.shape
    nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
    G = sg.shape[-1]
    m = active.unsqueeze(-1)
    d_new = dh * m
    dh_prev = dh - d_new  # inactive units pass the gradient straight through
    if cfg.cell == "lstm":
        i, f, g, o = sg.chunk(4, dim=-1)
        tc = x2
        dc_new = dc * m + d_new * o * (1 - tc * tc)
        dc = dc - dc * m + dc_new * f
        d_gates = d_hq[..., :G]  # written in place: i, f, g, o blocks
        d_gates[..., :H] = dc_new * (2 * g - 1) * i * (1 - i)
        d_gates[..., H:2 * H] = dc_new * c_prev * f * (1 - f)
        d_gates[..., 2 * H:3 * H] = 2 * dc_new * i * g * (1 - g)
        d_gates[..., 3 * H:] = d_new * tc * o * (1 - o)
        d_gi = d_gates
    else:
        r, zg, n = sg.chunk(3, dim=-1)
        hn = x2
        dn = d_new * (1 - zg)
        dz = d_new * (h_prev - n)
        dh_prev = dh_prev + d_new * zg
        dpn = dn * (1 - n * n)
        dpr, dpz = dpn * hn * r * (1 - r), dz * zg * (1 - zg)
        d_gi = torch.cat([dpr, dpz, dpn], dim=-1)
        d_hq[..., :G] = torch.cat([dpr, dpz, dpn * r], dim=-1)
        if d_b_ih is not None:
            d_b_ih += d_gi.sum(1, keepdim=True)
    # input attention: gates_in = sum_h a_h u_h, a = sigmoid(s) * mask, s = q . key
    a = att if in_mask is None else att * in_mask
    if nh == 1:
        d_a = (d_gi * ut).sum(-1, keepdim=True)  # (K, B, 1)
        torch.mul(d_gi, a, out=d_u)
    else:
        d_a = (d_gi.unsqueeze(-2) * ut.view(K, B, nh, G)).sum(-1)  # (K, B, nh)
        d_u.copy_((d_gi.unsqueeze(-2) * a.unsqueeze(-1)).view(K, B, nh * G))
    d_att = d_a if in_mask is None else d_a * in_mask
    d_s = d_att * att * (1 - att)  # (K, B, nh)
    d_hq[..., G:] = (d_s.unsqueeze(-1) * key).view(K, B, nh * dk)
    return dh_prev, dc, d_s


class RIMScan(torch.autograd.Function):
    """apply(cell, save, keys, z, w_u, h0, c0, w_hq, b_hq, b_ih, comm_qkv, comm_w, comm_b, in_mask, comm_mask, valid,
    orders).

    keys (T, B, nh, dk), z (T, B, F) and w_u (K, F, nh*G) from RIMCell.input_maps; h0/c0 (K, B, H) (c0 an
    empty tensor for GRU cells); prepared weights as in RIMCell.prepare; dropout masks in_mask (T, K, B, nh)
    and comm_mask (T, B, ch, K, K) already scaled by 1/(1-p), or None; valid (T, B) bool or None; orders
    (T, K, B) tie-breaking unit orders (RIMCell.tie_orders) or None; save: keep what backward needs (grad
    enabled and some input requires it).
    Returns out (T, K, B, H), h_T, c_T (K, B, H), active (T, K, B), att (T, K, B, nh), comm_att (T, B, ch, K, K).
    """

    @staticmethod
    def forward(ctx: Any, cell, save, keys, z, w_u, h, c, w_hq, b_hq, b_ih, comm_qkv, comm_w, comm_b, in_mask,
                comm_mask, valid, orders):
        cfg = cell.config
        lstm, comm = cfg.cell == "lstm", comm_qkv is not None
        T, B, K = _sizes(keys, z, w_hq)[:3]
        w = Prepared(w_hq, b_hq, b_ih, None, comm_qkv, comm_w, comm_b)
        S = _chunk(T, K, B, w_u.shape[-1], w_u.element_size())
        # the step: three Triton kernels on CUDA (rims_core.triton_step; same saved tensors), else rim_step
        step = triton_rim_step if cell.triton_enabled(z.device, z.dtype) else rim_step
        compact = _Compact(cfg, step is triton_rim_step) if save and cell.recompute else None
        outs, acts, atts, Ps = [], [], [], []
        st: dict[str, list[Tensor]] = {k: [] for k in STEP_KEYS}
        for t in range(T):
            if t % S == 0:  # the input part of the gates, S steps at a time: big matmuls, no T-sized buffer
                u_chunk = _u_chunk(z, w_u, t, S)
            if save:
                st["h"].append(h)
                if lstm:
                    st["c"].append(c)
            h, c, active, att, P = step(
                cfg, w, h, c if lstm else None, keys[t], u_chunk[:, t % S],  # u: (K, B, nh*G)
                None if valid is None else valid[t], None if in_mask is None else in_mask[t],
                None if comm_mask is None else comm_mask[t], None if orders is None else orders[t],
                st if save else None)
            if compact is not None:
                compact.keep(st, active)
            acts.append(active)
            atts.append(att)
            if comm:
                Ps.append(P)
            outs.append(h if valid is None else h * valid[t].unsqueeze(-1))
        act_all, att_all = torch.stack(acts), torch.stack(atts)
        P_all = torch.stack(Ps) if comm else h.new_empty(0)
        if save:
            if compact is not None and lstm:
                st["c"].append(c)  # every step's next state: x2 = tanh(c') is recomputed from it
            ctx.cell, ctx.chunk, ctx.triton, ctx.compact = cell, S, step is triton_rim_step, compact
            ctx.counts = [len(st[k]) for k in STEP_KEYS]
            # everything goes through save_for_backward, so saved-tensor hooks (offloading, memory accounting)
            # see all of it
            ctx.save_for_backward(keys, z, w_u, w_hq, b_hq, b_ih, comm_qkv, comm_w, comm_b, in_mask, comm_mask,
                                  valid, act_all, att_all, P_all, *(x for k in STEP_KEYS for x in st[k]))
        ctx.mark_non_differentiable(act_all, att_all, P_all)
        return torch.stack(outs), h, (c if lstm else h.new_empty(0)), act_all, att_all, P_all

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out, d_hT, d_cT, _d_act, _d_att, _d_P):
        # a backward called inside an autocast region (CPU backward runs on the caller's thread) stays in the
        # forward's precision: the saved tensors are fp32 and the formulas mix them with fresh matmuls
        with torch.autocast(d_out.device.type, enabled=False):
            return RIMScan._backward(ctx, d_out, d_hT, d_cT)

    @staticmethod
    def _backward(ctx: Any, d_out, d_hT, d_cT):
        (keys, z, w_u, w_hq, b_hq, b_ih, comm_qkv, comm_w, comm_b, in_mask, comm_mask, valid,
         ACT, ATT, P_all, *flat) = ctx.saved_tensors
        st, i0 = {}, 0
        for k, n in zip(STEP_KEYS, ctx.counts, strict=True):
            st[k], i0 = flat[i0:i0 + n], i0 + n
        S = ctx.chunk
        cfg = ctx.cell.config
        lstm, comm, form = cfg.cell == "lstm", comm_qkv is not None, cfg.comm_output
        T, B, K, _H, nh, dk, G = _sizes(keys, z, w_hq)
        dh = d_hT.clone()
        dc = d_cT.clone() if lstm else None
        d_keys, d_z = [], []
        d_w_hq = torch.zeros_like(w_hq)
        d_w_u = torch.zeros_like(w_u)
        d_b_hq = torch.zeros_like(b_hq) if b_hq is not None else None
        d_b_ih = torch.zeros_like(b_ih) if b_ih is not None else None
        w_hq_t = w_hq.transpose(1, 2).contiguous()
        w_q = w_hq[..., G:]
        w_u_t = w_u.transpose(1, 2).contiguous()
        d_hq = w_hq.new_empty(K, B, G + nh * dk)
        if comm:
            d_comm_qkv = torch.zeros_like(comm_qkv)
            d_comm_w = torch.zeros_like(comm_w)
            d_comm_b = torch.zeros_like(comm_b) if comm_b is not None else None
            comm_w_t = comm_w.transpose(1, 2).contiguous()
            comm_qkv_t = comm_qkv.transpose(1, 2).contiguous()
        comm_grads = _CommGrads(d_comm_qkv, d_comm_w, d_comm_b) if comm else None
        compact = ctx.compact
        # the per-step backward: Triton kernels where the forward ran them (rims_core.triton_step), else torch
        comm_bwd, cell_bwd = (triton_comm_backward, triton_cell_backward) if ctx.triton else (comm_backward,
                                                                                              cell_backward)
        for t in range(T - 1, -1, -1):
            if t == T - 1 or t % S == S - 1:
                t0 = t - t % S
                u_chunk = _u_chunk(z, w_u, t0, S)  # recomputed, (K, S', B, nh*G)
                d_u_chunk = torch.empty_like(u_chunk)
            dh = dh + (d_out[t] if valid is None else d_out[t] * valid[t].unsqueeze(-1))
            h_prev = st["h"][t]
            if compact is None:
                sg, x2 = st["sg"][t], st["x2"][t]
                if comm:
                    ht, qkv, co = st["ht"][t], st["qkv"][t], st["co"][t] if form != "residual" else None
            else:  # RIMCell.recompute: rebuild what the forward did not keep
                sg, x2, ht = compact.rebuild(st["sg"][t], ACT[t], h_prev, st["c"][t + 1] if lstm else None,
                                             None if lstm else st["x2"][t])
                if comm:
                    qkv, co = torch.bmm(ht, comm_qkv), None  # co from the read, in comm_bwd
            if comm:  # h_t = h~ + m * upd(read, h~), read = dropout(softmax(q k^T)) v; dh becomes d h~
                dh = comm_bwd(cfg, dh, ACT[t], ht, qkv, P_all[t], None if comm_mask is None else comm_mask[t], co,
                              comm_w_t, comm_qkv_t, comm_grads, comm_w, comm_b)
            dh_prev, dc, d_s = cell_bwd(
                cfg, dh, dc, ACT[t], sg, x2, st["c"][t] if lstm else None, h_prev, ATT[t],
                None if in_mask is None else in_mask[t], u_chunk[:, t - t0], keys[t], d_u_chunk[:, t - t0], d_hq,
                d_b_ih)
            if t == t0:  # chunk done: its share of d w_u and d z in two large matmuls
                n_rows = d_u_chunk.shape[1] * B
                zc = z[t0:t0 + d_u_chunk.shape[1]].reshape(n_rows, -1)
                du = d_u_chunk.view(K, n_rows, -1)
                d_w_u += torch.matmul(zc.t(), du)
                d_z.append(torch.bmm(du, w_u_t).sum(0).view(-1, B, zc.shape[-1]))
            q = torch.bmm(h_prev, w_q).view(K, B, nh, dk)  # recomputed
            d_keys.append((d_s.unsqueeze(-1) * q).sum(0))
            d_w_hq.baddbmm_(h_prev.transpose(1, 2), d_hq)
            if d_b_hq is not None:
                d_b_hq += d_hq.sum(1, keepdim=True)
            dh = torch.baddbmm(dh_prev, d_hq, w_hq_t)
        d_keys.reverse()
        d_z.reverse()
        return (None, None, torch.stack(d_keys), torch.cat(d_z), d_w_u, dh, dc if lstm else None, d_w_hq, d_b_hq,
                d_b_ih, d_comm_qkv if comm else None, d_comm_w if comm else None, d_comm_b if comm else None,
                None, None, None, None)

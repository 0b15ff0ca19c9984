"""The Triton kernels behind rims_core.triton_step (imported only from there, on first use: triton is optional).

Every kernel computes in float32 and stores in its output's dtype. Tensors are unit-first and contiguous: the
element (k, b, x) of a (K, B, X) tensor is at (k * B + b) * X + x. Sizes that tl.arange needs as powers of
two come padded (KP >= K, HP >= H, ...), with masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["comm_attn_kernel", "comm_update_kernel", "gates_kernel"]


@triton.jit
def _tanh(x):
    # 2 sigmoid(2x) - 1: the CPU path's form (rims_core.step._tanh); tl has no portable tanh
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def gates_kernel(
    hq, key, u, h, c, b_ih, valid, in_mask, order, rand,
    h_out, c_out, active, att, sg, x2,
    B, K, H, G, dk,
    NH: tl.constexpr, TOPK: tl.constexpr, LSTM: tl.constexpr, HAS_BIH: tl.constexpr, HAS_VALID: tl.constexpr,
    HAS_INMASK: tl.constexpr, HAS_ORDER: tl.constexpr, HAS_RAND: tl.constexpr,
    KP: tl.constexpr, DKP: tl.constexpr, HP: tl.constexpr,
):
    """Program (b, k): unit k of sample b. Scores of all K units (to rank unit k), selection, the gates and the
    masked state update. hq (K, B, G + NH*dk), key (B, NH, dk), u (K, B, NH*G), h/c (K, B, H), b_ih (K, 1, G),
    valid (B,) int8, in_mask (K, B, NH), order (K, B) int64, rand (K, B); out: h_out/c_out (K, B, H), active
    (K, B) int8, att (K, B, NH), sg (K, B, G), x2 (K, B, H)."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    W = G + NH * dk
    kk = tl.arange(0, KP)
    dd = tl.arange(0, DKP)
    hh = tl.arange(0, HP)
    kmask = kk < K
    hmask = hh < H
    row = k * B + b
    # the gates' pre-activations: LSTM i, f, g, o = h W^hh + b (+ attention x input, below);
    # GRU: the input part r, z, n starts at b_ih, the hidden part is read below
    if LSTM:
        g0 = tl.load(hq + row * W + hh, mask=hmask, other=0.0).to(tl.float32)
        g1 = tl.load(hq + row * W + H + hh, mask=hmask, other=0.0).to(tl.float32)
        g2 = tl.load(hq + row * W + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        g3 = tl.load(hq + row * W + 3 * H + hh, mask=hmask, other=0.0).to(tl.float32)
    else:
        g3 = tl.zeros((HP,), dtype=tl.float32)
        if HAS_BIH:
            g0 = tl.load(b_ih + k * G + hh, mask=hmask, other=0.0).to(tl.float32)
            g1 = tl.load(b_ih + k * G + H + hh, mask=hmask, other=0.0).to(tl.float32)
            g2 = tl.load(b_ih + k * G + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        else:
            g0 = tl.zeros((HP,), dtype=tl.float32)
            g1 = tl.zeros((HP,), dtype=tl.float32)
            g2 = tl.zeros((HP,), dtype=tl.float32)
    sel = tl.zeros((KP,), dtype=tl.float32)
    for hd in tl.static_range(NH):
        # scores of every unit for head hd: sigmoid(q . key), the softmax over [null, x_t] at x_t
        q = tl.load(hq + (kk[:, None] * B + b) * W + G + hd * dk + dd[None, :],
                    mask=kmask[:, None] & (dd[None, :] < dk), other=0.0).to(tl.float32)
        kv = tl.load(key + (b * NH + hd) * dk + dd, mask=dd < dk, other=0.0).to(tl.float32)
        a_all = tl.sigmoid(tl.sum(q * kv[None, :], axis=1))  # (KP,)
        sel += a_all
        a_me = tl.sum(tl.where(kk == k, a_all, 0.0), axis=0)
        tl.store(att + row * NH + hd, a_me)
        if HAS_INMASK:
            a_me = a_me * tl.load(in_mask + row * NH + hd).to(tl.float32)
        g0 += a_me * tl.load(u + row * NH * G + hd * G + hh, mask=hmask, other=0.0).to(tl.float32)
        g1 += a_me * tl.load(u + row * NH * G + hd * G + H + hh, mask=hmask, other=0.0).to(tl.float32)
        g2 += a_me * tl.load(u + row * NH * G + hd * G + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        if LSTM:
            g3 += a_me * tl.load(u + row * NH * G + hd * G + 3 * H + hh, mask=hmask, other=0.0).to(tl.float32)
    # selection: unit k is active if fewer than TOPK units beat it (a higher score, or an equal score and an
    # earlier place in the tie order): select_units' stable descending sort
    if TOPK >= K:
        act = tl.full((), 1, tl.int1)
    else:
        if HAS_RAND:
            sel = tl.load(rand + kk * B + b, mask=kmask, other=0.0).to(tl.float32)
        elif NH > 1:
            sel = sel / NH
        if HAS_ORDER:  # order[j, b] is the unit at place j; pos[unit] = its place
            ordv = tl.load(order + kk * B + b, mask=kmask, other=-1)
            pos = tl.sum(tl.where(ordv[None, :] == kk[:, None], kk[None, :], 0), axis=1)
        else:
            pos = kk
        s_me = tl.sum(tl.where(kk == k, sel, 0.0), axis=0)
        p_me = tl.sum(tl.where(kk == k, pos, 0), axis=0)
        beats = ((sel > s_me) | ((sel == s_me) & (pos < p_me))) & kmask
        act = tl.sum(beats.to(tl.int32), axis=0) < TOPK
    if HAS_VALID:
        act = act & (tl.load(valid + b) != 0)
    tl.store(active + row, act.to(tl.int8))
    h_prev = tl.load(h + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    if LSTM:
        si = tl.sigmoid(g0)
        sf = tl.sigmoid(g1)
        sgg = tl.sigmoid(g2)  # (tanh(g) + 1) / 2: the g block's weights carry a factor 2
        so = tl.sigmoid(g3)
        c_prev = tl.load(c + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        c_new = sf * c_prev + si * (2.0 * sgg - 1.0)
        tc = _tanh(c_new)
        h_new = so * tc
        tl.store(c_out + row * H + hh, tl.where(act, c_new, c_prev), mask=hmask)
        tl.store(sg + row * G + hh, si, mask=hmask)
        tl.store(sg + row * G + H + hh, sf, mask=hmask)
        tl.store(sg + row * G + 2 * H + hh, sgg, mask=hmask)
        tl.store(sg + row * G + 3 * H + hh, so, mask=hmask)
        tl.store(x2 + row * H + hh, tc, mask=hmask)
    else:
        hr = tl.load(hq + row * W + hh, mask=hmask, other=0.0).to(tl.float32)
        hz = tl.load(hq + row * W + H + hh, mask=hmask, other=0.0).to(tl.float32)
        hn = tl.load(hq + row * W + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        r = tl.sigmoid(g0 + hr)
        z = tl.sigmoid(g1 + hz)
        n = _tanh(g2 + r * hn)
        h_new = n + z * (h_prev - n)
        tl.store(sg + row * G + hh, r, mask=hmask)
        tl.store(sg + row * G + H + hh, z, mask=hmask)
        tl.store(sg + row * G + 2 * H + hh, n, mask=hmask)
        tl.store(x2 + row * H + hh, hn, mask=hmask)
    # inactive units keep h (and c) as they were
    tl.store(h_out + row * H + hh, tl.where(act, h_new, h_prev), mask=hmask)


@triton.jit
def comm_attn_kernel(
    qkv, mask, P, read, B, K, ck, cv,
    CH: tl.constexpr, HAS_MASK: tl.constexpr, KP: tl.constexpr, CKP: tl.constexpr, CVP: tl.constexpr,
):
    """Program (b, head): P = softmax(q k^T) over the K units and read = (P * mask) v. qkv (K, B, CH*(2ck+cv))
    (q already scaled by 1/sqrt(ck)), mask (B, CH, K, K) scaled dropout; out: P (B, CH, K, K), read
    (K, B, CH*cv)."""
    b = tl.program_id(0)
    hd = tl.program_id(1)
    Wq = CH * (2 * ck + cv)
    off = hd * (2 * ck + cv)
    kk = tl.arange(0, KP)
    cc = tl.arange(0, CKP)
    vv = tl.arange(0, CVP)
    kmask = kk < K
    rows = (kk * B + b) * Wq + off
    q = tl.load(qkv + rows[:, None] + cc[None, :], mask=kmask[:, None] & (cc[None, :] < ck),
                other=0.0).to(tl.float32)
    kt = tl.load(qkv + rows[:, None] + ck + cc[None, :], mask=kmask[:, None] & (cc[None, :] < ck),
                 other=0.0).to(tl.float32)
    v = tl.load(qkv + rows[:, None] + 2 * ck + vv[None, :], mask=kmask[:, None] & (vv[None, :] < cv),
                other=0.0).to(tl.float32)
    s = tl.sum(q[:, None, :] * kt[None, :, :], axis=2)  # (KP, KP)
    s = tl.where(kmask[None, :], s, float("-inf"))
    e = tl.exp(s - tl.max(s, axis=1)[:, None])
    p = e / tl.sum(e, axis=1)[:, None]
    pmask = kmask[:, None] & kmask[None, :]
    poff = ((b * CH + hd) * K + kk[:, None]) * K + kk[None, :]
    tl.store(P + poff, p, mask=pmask)
    if HAS_MASK:
        p = p * tl.load(mask + poff, mask=pmask, other=0.0).to(tl.float32)
    r = tl.sum(p[:, :, None] * v[None, :, :], axis=1)  # (KP, CVP)
    tl.store(read + (kk[:, None] * B + b) * (CH * cv) + hd * cv + vv[None, :], r,
             mask=kmask[:, None] & (vv[None, :] < cv))


@triton.jit
def comm_update_kernel(h, pre, active, new_h, s, B, H, FORM: tl.constexpr, HP: tl.constexpr):
    """Program (b, k): the communication update of comm.output FORM (0 residual, 1 gated_residual, 2 convex)
    for an active unit. h = h~ (K, B, H); pre (K, B, H) = read W^o (residual) or (K, B, 2H) = read [2 W^o | W^g]
    + b; active (K, B) int8; out: new_h (K, B, H) and, bounded forms, s = sigmoid(pre) (K, B, 2H)."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    row = k * B + b
    hh = tl.arange(0, HP)
    hmask = hh < H
    ht = tl.load(h + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    m = tl.load(active + row) != 0
    if FORM == 0:
        new = ht + tl.load(pre + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    else:
        so = tl.sigmoid(tl.load(pre + row * 2 * H + hh, mask=hmask, other=0.0).to(tl.float32))
        g = tl.sigmoid(tl.load(pre + row * 2 * H + H + hh, mask=hmask, other=0.0).to(tl.float32))
        tl.store(s + row * 2 * H + hh, so, mask=hmask)
        tl.store(s + row * 2 * H + H + hh, g, mask=hmask)
        t = 2.0 * so - 1.0
        if FORM == 1:
            new = ht + g * t
        else:
            new = ht + g * (t - ht)  # (1 - g) h~ + g t
    tl.store(new_h + row * H + hh, tl.where(m, new, ht), mask=hmask)

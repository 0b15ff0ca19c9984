"""The Triton kernels behind rims_core.triton_step (imported only from there, on first use: triton is optional).

Every kernel computes in float32 and stores in its output's dtype. Tensors are unit-first and contiguous: the
element (k, b, x) of a (K, B, X) tensor is at (k * B + b) * X + x. Sizes that tl.arange needs as powers of
two come padded (KP >= K, HP >= H, ...), with masks.
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["cell_bwd_kernel", "comm_attn_bwd_kernel", "comm_attn_kernel", "comm_update_bwd_kernel",
           "comm_update_kernel", "gates_kernel", "keep_rows_kernel", "rebuild_kernel"]


@triton.jit
def _tanh(x):
    # 2 sigmoid(2x) - 1: the CPU path's form (rims_core.step._tanh); tl has no portable tanh
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def gates_kernel(
    hq, key, u, h, c, b_ih, valid, in_mask, order, rand,
    h_out, c_out, active, att, sg, x2,
    B, K, H, G, dk,
    NH: tl.constexpr, TOPK: tl.constexpr, ALL: tl.constexpr, LSTM: tl.constexpr, HAS_BIH: tl.constexpr,
    HAS_VALID: tl.constexpr,
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
    if ALL:  # TOPK >= K: every unit (a compile-time branch: K is a runtime size)
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
def _head_index(B, K, ck, cv, CH: tl.constexpr, KP: tl.constexpr, CKP: tl.constexpr, CVP: tl.constexpr):
    """Program (b, head) of a communication kernel: b, head, the unit / key / value ranges, the unit mask and
    each unit's offset of this head's [q | k | v] in qkv (K, B, CH*(2ck+cv))."""
    b = tl.program_id(0)
    hd = tl.program_id(1)
    kk = tl.arange(0, KP)
    kmask = kk < K
    rows = (kk * B + b) * (CH * (2 * ck + cv)) + hd * (2 * ck + cv)
    return b, hd, kk, tl.arange(0, CKP), tl.arange(0, CVP), kmask, rows


@triton.jit
def comm_attn_kernel(
    qkv, mask, P, read, B, K, ck, cv,
    CH: tl.constexpr, HAS_MASK: tl.constexpr, LOAD_P: tl.constexpr, KP: tl.constexpr, CKP: tl.constexpr,
    CVP: tl.constexpr,
):
    """Program (b, head): P = softmax(q k^T) over the K units and read = (P * mask) v. qkv (K, B, CH*(2ck+cv))
    (q already scaled by 1/sqrt(ck)), mask (B, CH, K, K) scaled dropout; out: P (B, CH, K, K), read
    (K, B, CH*cv). LOAD_P: P is given (the backward recomputing the read), only read is written."""
    b, hd, kk, cc, vv, kmask, rows = _head_index(B, K, ck, cv, CH, KP, CKP, CVP)
    v = tl.load(qkv + rows[:, None] + 2 * ck + vv[None, :], mask=kmask[:, None] & (vv[None, :] < cv),
                other=0.0).to(tl.float32)
    pmask = kmask[:, None] & kmask[None, :]
    poff = ((b * CH + hd) * K + kk[:, None]) * K + kk[None, :]
    if LOAD_P:
        p = tl.load(P + poff, mask=pmask, other=0.0).to(tl.float32)
    else:
        q = tl.load(qkv + rows[:, None] + cc[None, :], mask=kmask[:, None] & (cc[None, :] < ck),
                    other=0.0).to(tl.float32)
        kt = tl.load(qkv + rows[:, None] + ck + cc[None, :], mask=kmask[:, None] & (cc[None, :] < ck),
                     other=0.0).to(tl.float32)
        s = tl.sum(q[:, None, :] * kt[None, :, :], axis=2)  # (KP, KP)
        s = tl.where(kmask[None, :], s, float("-inf"))
        e = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = e / tl.sum(e, axis=1)[:, None]
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


@triton.jit
def comm_update_bwd_kernel(dh, active, ht, co, d_pre, dh_out, B, H, FORM: tl.constexpr, HP: tl.constexpr,
                           FROM_PRE: tl.constexpr):
    """Program (b, k): the backward of comm_update_kernel. dh (K, B, H) the gradient of h_t; active (K, B) int8;
    ht = h~ (K, B, H); co (K, B, 2H) the bounded forms' sigmoids [so | g], or with FROM_PRE their pre-activations
    (recompute: the sigmoids are taken here, as comm_update_kernel took them); out: d_pre (K, B, H) or (K, B, 2H),
    dh_out (K, B, H) = the gradient of h~ except through qkv (convex: minus d_upd g, else dh)."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    row = k * B + b
    hh = tl.arange(0, HP)
    hmask = hh < H
    d = tl.load(dh + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    m = tl.load(active + row) != 0
    d_upd = tl.where(m, d, 0.0)
    if FORM == 0:
        tl.store(d_pre + row * H + hh, d_upd, mask=hmask)
        tl.store(dh_out + row * H + hh, d, mask=hmask)
    else:
        so = tl.load(co + row * 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        g = tl.load(co + row * 2 * H + H + hh, mask=hmask, other=0.0).to(tl.float32)
        if FROM_PRE:
            so = tl.sigmoid(so)
            g = tl.sigmoid(g)
        t = 2.0 * so - 1.0
        tl.store(d_pre + row * 2 * H + hh, 2.0 * d_upd * g * so * (1.0 - so), mask=hmask)
        if FORM == 1:
            tl.store(d_pre + row * 2 * H + H + hh, d_upd * t * g * (1.0 - g), mask=hmask)
            tl.store(dh_out + row * H + hh, d, mask=hmask)
        else:
            h_t = tl.load(ht + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
            tl.store(d_pre + row * 2 * H + H + hh, d_upd * (t - h_t) * g * (1.0 - g), mask=hmask)
            tl.store(dh_out + row * H + hh, d - d_upd * g, mask=hmask)  # h~ enters with weight 1 - g


@triton.jit
def comm_attn_bwd_kernel(
    d_read, P, mask, qkv, d_qkv, B, K, ck, cv,
    CH: tl.constexpr, HAS_MASK: tl.constexpr, KP: tl.constexpr, CKP: tl.constexpr, CVP: tl.constexpr,
):
    """Program (b, head): the backward of comm_attn_kernel. d_read (K, B, CH*cv), P (B, CH, K, K), mask
    (B, CH, K, K), qkv (K, B, CH*(2ck+cv)); out: d_qkv (K, B, CH*(2ck+cv))."""
    b, hd, kk, cc, vv, kmask, rows = _head_index(B, K, ck, cv, CH, KP, CKP, CVP)
    cmask = kmask[:, None] & (cc[None, :] < ck)
    vmask = kmask[:, None] & (vv[None, :] < cv)
    q = tl.load(qkv + rows[:, None] + cc[None, :], mask=cmask, other=0.0).to(tl.float32)
    kt = tl.load(qkv + rows[:, None] + ck + cc[None, :], mask=cmask, other=0.0).to(tl.float32)
    v = tl.load(qkv + rows[:, None] + 2 * ck + vv[None, :], mask=vmask, other=0.0).to(tl.float32)
    dr = tl.load(d_read + (kk[:, None] * B + b) * (CH * cv) + hd * cv + vv[None, :], mask=vmask,
                 other=0.0).to(tl.float32)
    pmask = kmask[:, None] & kmask[None, :]
    poff = ((b * CH + hd) * K + kk[:, None]) * K + kk[None, :]
    p = tl.load(P + poff, mask=pmask, other=0.0).to(tl.float32)
    if HAS_MASK:
        dm = tl.load(mask + poff, mask=pmask, other=0.0).to(tl.float32)
        pd = p * dm
    else:
        pd = p
    d_v = tl.sum(pd[:, :, None] * dr[:, None, :], axis=0)  # (KP j, CVP): sum_i Pd[i, j] d_read[i]
    d_p = tl.sum(dr[:, None, :] * v[None, :, :], axis=2)  # (KP i, KP j)
    if HAS_MASK:
        d_p = d_p * dm
    d_s = p * (d_p - tl.sum(d_p * p, axis=1)[:, None])  # softmax backward
    d_q = tl.sum(d_s[:, :, None] * kt[None, :, :], axis=1)  # (KP i, CKP)
    d_k = tl.sum(d_s[:, :, None] * q[:, None, :], axis=0)  # (KP j, CKP)
    tl.store(d_qkv + rows[:, None] + cc[None, :], d_q, mask=cmask)
    tl.store(d_qkv + rows[:, None] + ck + cc[None, :], d_k, mask=cmask)
    tl.store(d_qkv + rows[:, None] + 2 * ck + vv[None, :], d_v, mask=vmask)


@triton.jit
def cell_bwd_kernel(
    dh, dc, active, sg, x2, c_prev, h_prev, att, in_mask, u, key,
    dh_prev, dc_out, d_hq, d_u, d_s, d_gi,
    B, H, G, dk, u_sk, du_sk,
    NH: tl.constexpr, LSTM: tl.constexpr, HAS_INMASK: tl.constexpr, STORE_GI: tl.constexpr, HP: tl.constexpr,
    DKP: tl.constexpr,
):
    """Program (b, k): the backward of gates_kernel up to the recurrent matmul. dh (K, B, H) the gradient of h~,
    dc (K, B, H) of c_t; active (K, B) int8; sg (K, B, G), x2 (K, B, H), c_prev / h_prev (K, B, H), att and
    in_mask (K, B, NH), u (K, B, NH*G) with unit stride u_sk, key (B, NH, dk). Out: dh_prev and dc_out
    (K, B, H), d_hq (K, B, G + NH*dk), d_u (K, B, NH*G) with unit stride du_sk, d_s (K, B, NH) and, STORE_GI
    (GRU with b_ih), d_gi (K, B, G)."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    row = k * B + b
    W = G + NH * dk
    hh = tl.arange(0, HP)
    hmask = hh < H
    dd = tl.arange(0, DKP)
    d = tl.load(dh + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    m = tl.load(active + row) != 0
    d_new = tl.where(m, d, 0.0)
    dhp = d - d_new  # inactive units pass the gradient straight through
    if LSTM:
        si = tl.load(sg + row * G + hh, mask=hmask, other=0.0).to(tl.float32)
        sf = tl.load(sg + row * G + H + hh, mask=hmask, other=0.0).to(tl.float32)
        sgg = tl.load(sg + row * G + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        so = tl.load(sg + row * G + 3 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        tc = tl.load(x2 + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        cp = tl.load(c_prev + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        dcv = tl.load(dc + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        dc_new = tl.where(m, dcv, 0.0) + d_new * so * (1.0 - tc * tc)
        tl.store(dc_out + row * H + hh, tl.where(m, dc_new * sf, dcv), mask=hmask)
        e0 = dc_new * (2.0 * sgg - 1.0) * si * (1.0 - si)
        e1 = dc_new * cp * sf * (1.0 - sf)
        e2 = 2.0 * dc_new * si * sgg * (1.0 - sgg)
        e3 = d_new * tc * so * (1.0 - so)
        tl.store(d_hq + row * W + hh, e0, mask=hmask)
        tl.store(d_hq + row * W + H + hh, e1, mask=hmask)
        tl.store(d_hq + row * W + 2 * H + hh, e2, mask=hmask)
        tl.store(d_hq + row * W + 3 * H + hh, e3, mask=hmask)
    else:
        r = tl.load(sg + row * G + hh, mask=hmask, other=0.0).to(tl.float32)
        zg = tl.load(sg + row * G + H + hh, mask=hmask, other=0.0).to(tl.float32)
        n = tl.load(sg + row * G + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        hn = tl.load(x2 + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        hp = tl.load(h_prev + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
        dn = d_new * (1.0 - zg)
        dz = d_new * (hp - n)
        dhp = dhp + d_new * zg
        e2 = dn * (1.0 - n * n)
        e0 = e2 * hn * r * (1.0 - r)
        e1 = dz * zg * (1.0 - zg)
        e3 = tl.zeros((HP,), dtype=tl.float32)
        tl.store(d_hq + row * W + hh, e0, mask=hmask)
        tl.store(d_hq + row * W + H + hh, e1, mask=hmask)
        tl.store(d_hq + row * W + 2 * H + hh, e2 * r, mask=hmask)
        if STORE_GI:
            tl.store(d_gi + row * G + hh, e0, mask=hmask)
            tl.store(d_gi + row * G + H + hh, e1, mask=hmask)
            tl.store(d_gi + row * G + 2 * H + hh, e2, mask=hmask)
    tl.store(dh_prev + row * H + hh, dhp, mask=hmask)
    # input attention: gates_in = sum_h a_h u_h, a = sigmoid(s) * mask, s = q . key
    ub = u + k * u_sk + b * NH * G
    dub = d_u + k * du_sk + b * NH * G
    for hd in tl.static_range(NH):
        a = tl.load(att + row * NH + hd).to(tl.float32)
        am = a
        if HAS_INMASK:
            im = tl.load(in_mask + row * NH + hd).to(tl.float32)
            am = a * im
        u0 = tl.load(ub + hd * G + hh, mask=hmask, other=0.0).to(tl.float32)
        u1 = tl.load(ub + hd * G + H + hh, mask=hmask, other=0.0).to(tl.float32)
        u2 = tl.load(ub + hd * G + 2 * H + hh, mask=hmask, other=0.0).to(tl.float32)
        d_a = tl.sum(e0 * u0 + e1 * u1 + e2 * u2, axis=0)
        tl.store(dub + hd * G + hh, e0 * am, mask=hmask)
        tl.store(dub + hd * G + H + hh, e1 * am, mask=hmask)
        tl.store(dub + hd * G + 2 * H + hh, e2 * am, mask=hmask)
        if LSTM:
            u3 = tl.load(ub + hd * G + 3 * H + hh, mask=hmask, other=0.0).to(tl.float32)
            d_a += tl.sum(e3 * u3, axis=0)
            tl.store(dub + hd * G + 3 * H + hh, e3 * am, mask=hmask)
        if HAS_INMASK:
            d_a = d_a * im
        ds = d_a * a * (1.0 - a)
        tl.store(d_s + row * NH + hd, ds)
        kv = tl.load(key + (b * NH + hd) * dk + dd, mask=dd < dk, other=0.0).to(tl.float32)
        tl.store(d_hq + row * W + G + hd * dk + dd, ds * kv, mask=dd < dk)


@triton.jit
def _kept_place(active, b, k, B, K, KP: tl.constexpr):
    """Unit k's place among sample b's rows as recompute orders them (rims_core.fused._kept_rows): the active
    units first, in unit order, then the inactive ones; and whether unit k is active. active (K, B) int8."""
    kk = tl.arange(0, KP)
    kmask = kk < K
    av = (tl.load(active + kk * B + b, mask=kmask, other=0) != 0).to(tl.int32)
    me = tl.load(active + k * B + b) != 0
    before = kmask & (kk < k)
    n_act = tl.sum(av, axis=0)
    act_before = tl.sum(tl.where(before, av, 0), axis=0)
    inact_before = tl.sum(tl.where(before, 1 - av, 0), axis=0)
    return tl.where(me, act_before, n_act + inact_before), me


@triton.jit
def keep_rows_kernel(sg, active, kept, B, K, G, TOPK: tl.constexpr, KP: tl.constexpr, GP: tl.constexpr):
    """Program (b, k): recompute's forward. Copies unit k's gate sigmoids, sg (K, B, G), to its place in kept
    (TOPK, B, G) when that place is < TOPK (every active unit's is)."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    place, _ = _kept_place(active, b, k, B, K, KP)
    gg = tl.arange(0, GP)
    gmask = gg < G
    row = tl.load(sg + (k * B + b) * G + gg, mask=gmask, other=0.0)
    # the place broadcast to the block first: a block mask & a scalar is not a mask the interpreter accepts
    tl.store(kept + (place * B + b) * G + gg, row, mask=gmask & ((gg * 0 + place) < TOPK))


@triton.jit
def rebuild_kernel(kept, active, c_next, h_prev, sg, x2, ht, B, K, H, G, TOPK: tl.constexpr, LSTM: tl.constexpr,
                   KP: tl.constexpr, HP: tl.constexpr):
    """Program (b, k): recompute's backward, what gates_kernel saved rebuilt from what recompute kept. kept
    (TOPK, B, G) the kept gate sigmoids, active (K, B) int8, c_next (K, B, H) the state after the step (LSTM),
    h_prev (K, B, H) the state before it; out: sg (K, B, G), zeros where unit k has no kept row; x2 = tanh(c_next)
    (K, B, H) (LSTM; a GRU keeps its x2); ht = h~ (K, B, H), the cell's h for an active unit, else h_prev."""
    b = tl.program_id(0)
    k = tl.program_id(1)
    place, me = _kept_place(active, b, k, B, K, KP)
    hh = tl.arange(0, HP)
    hmask = hh < H
    lmask = hmask & ((hh * 0 + place) < TOPK)  # (see keep_rows_kernel)
    src = kept + (place * B + b) * G
    dst = sg + (k * B + b) * G
    row = k * B + b
    s0 = tl.load(src + hh, mask=lmask, other=0.0).to(tl.float32)
    s1 = tl.load(src + H + hh, mask=lmask, other=0.0).to(tl.float32)
    s2 = tl.load(src + 2 * H + hh, mask=lmask, other=0.0).to(tl.float32)
    tl.store(dst + hh, s0, mask=hmask)
    tl.store(dst + H + hh, s1, mask=hmask)
    tl.store(dst + 2 * H + hh, s2, mask=hmask)
    hp = tl.load(h_prev + row * H + hh, mask=hmask, other=0.0).to(tl.float32)
    if LSTM:
        s3 = tl.load(src + 3 * H + hh, mask=lmask, other=0.0).to(tl.float32)
        tl.store(dst + 3 * H + hh, s3, mask=hmask)
        tc = _tanh(tl.load(c_next + row * H + hh, mask=hmask, other=0.0).to(tl.float32))
        tl.store(x2 + row * H + hh, tc, mask=hmask)
        h_new = s3 * tc
    else:
        h_new = s2 + s1 * (hp - s2)  # n + z (h - n), as gates_kernel
    tl.store(ht + row * H + hh, tl.where(me, h_new, hp), mask=hmask)

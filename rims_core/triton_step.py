"""One RIM step in three Triton kernels, for CUDA: the same contract as rims_core.step.rim_step.

Why: on a GPU the plain step is ~30 small kernels (scores, selection, gates, update, the communication
attention and its update), each a launch of a few microseconds on tensors of a few KB, so a RIM step costs
launches, not arithmetic (docs/benchmarks.md). Here the matmuls stay in cuBLAS (torch.bmm) and everything
between them is fused:

  hq = h [W^hh | W^q] + b                      cuBLAS
  _gates_kernel: scores, selection, gates,     one program per (sample, unit); every program of a sample
                 state update                  recomputes all K scores (K*nh*dk multiply-adds) to rank its unit
  qkv = h~ W^qkv                               cuBLAS
  _comm_attn_kernel: softmax(q k^T) and the    one program per (sample, head)
                 read (P * mask) v
  pre = read W^o (+ b)                         cuBLAS
  _comm_update_kernel: the comm.output form    one program per (sample, unit)

so a step is 6 launches instead of ~30. The kernels hand the fused backward (rims_core.fused) the same saved
tensors as rim_step. Its per-step backward has the same shape (triton_comm_backward, triton_cell_backward:
rims_core.fused.comm_backward / cell_backward in three kernels between the matmuls), and RIMScan uses it
when its forward ran the Triton step. With RIMCell.recompute, keeping the active units' gate sigmoids is one
more kernel per forward step (triton_keep_rows) and rebuilding what the step saved one more per backward step
(triton_rebuild), besides the two matmuls that recompute qkv and the bounded output's pre-activation.

Numerics: the kernels compute in float32 and store in the tensors' dtypes; tanh is 2 sigmoid(2x) - 1, as on
the CPU path. Selection ranks units exactly as select_units does (descending score; exact ties in the order
of ``order``, else by unit index); random selection draws its scores with torch.rand on the host, at the same
point of the generator's stream as select_units, so the masks agree. The results agree with rim_step to float
rounding (tests/rims_core/test_triton_step.py runs them under Triton's interpreter, TRITON_INTERPRET=1, on CPU
tensors).

Shape legend as in rims_core.step: K units, B batch, H unit size, G gate width, nh/dk input heads and key size,
ch/ck/cv communication heads, key and value size. Every tensor is unit-first (K, B, ...) and contiguous.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from .config import RIMConfig
from .step import Prepared, comm_pre

__all__ = ["available", "triton_cell_backward", "triton_comm_backward", "triton_keep_rows", "triton_rebuild",
           "triton_rim_step"]


def available(device: torch.device | str) -> bool:
    """Whether the Triton step can run on ``device``: triton is installed and the device is CUDA, or Triton's
    interpreter is on (TRITON_INTERPRET=1, which runs the kernels on CPU tensors; tests only: it is slow)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return torch.device(device).type == "cuda"


def _p2(n: int) -> int:
    """The next power of two (tl.arange needs one), at least 2."""
    return max(2, 1 << (max(1, n) - 1).bit_length())


_KERNELS = None


def _kernels():
    """The jitted kernels, built on first use so that importing rims_core never imports triton (an optional
    dependency: the `gpu` extra), and so that TRITON_INTERPRET is read when the kernels are first needed."""
    global _KERNELS
    if _KERNELS is None:
        from . import _triton_kernels

        _KERNELS = _triton_kernels
    return _KERNELS


def triton_rim_step(
    cfg: RIMConfig, w: Prepared, h: Tensor, c: Tensor | None, key: Tensor, u: Tensor,
    valid: Tensor | None = None, in_mask: Tensor | None = None, comm_mask: Tensor | None = None,
    order: Tensor | None = None, keep: dict[str, list[Tensor]] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor | None]:
    """rim_step's contract (rims_core.step.rim_step gives the shapes), in three Triton kernels and three bmm.

    Returns h, c (K, B, H), active (K, B) bool, att (K, B, nh) and the communication attention (B, ch, K, K)
    or None; ``keep`` receives the same tensors as from rim_step.
    """
    kern = _kernels()
    K, B, H = h.shape
    nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
    lstm = cfg.cell == "lstm"
    G = w.w_hq.shape[-1] - nh * dk
    dev = h.device
    hq = torch.bmm(h, w.w_hq) if w.b_hq is None else torch.baddbmm(w.b_hq, h, w.w_hq)  # (K, B, G + nh*dk)
    hq = hq.contiguous()
    h = h.contiguous()  # the kernels index every (K, B, X) tensor as contiguous
    c = c.contiguous() if lstm else None
    u = u.reshape(K, B, nh * G).contiguous()
    key = key.contiguous()
    # random selection: the scores select_units would draw, drawn at the same point of the stream
    rand = (torch.rand((K, B), device=dev)
            if cfg.selection == "random" and cfg.top_k < cfg.num_units else None)
    h_out = torch.empty_like(h, memory_format=torch.contiguous_format)
    # GRU: c_out is a placeholder the kernel never writes
    c_out = torch.empty_like(c, memory_format=torch.contiguous_format) if lstm else h_out
    active = torch.empty((K, B), dtype=torch.int8, device=dev)
    att = torch.empty((K, B, nh), dtype=hq.dtype, device=dev)
    sg = torch.empty((K, B, G), dtype=hq.dtype, device=dev)
    x2 = torch.empty((K, B, H), dtype=hq.dtype, device=dev)
    dummy = h_out  # pointer for the optional inputs that are absent (never read: constexpr flags)
    kern.gates_kernel[(B, K)](
        hq, key, u, h, c if lstm else dummy,
        w.b_ih if (not lstm and w.b_ih is not None) else dummy,
        valid.to(torch.int8).contiguous() if valid is not None else dummy,
        in_mask.contiguous() if in_mask is not None else dummy,
        order.contiguous() if order is not None else dummy,
        rand if rand is not None else dummy,
        h_out, c_out, active, att, sg, x2,
        B, K, H, G, dk,
        NH=nh, TOPK=cfg.top_k, ALL=cfg.top_k >= K, LSTM=lstm,
        HAS_BIH=(not lstm and w.b_ih is not None), HAS_VALID=valid is not None, HAS_INMASK=in_mask is not None,
        HAS_ORDER=order is not None, HAS_RAND=rand is not None,
        KP=_p2(K), DKP=_p2(dk), HP=_p2(H),
    )
    if keep is not None:
        keep["sg"].append(sg)
        keep["x2"].append(x2)
    act = active.bool()
    h = h_out
    P = None
    if w.comm_qkv is not None:
        comm = cfg.comm
        ch, ck, cv = comm.heads, comm.key_size, comm.value_size
        qkv = torch.bmm(h, w.comm_qkv).contiguous()  # (K, B, ch*(2ck+cv)); q carries 1/sqrt(ck)
        P = torch.empty((B, ch, K, K), dtype=qkv.dtype, device=dev)
        read = torch.empty((K, B, ch * cv), dtype=qkv.dtype, device=dev)
        kern.comm_attn_kernel[(B, ch)](
            qkv, comm_mask.contiguous() if comm_mask is not None else dummy, P, read,
            B, K, ck, cv, CH=ch, HAS_MASK=comm_mask is not None, LOAD_P=False, KP=_p2(K), CKP=_p2(ck), CVP=_p2(cv),
        )
        pre = comm_pre(read, w.comm_w, w.comm_b)
        pre = pre.contiguous()
        form = cfg.comm_output
        new_h = torch.empty_like(h, memory_format=torch.contiguous_format)
        s = pre if form == "residual" else torch.empty_like(pre)  # the bounded forms' sigmoids, for backward
        kern.comm_update_kernel[(B, K)](
            h, pre, active, new_h, s, B, H,
            FORM={"residual": 0, "gated_residual": 1, "convex": 2}[form], HP=_p2(H),
        )
        if keep is not None:
            keep["ht"].append(h)
            keep["qkv"].append(qkv)
            if form != "residual":
                keep["co"].append(s)
        h = new_h
    return h, (c_out if lstm else None), act, att, P


_FORMS = {"residual": 0, "gated_residual": 1, "convex": 2}


def triton_comm_backward(cfg: RIMConfig, dh: Tensor, active: Tensor, ht: Tensor, qkv: Tensor, P: Tensor,
                         cmask: Tensor | None, co: Tensor | None, comm_w_t: Tensor, comm_qkv_t: Tensor,
                         grads, comm_w: Tensor | None = None, comm_b: Tensor | None = None) -> Tensor:
    """rims_core.fused.comm_backward's contract in two Triton kernels (the output form; the attention), one
    more that recomputes the read from the saved P, and three matmuls (four when a bounded form's co is None
    and is recomputed from the read, comm_w and comm_b: RIMCell.recompute)."""
    kern = _kernels()
    K, B, H = dh.shape
    ch, ck, cv = cfg.comm.heads, cfg.comm.key_size, cfg.comm.value_size
    form = _FORMS[cfg.comm_output]
    dh = dh.contiguous()
    act = active.contiguous().view(torch.int8)
    read = qkv.new_empty((K, B, ch * cv))
    sizes = dict(CH=ch, HAS_MASK=cmask is not None, KP=_p2(K), CKP=_p2(ck), CVP=_p2(cv))
    kern.comm_attn_kernel[(B, ch)](qkv, cmask if cmask is not None else P, P, read, B, K, ck, cv, LOAD_P=True,
                                   **sizes)
    from_pre = co is None and form != 0
    if from_pre:  # recompute: the forward's pre-activation; the kernel takes its sigmoids
        co = comm_pre(read, comm_w, comm_b).contiguous()
    d_pre = dh.new_empty((K, B, H if form == 0 else 2 * H))
    dh_h = torch.empty_like(dh, memory_format=torch.contiguous_format)
    kern.comm_update_bwd_kernel[(B, K)](dh, act, ht, co if co is not None else dh, d_pre, dh_h, B, H, FORM=form,
                                        HP=_p2(H), FROM_PRE=from_pre)
    if grads.b is not None:
        grads.b.add_(d_pre.sum(1, keepdim=True))
    grads.w.baddbmm_(read.transpose(1, 2), d_pre)
    d_read = torch.bmm(d_pre, comm_w_t)
    d_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    kern.comm_attn_bwd_kernel[(B, ch)](d_read, P, cmask if cmask is not None else P, qkv, d_qkv, B, K, ck, cv,
                                       **sizes)
    grads.qkv.baddbmm_(ht.transpose(1, 2), d_qkv)
    return torch.baddbmm(dh_h, d_qkv, comm_qkv_t)


def triton_cell_backward(cfg: RIMConfig, dh: Tensor, dc: Tensor | None, active: Tensor, sg: Tensor, x2: Tensor,
                         c_prev: Tensor | None, h_prev: Tensor, att: Tensor, in_mask: Tensor | None, ut: Tensor,
                         key: Tensor, d_u: Tensor, d_hq: Tensor, d_b_ih: Tensor | None
                         ) -> tuple[Tensor, Tensor | None, Tensor]:
    """rims_core.fused.cell_backward's contract in one Triton kernel. ut and d_u may be strided along the units
    (slices of the scan's (K, S, B, nh*G) chunks); their rows must be contiguous."""
    kern = _kernels()
    K, B, H = dh.shape
    nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
    G = sg.shape[-1]
    lstm = cfg.cell == "lstm"
    for name, t in (("ut", ut), ("d_u", d_u)):
        if t.stride(2) != 1 or t.stride(1) != t.shape[2]:
            raise ValueError(f"triton_cell_backward: Expected {name} with contiguous rows, got strides {t.stride()}")
    dh = dh.contiguous()
    dc = dc.contiguous() if lstm else None
    dh_prev = torch.empty_like(dh, memory_format=torch.contiguous_format)
    dc_out = torch.empty_like(dc, memory_format=torch.contiguous_format) if lstm else dh_prev
    d_s = dh.new_empty((K, B, nh))
    store_gi = not lstm and d_b_ih is not None
    d_gi = dh.new_empty((K, B, G)) if store_gi else dh_prev
    kern.cell_bwd_kernel[(B, K)](
        dh, dc if lstm else dh, active.contiguous().view(torch.int8), sg, x2,
        c_prev if lstm else dh, h_prev, att, in_mask if in_mask is not None else att, ut, key,
        dh_prev, dc_out, d_hq, d_u, d_s, d_gi,
        B, H, G, dk, ut.stride(0), d_u.stride(0),
        NH=nh, LSTM=lstm, HAS_INMASK=in_mask is not None, STORE_GI=store_gi, HP=_p2(H), DKP=_p2(dk),
    )
    if store_gi:
        d_b_ih += d_gi.sum(1, keepdim=True)
    return dh_prev, (dc_out if lstm else None), d_s


def triton_keep_rows(sg: Tensor, active: Tensor, k: int) -> Tensor:
    """RIMCell.recompute's forward in one kernel: sg (K, B, G) -> the kept rows (k*B, G), as
    rims_core.fused._kept_rows orders them (per sample the active units first, in unit order)."""
    K, B, G = sg.shape
    kept = sg.new_empty((k * B, G))
    _kernels().keep_rows_kernel[(B, K)](sg.contiguous(), active.contiguous().view(torch.int8), kept, B, K, G,
                                        TOPK=k, KP=_p2(K), GP=_p2(G))
    return kept


def triton_rebuild(kept: Tensor, active: Tensor, h_prev: Tensor, c_next: Tensor | None, x2: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """RIMCell.recompute's backward in one kernel: kept (k*B, G) from triton_keep_rows, active (K, B) bool,
    h_prev (K, B, H), c_next (K, B, H) the state after the step (LSTM) or None, x2 (K, B, H) what a GRU step
    saved, else None -> sg (K, B, G), x2 (K, B, H) and h~ (K, B, H), what the Triton step would have saved."""
    K, B, H = h_prev.shape
    G = kept.shape[-1]
    k = kept.shape[0] // B
    lstm = c_next is not None
    sg = kept.new_empty((K, B, G))
    ht = torch.empty_like(h_prev, memory_format=torch.contiguous_format)
    x2_out = torch.empty_like(ht) if lstm else x2
    _kernels().rebuild_kernel[(B, K)](kept, active.contiguous().view(torch.int8),
                                      c_next.contiguous() if lstm else ht, h_prev.contiguous(), sg, x2_out, ht,
                                      B, K, H, G, TOPK=k, LSTM=lstm, KP=_p2(K), HP=_p2(H))
    return sg, x2_out, ht

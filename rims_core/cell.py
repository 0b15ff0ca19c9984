"""RIMCell: one step of Recurrent Independent Mechanisms, a drop-in for nn.LSTMCell / nn.GRUCell.

Shape legend: T time, B batch, K units (num_units), k active units (top_k), H unit size
(hidden_size // K), D input size, G gate width (4H for LSTM, 3H for GRU), nh heads, dk key size,
dv value size. Public states are (B, K * H), unit-major; inside the scan they are unit-first
(K, B, H), so that every per-unit matmul is a single torch.bmm over the unit dimension.

Where things are: the parameters and their prepared forms in rims_core.weights, the step's arithmetic in
rims_core.step (shared by both paths), its hand-written backward in rims_core.fused; this module drives the
steps over a sequence and honours the nn.LSTMCell contract.

One step, as the paper writes it (Goyal et al., Sec. 2):
  X = [null; x_t], K = X W^e, V = X W^v (shared, no bias: the null row has key 0 and value 0)
  A_k = softmax(q_k K^T / sqrt(dk)) V, q_k = h_k W^q_k                  (input attention)
  S_t = the k units that put the least attention on the null row         (selection)
  h~_k = cell_k(A_k, h_k) for k in S_t; h~_k = h_k otherwise             (independent dynamics)
  r_k = MHA(q~_k; K~, V~ from all h~) for k in S_t                      (communication read)
  h_k <- h~_k + W^o_k r_k for k in S_t                                   (the paper's text: comm.output="residual")
The default communication output is bounded instead (docs/model.md), with g_k = sigmoid(W^g_k r_k + b^g_k):
  LSTM units: h_k <- h~_k + g_k tanh(W^o_k r_k + b^o_k)  ("gated_residual", the official code's; |h| < 2)
  GRU units:  h_k <- (1 - g_k) h~_k + g_k tanh(W^o_k r_k + b^o_k)  ("convex", a highway update; |h| <= 1)

Because the null row has value 0, A_k = a_k * (x_t W^v) with a_k the attention on x_t; the input
part of every unit's gates, a_k * (x_t W^v W^ih_k), is therefore computed for all T steps in one
matmul before the scan, and each step only scales it. This is exact, not an approximation. Whether W^v is
folded into W^ih first is RIMCell.folds_value's decision (rims_core.weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .fused import RIMScan
from .step import Prepared, rim_step, select_units
from .triton_step import available as triton_available
from .weights import CONVEX_GATE_BIAS, RIMCellWeights
from .weights import build_config as build_config  # importable from here, where it was defined before

__all__ = ["CONVEX_GATE_BIAS", "RIMCell", "StepTrace", "unpack_state"]

StepTrace = dict[str, Tensor]


def unpack_state(owner: str, hx: Any, is_lstm: bool, want: tuple[int, ...]) -> tuple[Tensor, Tensor | None]:
    """Split hx into (h, c) (c None for GRU cells), checking its form and each state's shape against want."""
    if is_lstm:
        if not isinstance(hx, tuple | list) or len(hx) != 2:
            raise ValueError(f"{owner}: Expected hx to be a tuple (h_0, c_0) for cell='lstm', got {type(hx).__name__}")
        h, c = hx
    else:
        if not isinstance(hx, Tensor):
            raise ValueError(f"{owner}: Expected hx to be a Tensor h_0 for cell='gru', got {type(hx).__name__}")
        h, c = hx, None
    for i, st in enumerate((h, c)):
        if st is not None and tuple(st.shape) != want:
            raise RuntimeError(f"{owner}: Expected hidden[{i}] size {want}, got {list(st.shape)}")
    return h, c


class RIMCell(RIMCellWeights):
    r"""A RIM step with the nn.LSTMCell (cell="lstm") or nn.GRUCell (cell="gru") contract.

    Args:
        input_size: features of the input x, D.
        hidden_size: TOTAL hidden features over all units (num_units * unit size), as in nn.LSTMCell.
        bias: add the per-unit gate biases b_ih and b_hh. Default: True.
        num_units, top_k, cell, selection, input_attention, comm: see :class:`RIMConfig`.

    Inputs: input, hx
        - input: (N, D) or (D,)
        - hx: for LSTM cells a tuple (h_0, c_0), for GRU cells h_0, each (N, hidden_size) or
          (hidden_size,); zeros when omitted. Units are unit-major: h.view(N, num_units, -1).

    Outputs: (h_1, c_1) for LSTM cells, h_1 for GRU cells, shaped like hx.
    """

    #: Run the scan through the fused Function (hand-written backward). False selects the plain path, a loop
    #: over step() differentiated by autograd; torch.compile (compile_step) always uses the latter. Under autocast
    #: the fused scan computes its input maps (x's projections, all steps at once) in the autocast dtype and the
    #: recurrence in the state's precision (fp32): at a RIM's per-step sizes the recurrence is bound by launches
    #: and latency, not by matmul throughput, and an fp32 state stays finite over any horizon.
    use_fused: bool = True
    #: Run the fused scan's forward step as Triton kernels (rims_core.triton_step): None where they can run, i.e.
    #: on CUDA with triton installed (the `gpu` extra); True wherever triton_step.available says they can (CUDA,
    #: or Triton's interpreter on CPU: tests); False never. The default stays False until the kernels have been
    #: compiled and checked on a GPU: so far they have run only under Triton's CPU interpreter.
    use_triton: bool | None = False
    #: The fused scan keeps less for backward and recomputes the rest there (rims_core.fused._Compact): the
    #: active units' gate sigmoids only, no tanh(c'), h~, communication projections or bounded-output sigmoids.
    #: At the paper's size the saved activations drop from 218 to 84 MB (cuDNN nn.LSTM keeps 94), for two small
    #: bmm and some pointwise work per step in backward. Same outputs, same gradients to float rounding. The
    #: fused scan only: the plain path (use_fused False, compile_step) keeps what autograd keeps.
    recompute: bool = False
    #: In training mode, break exact selection ties (every unit at a zero state) uniformly at random; False breaks
    #: them by unit index in both modes. Set it False where a training-mode forward must reproduce an eval-mode
    #: one, e.g. an RL learner recomputing the logits its eval-mode actors acted on.
    random_ties: bool = True

    #: The step through torch.compile (compile_step), or None: the eager step.
    _compiled_step: Callable[..., tuple[Tensor, Tensor | None, StepTrace | None]] | None = None

    def compile_step(self, **compile_kwargs: Any) -> None:
        """Run each step through torch.compile (fuses the pointwise work; the time loop stays in Python,
        so compilation does not grow with sequence length). kwargs go to torch.compile."""
        self._compiled_step = torch.compile(self.step, **compile_kwargs)

    def triton_enabled(self, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
        """Whether the fused scan on ``device`` runs its forward step as Triton kernels (see use_triton). The
        kernels compute in float32, so float64 scans keep the plain step (and use_triton=True refuses them)."""
        if self.use_triton is False:
            return False
        low = dtype in (torch.float32, torch.bfloat16, torch.float16)
        if self.use_triton is None:
            return low and torch.device(device).type == "cuda" and triton_available(device)
        if not low:
            raise RuntimeError(f"RIMCell: use_triton=True computes in float32; Expected a float32, bfloat16 or "
                               f"float16 input, got {dtype}. Set use_triton=None or False for {dtype}")
        if not triton_available(device):
            raise RuntimeError(
                f"RIMCell: use_triton=True needs triton (pip install 'rims-lab[gpu]') and a CUDA device, or "
                f"TRITON_INTERPRET=1 for CPU tensors; got device {torch.device(device)}. Set use_triton=None "
                f"(where available) or False")
        return True

    # ------------------------------------------------------------------ the scan
    def select(self, score: Tensor, order: Tensor | None = None) -> Tensor:
        """score: (K, B) attention on x_t (averaged over heads) -> active mask (K, B), bool; ties broken by
        ``order`` (K, B) or by the lower unit index (see rims_core.step.select_units)."""
        return select_units(self.config, score, order)

    def tie_orders(self, T: int, B: int, device: torch.device) -> Tensor | None:
        """Random unit orders (T, K, B) that break exact selection ties in training, drawn at once for all
        steps; None in eval mode, with random_ties off, or when nothing can tie (selection other than topk, or
        top_k = num_units)."""
        cfg = self.config
        if not (self.training and self.random_ties) or cfg.selection != "topk" or cfg.top_k == cfg.num_units:
            return None
        return torch.rand(T, cfg.num_units, B, device=device).argsort(dim=1)

    def step(
        self, h: Tensor, c: Tensor | None, key: Tensor, u: Tensor, w: Prepared, valid: Tensor | None,
        in_mask: Tensor | None = None, comm_mask: Tensor | None = None, trace: bool = False,
        order: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, StepTrace | None]:
        """One step on unit-first states, differentiated by autograd (the plain path; rims_core.step.rim_step).

        h, c: (K, B, H); key: (B, nh, dk); u: (K, B, nh, G) from precompute; w: from prepare();
        valid: (B,) bool or None (False freezes a sample: a padded step of a shorter sequence);
        in_mask (K, B, nh) and comm_mask (B, ch, K, K): this step's dropout masks, scaled, or None;
        order (K, B): this step's tie-breaking unit order (tie_orders) or None.
        """
        h, c, active, att, comm_att = rim_step(self.config, w, h, c, key, u, valid, in_mask, comm_mask, order)
        out: StepTrace | None = None
        if trace:
            out = {"active": active, "input_attention": att.detach()}
            if comm_att is not None:
                out["comm_attention"] = comm_att.detach()
        return h, c, out

    def scan(
        self, x: Tensor, h: Tensor, c: Tensor | None, valid: Tensor | None = None, trace: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None, dict[str, Tensor] | None]:
        """Run T steps.

        x: (T, B, D); h, c: (B, K*H) (c None for GRU); valid: (T, B) bool or None.
        Returns output (T, B, K*H) (zeros at invalid steps), h_T, c_T (B, K*H), and a trace dict
        {"active": (T, B, K) bool, "input_attention": (T, B, K, nh), "comm_attention": (T, B, nh, K, K)}
        when trace is True.
        """
        cfg = self.config
        T, B, _ = x.shape
        K, H = cfg.num_units, cfg.unit_size
        w = self.prepare()
        in_mask, comm_mask = self.dropout_masks(T, B, x)
        orders = self.tie_orders(T, B, x.device)  # after the masks: the masks do not depend on it
        h = h.view(B, K, H).transpose(0, 1).contiguous()  # (K, B, H)
        c = c.view(B, K, H).transpose(0, 1).contiguous() if c is not None else None
        if self.use_fused and self._compiled_step is None:
            keys, z, w_u = self.input_maps(x, w.gate_scale)
            amp = torch.is_autocast_enabled(x.device.type)
            if amp:  # the input maps (all steps at once) ran under autocast; the recurrence runs in h's precision
                keys, z, w_u = keys.to(h.dtype), z.to(h.dtype), w_u.to(h.dtype)
            tensors = (keys, z, w_u, h, c, w.w_hq, w.b_hq, w.b_ih, w.comm_qkv, w.comm_w, w.comm_b)
            save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
            with torch.autocast(x.device.type, enabled=False) if amp else contextlib.nullcontext():
                out, h, c_out, act, att, P = RIMScan.apply(
                    self, save, keys, z, w_u, h, c if c is not None else h.new_empty(0), w.w_hq, w.b_hq, w.b_ih,
                    w.comm_qkv, w.comm_w, w.comm_b, in_mask, comm_mask, valid, orders)
            c = c_out if c is not None else None
            traces = {"active": act, "input_attention": att, "comm_attention": P} if trace else None
        else:
            keys, u = self.precompute(x, w.gate_scale)
            out, h, c, traces = self._scan_steps(keys, u, h, c, w, valid, in_mask, comm_mask, trace, orders)
        out = out.permute(0, 2, 1, 3).reshape(T, B, K * H)  # (T, K, B, H) -> (T, B, K*H)
        h_T = h.transpose(0, 1).reshape(B, K * H)
        c_T = c.transpose(0, 1).reshape(B, K * H) if c is not None else None
        tr_out = None
        if trace:
            tr_out = {"active": traces["active"].transpose(1, 2),  # (T, B, K)
                      "input_attention": traces["input_attention"].transpose(1, 2)}  # (T, B, K, nh)
            if self.comm_qkv is not None:
                tr_out["comm_attention"] = traces["comm_attention"]  # (T, B, ch, K, K)
        return out, h_T, c_T, tr_out

    def _scan_steps(self, keys, u, h, c, w, valid, in_mask, comm_mask, trace, orders=None):
        """The plain path: a Python loop over RIMCell.step, differentiated by autograd."""
        step = self._compiled_step or self.step
        outs, traces = [], []
        # unbind, not keys[t]: indexing would make backward allocate and add a full-size zero gradient
        # for every step (quadratic in T); unbind's backward stacks the step gradients once.
        keys_t, u_t = keys.unbind(0), u.unbind(1)
        in_t = in_mask.unbind(0) if in_mask is not None else [None] * len(keys_t)
        cm_t = comm_mask.unbind(0) if comm_mask is not None else [None] * len(keys_t)
        or_t = orders.unbind(0) if orders is not None else [None] * len(keys_t)
        for t in range(len(keys_t)):
            vt = None if valid is None else valid[t]
            h, c, tr = step(h, c, keys_t[t], u_t[t], w, vt, in_t[t], cm_t[t], trace, or_t[t])
            outs.append(h if vt is None else h * vt.unsqueeze(-1).to(h.dtype))
            if tr is not None:
                traces.append(tr)
        stacked = None
        if trace:
            stacked = {k: torch.stack([tr[k] for tr in traces]) for k in traces[0]}
        return torch.stack(outs), h, c, stacked

    def dropout_masks(self, T: int, B: int, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Dropout masks for all T steps, drawn at once and scaled by 1/(1-p): input attention (T, K, B, nh),
        communication (T, B, ch, K, K); None in eval mode or where p = 0."""
        cfg = self.config
        in_mask = comm_mask = None
        if self.training:
            p = cfg.input_attention.dropout
            if p > 0:
                shape = (T, cfg.num_units, B, cfg.input_attention.heads)
                in_mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)
            p = cfg.comm.dropout
            if p > 0 and cfg.comm.enabled:
                shape = (T, B, cfg.comm.heads, cfg.num_units, cfg.num_units)
                comm_mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)
        return in_mask, comm_mask

    # ------------------------------------------------------------------ nn.LSTMCell contract
    def forward(self, input: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None):
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B = x.shape[0]
        is_lstm = self.config.cell == "lstm"
        if hx is None:
            z = torch.zeros(B, self.hidden_size, dtype=x.dtype, device=x.device)
            h, c = z, (z if is_lstm else None)
        else:
            want = (B, self.hidden_size) if batched else (self.hidden_size,)
            h, c = unpack_state(name, hx, is_lstm, want)
            if not batched:
                h = h.unsqueeze(0)
                c = c.unsqueeze(0) if c is not None else None
        _, h1, c1, _ = self.scan(x.unsqueeze(0), h, c)
        if not batched:
            h1 = h1.squeeze(0)
            c1 = c1.squeeze(0) if c1 is not None else None
        return (h1, c1) if is_lstm else h1

"""RIMCell: one step of Recurrent Independent Mechanisms, a drop-in for nn.LSTMCell / nn.GRUCell.

Shape legend: T time, B batch, K units (num_units), k active units (top_k), H unit size
(hidden_size // K), D input size, G gate width (4H for LSTM, 3H for GRU), nh heads, dk key size,
dv value size. Public states are (B, K * H), unit-major; inside the scan they are unit-first
(K, B, H), so that every per-unit matmul is a single torch.bmm over the unit dimension.

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
matmul before the scan, and each step only scales it. This is exact, not an approximation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .config import CommConfig, InputAttentionConfig, RIMConfig
from .fused import RIMScan, _tanh

__all__ = ["CONVEX_GATE_BIAS", "RIMCell", "StepTrace", "unpack_state"]

StepTrace = dict[str, Tensor]

#: Initial bias of the convex communication gate g (comm.output="convex"): sigmoid(-3) = 0.05, so a unit starts
#: close to its own update h~ and learns how far to open the gate, as a highway layer's transform gate starts
#: closed (Srivastava et al., 2015, recommend -1 to -3). With the gate half open at the start (bias ~0), a GRU RIM
#: stayed at the unigram loss for 300 updates of the word-LM check, where -3 let it learn (docs/model.md).
CONVEX_GATE_BIAS = -3.0


class Prepared(NamedTuple):
    """Per-scan weights (see RIMCell.prepare)."""

    w_hq: Tensor  # (K, H, G + nh*dk): [W^hh | W^q / sqrt(dk)]
    b_hq: Tensor | None  # (K, 1, G + nh*dk)
    b_ih: Tensor | None  # (K, 1, G), GRU only
    gate_scale: Tensor  # (G,)
    comm_qkv: Tensor | None  # (K, H, heads * (2 dk + dv)), q columns / sqrt(dk)
    comm_w: Tensor | None  # (K, heads*dv, H) residual: W^o; bounded forms (K, heads*dv, 2H): [2 W^o | W^g]
    comm_b: Tensor | None  # (K, 1, 2H): [2 b^o | b^g], bounded forms with bias only


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


class RIMCell(nn.Module):
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
    #: over step() differentiated by autograd; torch.compile (compile_step) and autocast always use the latter.
    use_fused: bool = True
    #: In training mode, break exact selection ties (every unit at a zero state) uniformly at random; False breaks
    #: them by unit index in both modes. Set it False where a training-mode forward must reproduce an eval-mode
    #: one, e.g. an RL learner recomputing the logits its eval-mode actors acted on.
    random_ties: bool = True

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
        self._compiled_step = None
        self.reset_parameters()

    def compile_step(self, **compile_kwargs: Any) -> None:
        """Run each step through torch.compile (fuses the pointwise work; the time loop stays in Python,
        so compilation does not grow with sequence length). kwargs go to torch.compile."""
        self._compiled_step = torch.compile(self.step, **compile_kwargs)

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

    # ------------------------------------------------------------------ the scan
    def input_maps(self, x: Tensor, gate_scale: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The input side of every step, for all steps at once.

        Returns keys (T, B, nh, dk), features z (T, B, F) and per-unit maps w_u (K, F, nh*G) such that
        u_t = z_t @ w_u[k] (viewed (nh, G)) is x_t W^v_h W^ih_k,h for every head h: the input part of unit k's
        gates before scaling by its attention. With several heads, or when it costs fewer multiply-adds for
        these T*B rows, W^v is folded into W^ih (z = x, F = D); otherwise z = x W^v and w_u = W^ih (F = dv).
        Folding costs K*D*dv*G once and saves work per row, so long sequences and small inputs fold, while
        one step of a small batch (an RL policy acting) does not. gate_scale multiplies the gate columns.
        """
        cfg = self.config
        T, B, D = x.shape
        K, nh, dk, dv = cfg.num_units, cfg.input_attention.heads, cfg.input_attention.key_size, cfg.input_value_size
        G = self.weight_ih.shape[-1]
        keys = (x @ self.inp_key).view(T, B, nh, dk)
        w_ih = self.weight_ih if gate_scale is None else self.weight_ih * gate_scale  # (K, nh*dv, G)
        N = T * B
        folded, unfolded = K * G * D * (dv + N), N * dv * (D + K * G)  # multiply-adds of the two ways
        if nh > 1 or folded <= unfolded:
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

    def select(self, score: Tensor, order: Tensor | None = None) -> Tensor:
        """score: (K, B) attention on the real input (averaged over heads) -> active mask (K, B), bool.

        topk keeps the k units that attend least to the null row, i.e. most to x_t. Exact ties (every unit
        scores 1/2 at a zero state) are broken by ``order``, a (K, B) random permutation of the units per
        sample (tie_orders, drawn in training), else by the lower unit index (eval: deterministic).
        """
        cfg = self.config
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

    def tie_orders(self, T: int, B: int, device: torch.device) -> Tensor | None:
        """Random unit orders (T, K, B) that break exact selection ties in training, drawn at once for all
        steps; None in eval mode, with random_ties off, or when nothing can tie (selection other than topk, or
        top_k = num_units)."""
        cfg = self.config
        if not (self.training and self.random_ties) or cfg.selection != "topk" or cfg.top_k == cfg.num_units:
            return None
        return torch.rand(T, cfg.num_units, B, device=device).argsort(dim=1)

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

    def step(
        self, h: Tensor, c: Tensor | None, key: Tensor, u: Tensor, w: Prepared, valid: Tensor | None,
        in_mask: Tensor | None = None, comm_mask: Tensor | None = None, trace: bool = False,
        order: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, StepTrace | None]:
        """One step on unit-first states, differentiated by autograd (the plain path).

        h, c: (K, B, H); key: (B, nh, dk); u: (K, B, nh, G) from precompute; w: from prepare();
        valid: (B,) bool or None (False freezes a sample: a padded step of a shorter sequence);
        in_mask (K, B, nh) and comm_mask (B, ch, K, K): this step's dropout masks, scaled, or None;
        order (K, B): this step's tie-breaking unit order (tie_orders) or None.
        """
        cfg = self.config
        K, B, _H = h.shape
        nh, dk = cfg.input_attention.heads, cfg.input_attention.key_size
        G = u.shape[-1]
        hq = torch.bmm(h, w.w_hq) if w.b_hq is None else torch.baddbmm(w.b_hq, h, w.w_hq)  # (K, B, G + nh*dk)
        gh, q = hq.split([G, nh * dk], dim=-1)
        s = (q.view(K, B, nh, dk) * key).sum(-1)  # (K, B, nh) scaled score of x_t; the null's is 0
        att = torch.sigmoid(s)  # = softmax([0, s])[1]: attention on x_t, per head
        active = self.select(att.squeeze(-1) if nh == 1 else att.mean(-1), order)  # (K, B)
        if valid is not None:
            active = active & valid
        att_d = att if in_mask is None else att * in_mask
        m = active.unsqueeze(-1)  # (K, B, 1)
        if cfg.cell == "lstm":
            if nh == 1:
                gates = torch.addcmul(gh, att_d, u.squeeze(-2))  # (K, B, G)
            else:
                gates = gh + (att_d.unsqueeze(-1) * u).sum(-2)
            i, f, g, o = torch.sigmoid(gates).chunk(4, dim=-1)  # g holds (tanh(g) + 1) / 2
            c_new = f * c + i * (2 * g - 1)
            h_new = o * _tanh(c_new)
            c = torch.where(m, c_new.to(c.dtype), c)
        else:
            gi = (att_d.unsqueeze(-1) * u).sum(-2) if nh > 1 else att_d * u.squeeze(-2)  # (K, B, G)
            if w.b_ih is not None:
                gi = gi + w.b_ih
            ir, iz, in_ = gi.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = _tanh(in_ + r * hn)
            h_new = n + z * (h - n)  # = (1 - z) n + z h
        h = torch.where(m, h_new.to(h.dtype), h)  # inactive units keep h bit for bit
        comm_att = None
        if w.comm_qkv is not None:
            h, comm_att = self._communicate(h, m, w, comm_mask)
        out: StepTrace | None = None
        if trace:
            out = {"active": active, "input_attention": att.detach()}
            if comm_att is not None:
                out["comm_attention"] = comm_att.detach()
        return h, c, out

    def _communicate(self, h: Tensor, m: Tensor, w: Prepared, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Active units read all units' h~ (multi-head attention) and update with it as comm.output says:
        h (K, B, H), m (K, B, 1)."""
        c, form = self.config.comm, self.config.comm_output
        K, B, H = h.shape
        nh, dk, dv = c.heads, c.key_size, c.value_size
        qkv = torch.bmm(h, w.comm_qkv).view(K, B, nh, 2 * dk + dv).permute(1, 2, 0, 3)  # (B, nh, K, .)
        q, k, v = qkv.split([dk, dk, dv], dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, nh, K, K); q carries 1/sqrt(dk)
        read = (att if mask is None else att * mask) @ v  # (B, nh, K, dv)
        read = read.permute(2, 0, 1, 3).reshape(K, B, nh * dv)
        if form == "residual":
            return torch.where(m, h + torch.bmm(read, w.comm_w).to(h.dtype), h), att
        pre = torch.bmm(read, w.comm_w) if w.comm_b is None else torch.baddbmm(w.comm_b, read, w.comm_w)
        s = torch.sigmoid(pre).to(h.dtype)  # (K, B, 2H): [(tanh(a_o) + 1) / 2 | g]
        t, g = 2 * s[..., :H] - 1, s[..., H:]
        new = h + g * t if form == "gated_residual" else h + g * (t - h)  # convex: (1 - g) h~ + g t
        return torch.where(m, new, h), att

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
        if self.use_fused and self._compiled_step is None and not torch.is_autocast_enabled(x.device.type):
            keys, z, w_u = self.input_maps(x, w.gate_scale)
            tensors = (keys, z, w_u, h, c, w.w_hq, w.b_hq, w.b_ih, w.comm_qkv, w.comm_w, w.comm_b)
            save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
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

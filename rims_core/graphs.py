"""Whole-sequence CUDA graphs for a RIM: one launch for the forward and one for the backward.

On a GPU a RIM step is ~30 small kernels, so at the paper's sizes the Python loop is launch-bound
(about 25x cuDNN's fused nn.LSTM on an H200). Capturing the whole forward and backward with
torch.cuda.make_graphed_callables removes that overhead (2.9x / 5x of cuDNN, see docs/benchmarks.md).

cuda_graphed captures one static shape. GraphedRIM drops in for a RIM in a training loop: it keeps a few
graphs and serves every input shape from one that covers it, padding time and batch (so the last short batch or
a shorter sequence does not recapture), and falls back to the RIM itself wherever a graph cannot serve.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .rim import RIM, RIMTrace

__all__ = ["GraphedRIM", "bucket", "cuda_graph_inference", "cuda_graphed", "install_graphs"]


class _Flat(nn.Module):
    """RIM with flat outputs (out, h_n[, c_n]): what make_graphed_callables accepts."""

    def __init__(self, rim: RIM) -> None:
        super().__init__()
        self.rim = rim

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out, state = self.rim(x)
        return (out, *state) if isinstance(state, tuple) else (out, state)


def cuda_graphed(rim: RIM, sample_input: Tensor, num_warmup_iters: int = 3) -> Callable[[Tensor], tuple]:
    """A callable with RIM's return signature whose forward and backward replay CUDA graphs.

    Every later input must have sample_input's shape, dtype and device (graphs are static); the initial
    state is zero (hx is not an input); training/eval mode is fixed at capture. Dropout stays random per
    call (PyTorch registers the generator with the graph). Parameters are shared with ``rim``, so an
    optimizer over ``rim.parameters()`` trains the graphed model.

    Capture before running an eager backward on the same device in the process: on torch 2.11 / H200 a
    capture after one failed with "operation would make the legacy stream depend on a capturing blocking
    stream", while the same capture first, then eager passes, worked.
    """
    if sample_input.device.type != "cuda":
        raise ValueError(f"cuda_graphed: Expected a CUDA sample_input, got device {sample_input.device}")
    graphed = torch.cuda.make_graphed_callables(_Flat(rim), (sample_input,), num_warmup_iters=num_warmup_iters)
    is_lstm = rim.config.cell == "lstm"

    def run(x: Tensor) -> tuple:
        outs = graphed(x)
        return (outs[0], (outs[1], outs[2])) if is_lstm else (outs[0], outs[1])

    return run


def bucket(n: int, per_octave: int = 8) -> int:
    """n rounded up to the next of per_octave sizes per power of two (8: at most 12.5% padding): 1..16 stay,
    then 18, 20, ..., 30, 32, 36, ..., 196 -> 208."""
    if n <= 2 * per_octave:
        return n
    step = 2 ** (n.bit_length() - 1 - int(math.log2(per_octave)))
    return -(-n // step) * step


class _Padded(nn.Module):
    """RIM over padded, time-major input with an explicit valid mask and initial state: tensors in, tensors out
    (with trace: the trace's tensors after the state, per RIMTrace's fields)."""

    def __init__(self, rim: RIM, trace: bool = False) -> None:
        super().__init__()
        self.rim, self.trace = rim, trace

    def forward(self, x: Tensor, valid: Tensor, h0: Tensor, *c0: Tensor) -> tuple[Tensor, ...]:
        out, h_n, c_n, traces = self.rim._layers(x, h0, c0[0] if c0 else None, valid, None, self.trace)
        outs = (out, h_n) if c_n is None else (out, h_n, c_n)
        if self.trace:
            outs += tuple(torch.stack([t[k] for t in traces]) for k in ("active", "input_attention"))
            if traces[0].get("comm_attention") is not None:
                outs += (torch.stack([t["comm_attention"] for t in traces]),)
        return outs


class GraphedRIM(nn.Module):
    """A RIM whose forward (and backward) replay whole-sequence CUDA graphs, shapes bucketed.

    Call it like the RIM (Tensor or PackedSequence input, time- or batch-first as the RIM is, hx optional):
    returns (output, state) as the RIM does, the same values on the real time steps and batch rows. An input
    (T, B) is served by a kept graph of shape (T', B') >= (T, B) whose padding is at most ``max_padding`` of the
    real work; otherwise a graph is captured, at (T, B) for the first and at bucket(T), bucket(B) afterwards (at
    (T, B) where that rounding exceeds max_padding), and the least recently used of more than ``max_graphs`` is
    dropped. Padded time steps are masked invalid (the state stops at T, as with packed sequences; a packed
    input's own padding is masked the same way); padded rows start from zero and are sliced off.

    Two kinds of graph: with grad enabled in training mode, forward and backward (make_graphed_callables); with
    grad disabled (no_grad, inference_mode: an RL policy's acting step, evaluation), the forward alone (a
    torch.cuda.CUDAGraph over static buffers; ``inference=False`` turns these off). The mode, autocast's dtype
    and which inputs require grad are part of a graph's key.

    Without grad, return_trace and trace hooks are served too (the graph also returns the trace's tensors: an RL
    policy's acting step collects its unit selections). The RIM itself runs instead (eagerly) in eval mode with
    grad enabled, for unbatched input, with return_trace or trace hooks under grad, on a device other than CUDA,
    under autocast with its weight cache on (graphs need ``torch.autocast(..., cache_enabled=False)``), and
    after a failed capture (``status`` says why). With dropout
    or random tie-breaks a padded graph draws its random numbers for the padded shape: the same distribution as
    the RIM's, not the same values.
    Parameters are the RIM's: an optimizer over either trains both. The RIM's own forward hooks do not run (use
    install_graphs to keep them). ``capture`` replaces torch.cuda.make_graphed_callables and
    ``capture_inference`` replaces cuda_graph_inference (tests on CPU pass ones that return the module
    uncaptured).
    """

    def __init__(self, rim: RIM, max_graphs: int = 8, max_padding: float = 0.25,
                 capture: Callable[..., Any] | None = None, inference: bool = True,
                 capture_inference: Callable[..., Any] | None = None) -> None:
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f"GraphedRIM: Expected max_graphs >= 1, got {max_graphs}")
        if max_padding < 0:
            raise ValueError(f"GraphedRIM: Expected max_padding >= 0, got {max_padding}")
        self.rim = rim
        self.max_graphs, self.max_padding = max_graphs, max_padding
        self._capture, self._capture_inference, self.inference = capture, capture_inference, inference
        self._graphs: OrderedDict[tuple, Callable[..., tuple[Tensor, ...]]] = OrderedDict()
        self._full: dict[tuple, Tensor] = {}  # per graph of an exact shape: its all-valid mask, made once
        #: "graphs" while graphs serve, "off: <why>" after a capture failed (the RIM then runs eagerly).
        self.status = "graphs"
        #: how many graphs were captured so far (a counter for tests and the trainable's tags)
        self.captures = 0

    @property
    def summary(self) -> str:
        """"graphs, N captured" while graphs serve, else status ("off: why")."""
        return f"graphs, {self.captures} captured" if self.status == "graphs" else self.status

    def __getattr__(self, name: str) -> Any:  # the RIM's attributes (config, hidden_size, ...) read through
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("rim"), name)

    def _kind(self, input: Tensor | PackedSequence, trace: bool) -> str | None:
        """'train' (forward and backward graphs), 'infer' (forward only, grad disabled) or None (eager)."""
        rim = self.rim
        data = input.data if isinstance(input, PackedSequence) else input
        if self.status != "graphs" or (not isinstance(input, PackedSequence) and input.dim() != 3):
            return None
        # make_graphed_callables refuses autocast's weight cache: autocast(..., cache_enabled=False) to use graphs
        if torch.is_autocast_enabled(data.device.type) and torch.is_autocast_cache_enabled():
            return None
        if torch.is_grad_enabled():
            ok = rim.training and (self._capture is not None or data.is_cuda) and not (trace or rim._trace_hooks)
            return "train" if ok else None
        ok = self.inference and (self._capture_inference is not None or data.is_cuda)
        return "infer" if ok else None

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, *, return_trace: bool = False):
        rim = self.rim
        want_trace = return_trace or bool(rim._trace_hooks)
        kind = self._kind(input, return_trace)
        if kind is None:
            return RIM.forward(rim, input, hx, return_trace=return_trace)  # the class's: see install_graphs
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # (T, B, D), the caller's order, as the RIM reads it
        else:
            x = input.transpose(0, 1) if rim.batch_first else input
        T, B, _ = x.shape
        h0, c0 = rim._check_hx(hx, B, True, x.dtype, x.device)
        amp = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        if kind == "train":
            mode: tuple = (x.requires_grad, h0.requires_grad, c0 is not None and c0.requires_grad, amp)
        else:
            mode = ("infer", rim.training, torch.is_inference_mode_enabled(), amp, want_trace)
        key = self._find(T, B, x.dtype, x.device, mode)
        if key is None:
            first = not self._graphs
            Tg, Bg = (T, B) if first else (bucket(T), bucket(B))
            if Tg * Bg > (1 + self.max_padding) * T * B:  # rounding both beyond the bound: this shape exactly
                Tg, Bg = T, B
            key = (Tg, Bg, x.dtype, x.device, mode)
            try:
                self._graphs[key] = self._build(key, x, h0, c0)
            except Exception as e:  # a capture that fails leaves the RIM eager, with the reason
                self.status = f"off: {type(e).__name__}: {e}"
                self._graphs.clear()
                self._full.clear()
                return RIM.forward(rim, input, hx, return_trace=return_trace)
            self.captures += 1
            while len(self._graphs) > self.max_graphs:
                self._full.pop(self._graphs.popitem(last=False)[0], None)
        self._graphs.move_to_end(key)
        Tg, Bg = key[0], key[1]
        if (Tg, Bg) == (T, B) and not packed:  # the exact shape (every acting step): no padding, a kept mask
            if key not in self._full:
                self._full[key] = torch.ones(T, B, dtype=torch.bool, device=x.device)
            args = [x, self._full[key], h0, *([] if c0 is None else [c0])]
        else:
            pad = (0, 0, 0, Bg - B, 0, Tg - T)  # (T, B, .) padded at the end of time and batch
            valid = torch.zeros(Tg, Bg, dtype=torch.bool, device=x.device)
            if packed:
                valid[:T, :B] = (torch.arange(T)[:, None] < lengths[None, :]).to(x.device)
            else:
                valid[:T, :B] = True
            args = [nn.functional.pad(x, pad), valid, nn.functional.pad(h0, pad[:4])]
            if c0 is not None:
                args.append(nn.functional.pad(c0, pad[:4]))
        outs = self._graphs[key](*args)
        out, h_n = outs[0][:T, :B], outs[1][:, :B]
        if packed:
            out = RIM._repack(out, input)
        elif rim.batch_first:
            out = out.transpose(0, 1)
        state = (h_n, outs[2][:, :B]) if c0 is not None else h_n
        if not want_trace:
            return out, state
        traced = [t[:, :T, :B] for t in outs[3 if c0 is not None else 2:]]  # each (S, T, B, ...)
        trace = RIMTrace(traced[0], traced[1], traced[2] if len(traced) > 2 else None)
        for hook in list(rim._trace_hooks.values()):
            hook(rim, trace)
        return (out, state, trace) if return_trace else (out, state)

    def _find(self, T: int, B: int, dtype, device, mode) -> tuple | None:
        """The kept graph that covers (T, B) with the least padding within max_padding, or None."""
        best = None
        for key in self._graphs:
            Tg, Bg, dt, dev, m = key
            if dt == dtype and dev == device and m == mode and Tg >= T and Bg >= B \
                    and Tg * Bg <= (1 + self.max_padding) * T * B and (best is None or Tg * Bg < best[0] * best[1]):
                best = key
        return best

    def _build(self, key: tuple, x: Tensor, h0: Tensor, c0: Tensor | None) -> Callable[..., tuple[Tensor, ...]]:
        Tg, Bg, dtype, device, mode = key
        infer = mode[0] == "infer"
        trace = infer and mode[4]
        gx, gh, gc = (False, False, False) if infer else mode[:3]
        S, H = h0.shape[0], h0.shape[-1]
        sample = [torch.zeros(Tg, Bg, x.shape[-1], dtype=dtype, device=device, requires_grad=gx),
                  torch.ones(Tg, Bg, dtype=torch.bool, device=device),
                  torch.zeros(S, Bg, H, dtype=dtype, device=device, requires_grad=gh)]
        if c0 is not None:
            sample.append(torch.zeros(S, Bg, H, dtype=dtype, device=device, requires_grad=gc))
        if infer:
            return (self._capture_inference or cuda_graph_inference)(_Padded(self.rim, trace), tuple(sample),
                                                                     num_warmup_iters=3)
        capture = self._capture or torch.cuda.make_graphed_callables
        return capture(_Padded(self.rim), tuple(sample), num_warmup_iters=3)


def cuda_graph_inference(module: nn.Module, sample_args: tuple[Tensor, ...],
                         num_warmup_iters: int = 3) -> Callable[..., tuple[Tensor, ...]]:
    """module's forward over sample_args' shapes as one torch.cuda.CUDAGraph, for calls without autograd.

    Returns run(*args) -> outputs: copies args into the graph's static inputs, replays, and returns copies of
    its static outputs (the next replay overwrites them). Capture and calls run in the caller's grad mode
    (no_grad or inference_mode); the warm-up passes run on a side stream, as torch.cuda.graph asks.
    """
    static = [a.detach().clone() for a in sample_args]
    side = torch.cuda.Stream(device=static[0].device)
    side.wait_stream(torch.cuda.current_stream(static[0].device))
    with torch.cuda.stream(side):
        for _ in range(num_warmup_iters):
            module(*static)
    torch.cuda.current_stream(static[0].device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = module(*static)

    def run(*args: Tensor) -> tuple[Tensor, ...]:
        for buf, a in zip(static, args, strict=True):
            buf.copy_(a)
        graph.replay()
        return tuple(o.clone() for o in outs)

    return run


def install_graphs(rim: RIM, **kwargs: Any) -> GraphedRIM:
    """Make ``rim``'s own forward a GraphedRIM's (kwargs: GraphedRIM's), in place: a model holding the RIM keeps
    its module tree and state_dict keys, so checkpoints load with graphs on or off. Returns the GraphedRIM (its
    ``status`` and ``captures``); ``del rim.forward`` undoes it."""
    graphed = GraphedRIM(rim, **kwargs)
    rim.forward = graphed.forward  # an instance attribute: nn.Module.__call__ (hooks included) calls it
    return graphed

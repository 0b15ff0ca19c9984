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
from torch.nn.utils.rnn import PackedSequence

from .rim import RIM

__all__ = ["GraphedRIM", "bucket", "cuda_graphed", "install_graphs"]


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
    """RIM over padded, time-major input with an explicit valid mask and initial state: tensors in, tensors out."""

    def __init__(self, rim: RIM) -> None:
        super().__init__()
        self.rim = rim

    def forward(self, x: Tensor, valid: Tensor, h0: Tensor, *c0: Tensor) -> tuple[Tensor, ...]:
        out, h_n, c_n, _ = self.rim._layers(x, h0, c0[0] if c0 else None, valid, None, False)
        return (out, h_n) if c_n is None else (out, h_n, c_n)


class GraphedRIM(nn.Module):
    """A RIM whose training-mode forward and backward replay whole-sequence CUDA graphs, shapes bucketed.

    Call it like the RIM (Tensor input, time- or batch-first as the RIM is, hx optional): returns (output,
    state) as the RIM does, the same values on the real time steps and batch rows. An input (T, B) is served by a
    kept graph of shape (T', B') >= (T, B) whose padding is at most ``max_padding`` of the real work; otherwise
    a graph is captured, at (T, B) for the first and at bucket(T), bucket(B) afterwards (at (T, B) where that
    rounding exceeds max_padding), and the least recently used of more than ``max_graphs`` is dropped. Padded
    time steps are masked invalid (the state stops at T, as with packed sequences); padded rows start from zero
    and are sliced off.

    The RIM itself runs instead (eagerly) in eval mode, without grad, for packed or unbatched input, with
    return_trace or trace hooks, on a device other than CUDA, under autocast with its weight cache on (graphs need
    ``torch.autocast(..., cache_enabled=False)``; autocast's dtype is part of a graph's key), and after a failed
    capture (``status`` says why). With dropout or random tie-breaks a padded graph draws its random numbers for the
    padded shape: the same distribution as the RIM's, not the same values.
    Parameters are the RIM's: an optimizer over either trains both. The RIM's own forward hooks do not run (use
    install_graphs to keep them). ``capture`` replaces
    torch.cuda.make_graphed_callables (tests on CPU pass one that returns the module uncaptured).
    """

    def __init__(self, rim: RIM, max_graphs: int = 8, max_padding: float = 0.25,
                 capture: Callable[..., Any] | None = None) -> None:
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f"GraphedRIM: Expected max_graphs >= 1, got {max_graphs}")
        if max_padding < 0:
            raise ValueError(f"GraphedRIM: Expected max_padding >= 0, got {max_padding}")
        self.rim = rim
        self.max_graphs, self.max_padding = max_graphs, max_padding
        self._capture = capture
        self._graphs: OrderedDict[tuple, Callable[..., tuple[Tensor, ...]]] = OrderedDict()
        #: "graphs" while graphs serve, "off: <why>" after a capture failed (the RIM then runs eagerly).
        self.status = "graphs"
        #: how many graphs were captured so far (a counter for tests and the trainable's tags)
        self.captures = 0

    def __getattr__(self, name: str) -> Any:  # the RIM's attributes (config, hidden_size, ...) read through
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("rim"), name)

    def _eager(self, input: Tensor) -> bool:
        rim = self.rim
        if isinstance(input, PackedSequence) or input.dim() != 3:
            return True
        capture_ok = self._capture is not None or input.is_cuda
        # make_graphed_callables refuses autocast's weight cache: autocast(..., cache_enabled=False) to use graphs
        amp_cache = torch.is_autocast_enabled(input.device.type) and torch.is_autocast_cache_enabled()
        return (not capture_ok or self.status != "graphs" or not rim.training or not torch.is_grad_enabled()
                or bool(rim._trace_hooks) or amp_cache)

    def forward(self, input: Tensor, hx: Any = None, *, return_trace: bool = False):
        rim = self.rim
        if return_trace or self._eager(input):
            return RIM.forward(rim, input, hx, return_trace=return_trace)  # the class's: see install_graphs
        x = input.transpose(0, 1) if rim.batch_first else input
        T, B, _ = x.shape
        h0, c0 = rim._check_hx(hx, B, True, x.dtype, x.device)
        amp = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        grads = (x.requires_grad, h0.requires_grad, c0 is not None and c0.requires_grad, amp)
        key = self._find(T, B, x.dtype, x.device, grads)
        if key is None:
            first = not self._graphs
            Tg, Bg = (T, B) if first else (bucket(T), bucket(B))
            if Tg * Bg > (1 + self.max_padding) * T * B:  # rounding both beyond the bound: this shape exactly
                Tg, Bg = T, B
            key = (Tg, Bg, x.dtype, x.device, grads)
            try:
                self._graphs[key] = self._build(key, x, h0, c0)
            except Exception as e:  # a capture that fails leaves the RIM eager, with the reason
                self.status = f"off: {type(e).__name__}: {e}"
                self._graphs.clear()
                return RIM.forward(rim, input, hx)
            self.captures += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        Tg, Bg = key[0], key[1]
        pad = (0, 0, 0, Bg - B, 0, Tg - T)  # (T, B, .) padded at the end of time and batch
        valid = torch.zeros(Tg, Bg, dtype=torch.bool, device=x.device)
        valid[:T, :B] = True
        args = [nn.functional.pad(x, pad), valid, nn.functional.pad(h0, pad[:4])]
        if c0 is not None:
            args.append(nn.functional.pad(c0, pad[:4]))
        outs = self._graphs[key](*args)
        out, h_n = outs[0][:T, :B], outs[1][:, :B]
        if rim.batch_first:
            out = out.transpose(0, 1)
        return out, ((h_n, outs[2][:, :B]) if c0 is not None else h_n)

    def _find(self, T: int, B: int, dtype, device, grads) -> tuple | None:
        """The kept graph that covers (T, B) with the least padding within max_padding, or None."""
        best = None
        for key in self._graphs:
            Tg, Bg, dt, dev, g = key
            if dt == dtype and dev == device and g == grads and Tg >= T and Bg >= B \
                    and Tg * Bg <= (1 + self.max_padding) * T * B and (best is None or Tg * Bg < best[0] * best[1]):
                best = key
        return best

    def _build(self, key: tuple, x: Tensor, h0: Tensor, c0: Tensor | None) -> Callable[..., tuple[Tensor, ...]]:
        Tg, Bg, dtype, device, (gx, gh, gc, _) = key
        S, H = h0.shape[0], h0.shape[-1]
        sample = [torch.zeros(Tg, Bg, x.shape[-1], dtype=dtype, device=device, requires_grad=gx),
                  torch.ones(Tg, Bg, dtype=torch.bool, device=device),
                  torch.zeros(S, Bg, H, dtype=dtype, device=device, requires_grad=gh)]
        if c0 is not None:
            sample.append(torch.zeros(S, Bg, H, dtype=dtype, device=device, requires_grad=gc))
        capture = self._capture or torch.cuda.make_graphed_callables
        return capture(_Padded(self.rim), tuple(sample), num_warmup_iters=3)


def install_graphs(rim: RIM, **kwargs: Any) -> GraphedRIM:
    """Make ``rim``'s own forward a GraphedRIM's (kwargs: GraphedRIM's), in place: a model holding the RIM keeps
    its module tree and state_dict keys, so checkpoints load with graphs on or off. Returns the GraphedRIM (its
    ``status`` and ``captures``); ``del rim.forward`` undoes it."""
    graphed = GraphedRIM(rim, **kwargs)
    rim.forward = graphed.forward  # an instance attribute: nn.Module.__call__ (hooks included) calls it
    return graphed

"""Whole-sequence CUDA graphs for a RIM: one launch for the forward and one for the backward.

On a GPU a RIM step is ~30 small kernels, so at the paper's sizes the Python loop is launch-bound
(about 25x cuDNN's fused nn.LSTM on an H200). Capturing the whole forward and backward with
torch.cuda.make_graphed_callables removes that overhead (2.9x / 5x of cuDNN, see docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .rim import RIM

__all__ = ["cuda_graphed"]


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

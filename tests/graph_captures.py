"""CPU stand-ins for the two CUDA graph captures, shared by the tests of rims_core.graphs and of its users.

A CUDA graph cannot be captured without a GPU, so these are the one mocked part of those tests: each keeps the
capture's contract (a callable that replays only the captured shapes; an inference graph that serves calls
without grad through buffers made at capture and returns copies), so everything around the capture runs for real.
The `gpu` tests capture real graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["static_buffers", "uncaptured"]


def uncaptured(module: nn.Module, sample_args: Sequence[torch.Tensor], num_warmup_iters: int = 3) -> Callable:
    """torch.cuda.make_graphed_callables' contract without CUDA: the module, called only with the sample's shapes
    and requires_grad flags (checked)."""
    shapes = [a.shape for a in sample_args]
    grads = [a.requires_grad for a in sample_args]

    def run(*args: torch.Tensor):
        assert [a.shape for a in args] == shapes, "a graph replays only its captured shapes"
        assert [a.requires_grad for a in args] == grads, "a graph replays only its captured requires_grad flags"
        return module(*args)
    return run


def static_buffers(module: nn.Module, sample_args: Sequence[torch.Tensor], num_warmup_iters: int = 3) -> Callable:
    """rims_core.graphs.cuda_graph_inference's contract without CUDA: the call's inputs are copied into buffers
    made at capture, the module runs on those, and the caller gets copies of the outputs; only without grad."""
    static = [a.detach().clone() for a in sample_args]

    def run(*args: torch.Tensor):
        assert not torch.is_grad_enabled(), "an inference graph serves calls without grad only"
        for buf, a in zip(static, args, strict=True):
            assert buf.shape == a.shape, "a graph replays only its captured shapes"
            buf.copy_(a)
        return tuple(o.clone() for o in module(*static))
    return run

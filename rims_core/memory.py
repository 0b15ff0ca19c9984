"""Activation memory: what autograd keeps for backward, and the setting that keeps less (RIMCell.recompute).

    saved_bytes(lambda: model(x)[0])   # bytes saved for backward by one forward
    set_recompute(model)               # every RIM cell of model keeps less and recomputes in backward
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["saved_bytes", "set_recompute"]


def saved_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs (each storage counted
    once, however many saved tensors view it; meta tensors not at all). fn's result is dropped."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def set_recompute(module: nn.Module, on: bool = True) -> int:
    """Set RIMCell.recompute on every RIM cell in ``module`` (itself included); returns how many cells.

    With it the fused scan saves the active units' gate sigmoids and the states, and its backward recomputes the
    rest (docs/model.md): the same gradients for about 40% of the activation memory, at some backward time."""
    from .cell import RIMCell

    if not isinstance(on, bool):
        raise TypeError(f"set_recompute: Expected on to be True or False, got {on!r}")
    cells = [m for m in module.modules() if isinstance(m, RIMCell)]
    for cell in cells:
        cell.recompute = on
    return len(cells)

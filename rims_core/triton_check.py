"""Turning the Triton step on for a model, after checking it against the torch step on the device at hand.

The kernels (rims_core.triton_step) are compiled per GPU and Triton version; a trial that trusted them blindly
could train on a miscompiled step. enable_triton runs one small scan (forward and backward, training mode:
dropout, random tie-breaks, communication) both ways on the device, once per process and device, and turns the
Triton step on only where outputs, selection masks and gradients agree.
"""

from __future__ import annotations

import torch
from torch import nn

from .triton_step import available

__all__ = ["enable_triton", "self_check"]

_CHECKED: dict[str, str | None] = {}
#: Let enable_triton decide for CPU devices too, running the kernels under Triton's interpreter (which needs
#: TRITON_INTERPRET=1 before triton is imported). Tests only (tests/conftest.py: triton_interpreter).
CPU_INTERPRETER = False
# float32 agreement of the two steps over the check's short scan (observed under the interpreter: <= 1e-6)
_RTOL, _ATOL = 1e-3, 1e-4


def self_check(device: torch.device | str) -> str | None:
    """Compare the Triton step with the torch step on ``device`` (cached per device): None if they agree,
    else why not (an error's first line, or which output differs and by how much). The global RNG state is
    left as it was."""
    key = str(torch.device(device))
    if key not in _CHECKED:
        _CHECKED[key] = _compare(torch.device(device))
    return _CHECKED[key]


def _compare(device: torch.device) -> str | None:
    from .rim import RIM

    try:  # grad on even when called from inference (an RL policy acting): the check runs a backward
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(0)
            rim = RIM(5, 24, device=device, num_units=4, top_k=2,
                      input_attention={"heads": 1, "key_size": 8, "dropout": 0.1},
                      comm={"heads": 2, "key_size": 4, "value_size": 4, "dropout": 0.1}).train()
            x = torch.randn(6, 3, 5, device=device)
            x[:, 0] = 0  # a zero input from a zero state: the units tie, the random tie-break decides
            results = []
            for on in (False, True):
                for c in rim.cells:
                    c.use_triton = on
                torch.manual_seed(1)
                rim.zero_grad(set_to_none=True)
                out, (h, c_n), trace = rim(x, return_trace=True)
                (out.square().sum() + h.sum() + c_n.sum()).backward()
                results.append((out.detach(), trace.active, {n: p.grad.clone() for n, p in rim.named_parameters()}))
    except Exception as e:  # a compile or launch error: the reason, not a crash of the trial
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    (o1, a1, g1), (o2, a2, g2) = results
    if not torch.equal(a1, a2):
        return "the selection masks differ from the torch step's"
    for name, x1, x2 in [("output", o1, o2), *((f"grad {n}", g1[n], g2[n]) for n in g1)]:
        if not torch.allclose(x1, x2, rtol=_RTOL, atol=_ATOL):
            return f"{name} differs from the torch step's by up to {(x1 - x2).abs().max().item():.3g}"
    return None


def enable_triton(module: nn.Module, device: torch.device | str, enabled: bool = True) -> str | None:
    """Turn the Triton step on for every RIMCell in ``module`` where it can run on ``device`` and passes
    self_check; off otherwise.

    Returns what to record: None where there is nothing to decide (no RIM cell, or a CPU device: the kernels
    are for CUDA; with CPU_INTERPRETER, tests decide for CPU devices too, under Triton's interpreter), "on", or
    "off: why" (``enabled`` False, triton not installed, or the check's reason).
    """
    from .cell import RIMCell

    cells = [m for m in module.modules() if isinstance(m, RIMCell)]
    if not cells:
        return None
    device = torch.device(device)
    status: str | None
    if not enabled:
        status = "off: turned off by the setting"
    elif device.type != "cuda" and not CPU_INTERPRETER:
        status = None
    elif not available(device):
        status = None if device.type != "cuda" else "off: triton is not installed (pip install 'rims-lab[gpu]')"
    else:
        reason = self_check(device)
        status = "on" if reason is None else f"off: {reason}"
    for c in cells:
        c.use_triton = status == "on"
    return status

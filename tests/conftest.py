"""Settings for the whole test session, made before any test module imports torch.

OpenMP threads that run out of work spin while they wait for the next parallel region. On a machine whose cores
are busy with other work (CI shares 2 cores with other jobs) two spinning threads fight the other processes and
each other: the demo's training step took 1.3-1.6 s with 2 torch threads where 1 thread took 0.1 s. Passive
waiting removes the spin and keeps the threads (0.18 s). Set here in the environment, it holds for this process
and for everything the tests start: subprocesses, `mlflow server`, Ray and its workers (all inherit it). A value
already set by the user wins.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Triton's interpreter (TRITON_INTERPRET=1: the GPU kernels run on CPU tensors) where there is no GPU, for the
# kernels' tests (tests/rims_core/test_triton_step.py). Set here, before anything imports triton (torch.compile
# does): triton.language's own jitted helpers are built when it is imported, and an interpreted kernel cannot
# call helpers built for a GPU. It makes nothing run interpreted by itself: only use_triton=True, or
# enable_triton under the triton_interpreter fixture below, does.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # after the environment settings above, which must precede any torch import


@pytest.fixture
def triton_interpreter(monkeypatch):
    """Let rims_core.enable_triton use Triton's interpreter on CPU tensors, for this test only, where there is
    no GPU (a CUDA machine runs the kernels compiled), with a fresh self-check cache. Scoped to the test: left
    on, every later CPU trial in this process would turn the (slow) interpreted kernels on."""
    import torch

    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1", "TRITON_INTERPRET=1 must be set before triton is imported"
        monkeypatch.setattr("rims_core.triton_check.CPU_INTERPRETER", True)
    monkeypatch.setattr("rims_core.triton_check._CHECKED", {})

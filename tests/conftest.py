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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # after the environment settings above, which must precede any torch import


@pytest.fixture
def triton_interpreter(monkeypatch):
    """Triton's interpreter (TRITON_INTERPRET=1: the GPU kernels run on CPU tensors) for this test only, where
    there is no GPU, and a fresh self-check cache (rims_core.triton_check). Scoped to the test: left set, it
    would let every later CPU trial turn the (slow) interpreted kernels on."""
    import torch

    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr("rims_core.triton_check._CHECKED", {})

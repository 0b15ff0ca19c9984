"""The Triton step (rims_core.triton_step) against the plain fused step (rims_core.step.rim_step).

Without a GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set for each test by the
triton_interpreter fixture, tests/conftest.py), which executes them on CPU tensors with numpy: the same kernels
a GPU compiles, not a mock. Both paths go through RIMScan, so the outputs, final states, selection masks,
attentions and every gradient (the hand-written backward on the tensors each step saved) are compared.
float32: the kernels compute in float32.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rims_core import RIM, saved_bytes, set_recompute
from rims_core.cell import RIMCell
from rims_core.triton_step import available, triton_rim_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.usefixtures("triton_interpreter")  # tests/conftest.py


def run(rim, x, triton, seed=0, hx=None):
    for c in rim.cells:
        c.use_triton = triton
    torch.manual_seed(seed)  # same dropout masks, tie orders and random selections on both paths
    rim.zero_grad(set_to_none=True)
    out, state, tr = rim(x, hx, return_trace=True)
    data = out.data if hasattr(out, "batch_sizes") else out
    states = state if isinstance(state, tuple) else (state,)
    w = torch.linspace(-1, 1, data.numel(), dtype=data.dtype, device=data.device).view_as(data)
    loss = (data * w).sum() + sum((s * s).sum() for s in states)
    loss.backward()
    return data, states, tr, {n: p.grad.clone() for n, p in rim.named_parameters()}


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0])
    for s1, s2 in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(s1, s2)
    assert torch.equal(a[2].active, b[2].active)
    torch.testing.assert_close(a[2].input_attention, b[2].input_attention)
    if a[2].comm_attention is not None:
        torch.testing.assert_close(a[2].comm_attention, b[2].comm_attention)
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], msg=n)


def make(cell="lstm", heads=1, comm="residual", bias=True, selection="topk", num_units=4, top_k=2, layers=1,
         bidirectional=False, dropout=0.3):
    torch.manual_seed(0)
    return RIM(5, 4 * num_units, layers, bias, dropout=0.2 if layers > 1 else 0.0, bidirectional=bidirectional,
               device=DEVICE, num_units=num_units, top_k=top_k, cell=cell, selection=selection,
               input_attention={"heads": heads, "key_size": 4, "dropout": dropout},
               comm={"enabled": comm != "off", "heads": 2, "key_size": 3, "value_size": 5, "dropout": dropout,
                     "output": "convex" if comm == "off" else comm})


def test_available_follows_the_interpreter_or_cuda():
    assert available(DEVICE)
    cell = RIMCell(5, 8, num_units=2, top_k=1)
    assert cell.use_triton is False  # off until the kernels have been checked on a GPU (rims_core.cell)
    assert not cell.triton_enabled(torch.device(DEVICE))
    cell.use_triton = None  # auto: CUDA with triton, never the interpreter
    assert cell.triton_enabled(torch.device("cuda")) == available("cuda")
    assert not cell.triton_enabled(torch.device("cpu"))
    cell.use_triton = True
    assert cell.triton_enabled(torch.device(DEVICE))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("comm", ["off", "residual", "gated_residual", "convex"])
def test_triton_equals_plain_every_comm_form(cell, comm):
    # heads and bias alternate over the matrix (2 heads and no bias where comm is a bounded form)
    bounded = comm in ("gated_residual", "convex")
    rim = make(cell, heads=2 if bounded else 1, comm=comm, bias=not bounded)
    rim.train()
    x = torch.randn(6, 3, 5, device=DEVICE)
    x[:, 0] = 0  # zero input from a zero state: every unit ties at every step, the random tie-break decides
    assert_same(run(rim, x, True), run(rim, x, False))


@pytest.mark.parametrize("selection,top_k", [("random", 2), ("all", 4), ("topk", 3), ("topk", 1)])
def test_triton_equals_plain_every_selection_rule(selection, top_k):
    rim = make(selection=selection, top_k=top_k)
    rim.train()
    x = torch.randn(6, 3, 5, device=DEVICE)
    a, b = run(rim, x, True), run(rim, x, False)
    assert_same(a, b)
    assert (a[2].active.sum(-1) == top_k).all()  # exactly k_A units per sample and step


def test_triton_equals_plain_in_eval_mode_from_a_given_state():
    rim = make(heads=2)
    rim.eval()  # no dropout, ties by unit index
    x = torch.randn(5, 4, 5, device=DEVICE)
    hx = (torch.randn(1, 4, 16, device=DEVICE), torch.randn(1, 4, 16, device=DEVICE))
    assert_same(run(rim, x, True, hx=hx), run(rim, x, False, hx=hx))


def test_triton_equals_plain_under_bf16_autocast(monkeypatch):
    """Under autocast both steps run the fp32 recurrence on the same bf16 input maps (RIMCell.scan), so they
    agree as closely as in fp32; the Triton step is the one taken."""
    import rims_core.fused as fused

    steps = []
    monkeypatch.setattr(fused, "triton_rim_step", lambda *a, **k: steps.append(1) or triton_rim_step(*a, **k))
    rim = make(heads=2)
    x = torch.randn(5, 4, 5, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        a = run(rim, x, True)
        assert len(steps) == 5
        b = run(rim, x, False)
    assert len(steps) == 5 and a[0].dtype == torch.float32
    assert_same(a, b)


def test_triton_equals_plain_on_packed_variable_lengths():
    rim = make(top_k=3)
    x = torch.randn(6, 4, 5, device=DEVICE)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4, 1]), enforce_sorted=False)
    a, b = run(rim, packed, True), run(rim, packed, False)
    torch.testing.assert_close(a[0], b[0])
    assert not a[2].active[0, 2:, 1].any()  # a finished sequence has no active unit
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], msg=n)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_triton_equals_plain_with_layers_and_directions(cell):
    rim = make(cell, heads=2, comm="gated_residual" if cell == "lstm" else "convex", layers=2, bidirectional=True)
    rim.train()
    x = torch.randn(5, 3, 5, device=DEVICE)
    assert_same(run(rim, x, True), run(rim, x, False))


def _recompute(rim, on=True):
    set_recompute(rim, on)
    return rim


@pytest.mark.parametrize("cell,comm", [("lstm", "gated_residual"), ("gru", "convex"), ("lstm", "residual")])
def test_triton_with_recompute_equals_plain(cell, comm):
    """RIMCell.recompute with the Triton step: the backward rebuilds h~, qkv, tanh(c') and the bounded output's
    sigmoids in torch and hands them to the same kernels; packed sequences leave fewer than k_A units active."""
    rim = make(cell, heads=2, comm=comm, top_k=2)
    rim.train()
    x = torch.randn(6, 4, 5, device=DEVICE)
    x[:, 0] = 0
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4, 1]), enforce_sorted=False)
    b = run(rim, packed, False)  # plain fused step, everything saved
    a = run(_recompute(rim), packed, True)
    torch.testing.assert_close(a[0], b[0])
    assert torch.equal(a[2].active, b[2].active)
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], msg=n)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_recompute_kernels_keep_and_rebuild_what_the_torch_forms_do(cell):
    """keep_rows_kernel and rebuild_kernel against rims_core.fused._Compact's torch forms, on selections with
    exactly k_A active units, fewer (frozen samples: no unit active) and ties of place."""
    from rims_core.config import RIMConfig
    from rims_core.fused import _Compact
    from rims_core.triton_step import triton_keep_rows, triton_rebuild

    K, B, H, k = 5, 7, 6, 3
    G = (4 if cell == "lstm" else 3) * H
    torch.manual_seed(0)
    active = torch.zeros(K, B, dtype=torch.bool, device=DEVICE)
    for b in range(B - 2):
        active[torch.randperm(K)[:k], b] = True
    active[:, B - 1] = False  # a finished sequence
    active[1, B - 2] = True  # fewer than k_A active
    sg = torch.rand(K, B, G, device=DEVICE)
    h_prev, c_next = torch.randn(K, B, H, device=DEVICE), torch.randn(K, B, H, device=DEVICE)
    x2 = None if cell == "lstm" else torch.randn(K, B, H, device=DEVICE)
    compact = _Compact(RIMConfig(hidden_size=K * H, num_units=K, top_k=k, cell=cell), triton=False)
    st = {"sg": [sg], "x2": [], "ht": [], "qkv": [], "co": []}
    compact.keep(st, active)
    kept = triton_keep_rows(sg, active, k)
    assert torch.equal(kept, st["sg"][0])
    want = compact.rebuild(kept, active, h_prev, c_next if cell == "lstm" else None, x2)
    got = triton_rebuild(kept, active, h_prev, c_next if cell == "lstm" else None, x2)
    assert torch.equal(got[0], want[0])  # the kept rows in place, zeros elsewhere
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(got[2], want[2])
    m = active.unsqueeze(-1)
    assert torch.equal(torch.where(m, sg, 0), torch.where(m, got[0], 0))  # every active unit's gates are back


def test_recompute_with_the_triton_step_keeps_and_rebuilds_in_its_kernels(monkeypatch):
    import rims_core.fused as fused

    calls = {"keep": 0, "rebuild": 0}
    keep, rebuild = fused.triton_keep_rows, fused.triton_rebuild
    monkeypatch.setattr(fused, "triton_keep_rows", lambda *a: calls.__setitem__("keep", calls["keep"] + 1) or keep(*a))
    monkeypatch.setattr(fused, "triton_rebuild",
                        lambda *a: calls.__setitem__("rebuild", calls["rebuild"] + 1) or rebuild(*a))
    rim = _recompute(make(top_k=2))
    rim.train()
    run(rim, torch.randn(4, 2, 5, device=DEVICE), True)
    assert calls == {"keep": 4, "rebuild": 4}


def test_use_triton_true_without_a_way_to_run_names_the_setting(monkeypatch):
    monkeypatch.setattr("rims_core.cell.triton_available", lambda device: False)
    cell = RIMCell(5, 8, num_units=2, top_k=1)
    cell.use_triton = True
    with pytest.raises(RuntimeError, match="use_triton=True needs triton"):
        cell.scan(torch.randn(2, 1, 5), torch.zeros(1, 8), torch.zeros(1, 8))


def test_float64_keeps_the_plain_step_and_use_triton_true_refuses_it():
    cell = RIMCell(5, 8, num_units=2, top_k=1, dtype=torch.float64)
    assert not cell.triton_enabled(torch.device("cuda"), torch.float64)  # auto: the kernels are float32
    cell.use_triton = True
    with pytest.raises(RuntimeError, match=r"Expected a float32, bfloat16 or float16 input, got torch\.float64"):
        cell.scan(torch.randn(2, 1, 5, dtype=torch.float64), torch.zeros(1, 8, dtype=torch.float64),
                  torch.zeros(1, 8, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_triton_equals_plain_at_the_paper_size_on_cuda(cell):
    """Compiled kernels (not the interpreter) at the paper's size: B=64, T=50, hidden 600, 6 units, k_A=4."""
    torch.manual_seed(0)
    rim = RIM(10, 600, device="cuda", num_units=6, top_k=4, cell=cell).train()
    x = torch.randn(50, 64, 10, device="cuda")
    a, b = run(rim, x, True), run(rim, x, False)
    assert torch.equal(a[2].active, b[2].active)
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_equals_plain_at_the_paper_size_under_bf16_autocast_on_cuda():
    """bf16 autocast at the paper's size: both steps take the same bf16 input maps and run the recurrence in
    fp32, so the tolerances are fp32's (those of the fp32 test above), not bf16's."""
    torch.manual_seed(0)
    rim = RIM(10, 600, device="cuda", num_units=6, top_k=4).train()
    x = torch.randn(50, 64, 10, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = run(rim, x, True), run(rim, x, False)
    assert torch.equal(a[2].active, b[2].active)
    torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("triton", [False, True])
def test_recompute_at_the_paper_size_on_cuda(triton):
    """RIMCell.recompute at the paper's size on CUDA (torch step and Triton step): the gradients of the scan that
    keeps everything, and no more saved for backward than cuDNN's nn.LSTM(10, 600) keeps."""
    torch.manual_seed(0)
    rim = RIM(10, 600, device="cuda", num_units=6, top_k=4).train()
    x = torch.randn(50, 64, 10, device="cuda")
    b = run(rim, x, triton)
    a = run(_recompute(rim), x, triton)
    assert torch.equal(a[2].active, b[2].active)
    torch.testing.assert_close(a[0], b[0])
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], rtol=1e-4, atol=1e-6, msg=n)
    lstm = torch.nn.LSTM(10, 600, device="cuda")
    assert saved_bytes(lambda: rim(x)[0]) <= saved_bytes(lambda: lstm(x)[0])


def test_the_backward_runs_the_triton_kernels_when_the_forward_did(monkeypatch):
    import rims_core.fused as fused

    calls = {"cell": 0, "comm": 0}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(fused, "triton_cell_backward", counted("cell", fused.triton_cell_backward))
    monkeypatch.setattr(fused, "triton_comm_backward", counted("comm", fused.triton_comm_backward))
    rim = make()
    x = torch.randn(4, 2, 5, device=DEVICE)
    run(rim, x, False)
    assert calls == {"cell": 0, "comm": 0}
    run(rim, x, True)
    assert calls == {"cell": 4, "comm": 4}  # one per step

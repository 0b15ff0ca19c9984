"""The fused scan (hand-written backward) against the plain path (a loop over step, autograd)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rims_core import RIM, saved_bytes, set_recompute
from rims_core.cell import RIMCell
from rims_core.fused import RIMScan


def run(rim, x, fused, seed=0):
    for c in rim.cells:
        c.use_fused = fused
    torch.manual_seed(seed)  # same dropout masks on both paths
    rim.zero_grad(set_to_none=True)
    out, state, tr = rim(x, return_trace=True)
    data = out.data if hasattr(out, "batch_sizes") else out
    states = state if isinstance(state, tuple) else (state,)
    w = torch.linspace(-1, 1, data.numel(), dtype=data.dtype).view_as(data)
    loss = (data * w).sum() + sum((s * s).sum() for s in states)
    loss.backward()
    return data, states, tr, {n: p.grad.clone() for n, p in rim.named_parameters()}


OUTPUTS = ["residual", "gated_residual", "convex"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("comm", ["off", *OUTPUTS])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_equals_plain_with_dropout_layers_and_directions(cell, heads, comm, bias):
    torch.manual_seed(0)
    rim = RIM(5, 12, 2, bias, dropout=0.2, bidirectional=True, dtype=torch.float64, num_units=4, top_k=2,
              cell=cell, input_attention={"heads": heads, "key_size": 4, "dropout": 0.3},
              comm={"enabled": comm != "off", "heads": 2, "key_size": 3, "value_size": 5, "dropout": 0.3,
                    "output": "convex" if comm == "off" else comm})
    rim.train()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    x[:, 0] = 0  # a zero input from a zero state: every unit ties at every step, so the random tie-break is
    # exercised (both paths must draw the same unit orders)
    a, b = run(rim, x, True), run(rim, x, False)
    torch.testing.assert_close(a[0], b[0])
    for s1, s2 in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(s1, s2)
    assert torch.equal(a[2].active, b[2].active)
    torch.testing.assert_close(a[2].input_attention, b[2].input_attention)
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], msg=n)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_fused_scan_gradcheck_over_several_steps(cell, output):
    """The hand-written backward of every communication output form, over a sequence (the cell's gradcheck
    covers one step): finite differences of the fused forward against its backward."""
    torch.manual_seed(0)
    rim = RIM(2, 6, dtype=torch.float64, num_units=3, top_k=2, cell=cell,
              input_attention={"heads": 2, "key_size": 3, "dropout": 0.0},
              comm={"heads": 2, "key_size": 2, "value_size": 3, "dropout": 0.0, "output": output})
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)
    hx = (h0, torch.randn(1, 2, 6, dtype=torch.float64)) if cell == "lstm" else h0
    names = [n for n, _ in rim.named_parameters()]

    def f(x, h0, *ps):
        with torch.nn.utils.stateless._reparametrize_module(rim, dict(zip(names, ps, strict=True))):
            out, _ = rim(x, (h0, hx[1]) if cell == "lstm" else h0)
        return out

    assert rim.cells[0].use_fused
    assert torch.autograd.gradcheck(f, (x, h0, *rim.parameters()), eps=1e-6, atol=1e-5)


def test_fused_equals_plain_on_packed_variable_lengths():
    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=4, top_k=3, dtype=torch.float64)
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4, 1]), enforce_sorted=False)
    a, b = run(rim, packed, True), run(rim, packed, False)
    torch.testing.assert_close(a[0], b[0])
    assert not a[2].active[0, 2:, 1].any()  # a finished sequence has no active unit
    for n in a[3]:
        torch.testing.assert_close(a[3][n], b[3][n], msg=n)


def test_fused_path_is_used_and_keeps_nothing_without_grad():
    cell = RIMCell(5, 12, num_units=4, top_k=2)
    x = torch.randn(3, 2, 5)
    with torch.no_grad():
        out, *_ = cell.scan(x, torch.zeros(2, 12), torch.zeros(2, 12))
    assert out.grad_fn is None
    out, *_ = cell.scan(x, torch.zeros(2, 12), torch.zeros(2, 12))
    assert any("RIMScan" in type(f).__name__ for f in _walk(out.grad_fn))
    cell.use_fused = False
    out, *_ = cell.scan(x, torch.zeros(2, 12), torch.zeros(2, 12))
    assert not any("RIMScan" in type(f).__name__ for f in _walk(out.grad_fn))


def _walk(fn, depth=6):
    seen = [fn]
    for nxt, _ in getattr(fn, "next_functions", ()):
        if nxt is not None and depth:
            seen += _walk(nxt, depth - 1)
    return seen


@pytest.mark.parametrize("selection", ["all", "topk"])
def test_autocast_runs_the_fused_scan_in_fp32_on_autocast_input_maps(monkeypatch, selection):
    """Under bf16 autocast the fused scan is taken: its input maps are bf16 products, the recurrence and every
    output, state and gradient stay fp32. It agrees with the plain path under autocast (bf16 matmuls inside the
    recurrence too) and with fp32 to bf16's precision, and autocast changed something (the result is not the
    fp32 one). With top-k selection bf16 rounding may flip a near-tie, after which the two runs differ in kind:
    there the masks are compared."""
    calls = []
    apply = RIMScan.apply
    monkeypatch.setattr(RIMScan, "apply", lambda *a: calls.append(a[3].dtype) or apply(*a))
    torch.manual_seed(0)
    rim = RIM(5, 24, num_units=4, top_k=4 if selection == "all" else 2, selection=selection,
              comm={"heads": 2, "key_size": 4, "value_size": 6})
    x = torch.randn(20, 3, 5)
    fp32 = run(rim, x, True)
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = run(rim, x, True)
    assert calls == [torch.float32]  # one scan, on fp32 maps (cast from the bf16 products)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = run(rim, x, False)
    assert amp[0].dtype == torch.float32 and all(s.dtype == torch.float32 for s in amp[1])
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in amp[3].values())
    assert not torch.equal(amp[0], fp32[0])
    for ref in (plain, fp32):
        if selection == "topk":
            assert (amp[2].active == ref[2].active).float().mean() > 0.9
            continue
        torch.testing.assert_close(amp[0], ref[0], atol=3e-2, rtol=3e-2)
        for n in amp[3]:  # gradients: bf16 input maps, compared by norm
            assert (amp[3][n] - ref[3][n]).norm() <= 0.05 * ref[3][n].norm() + 1e-3, n


def test_autocast_state_stays_finite_over_thousands_of_steps():
    """4,000 steps under bf16 autocast, the state carried across 4 chunks: finite and bounded (|h| < 1)."""
    torch.manual_seed(0)
    rim = RIM(5, 24, num_units=4, top_k=2, cell="gru")
    state = None
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        for _ in range(4):
            out, state = rim(torch.randn(1000, 2, 5) * 3, state)
            assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert state.abs().max() < 1


# ---------------------------------------------------------------- RIMCell.recompute: keep less, recompute in backward
def _set_recompute(rim, on):
    assert set_recompute(rim, on) == len(rim.cells)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("comm", ["off", *OUTPUTS])
def test_recompute_gives_the_same_outputs_and_gradients(cell, comm):
    # two layers, both directions, dropout everywhere, 1 or 3 input heads and bias on or off across the matrix
    torch.manual_seed(0)
    bounded = comm in ("gated_residual", "convex")
    rim = RIM(5, 12, 2, not bounded, dropout=0.2, bidirectional=True, dtype=torch.float64, num_units=4, top_k=2,
              cell=cell, input_attention={"heads": 3 if bounded else 1, "key_size": 4, "dropout": 0.3},
              comm={"enabled": comm != "off", "heads": 2, "key_size": 3, "value_size": 5, "dropout": 0.3,
                    "output": "convex" if comm == "off" else comm})
    rim.train()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    x[:, 0] = 0  # every unit ties: the random tie-break picks the active units
    _set_recompute(rim, False)
    a = run(rim, x, True)
    _set_recompute(rim, True)
    b = run(rim, x, True)
    assert torch.equal(a[0], b[0])  # the forward is the same computation
    assert torch.equal(a[2].active, b[2].active)
    for n in a[3]:
        torch.testing.assert_close(b[3][n], a[3][n], msg=n)


@pytest.mark.parametrize("selection,top_k", [("random", 2), ("all", 4), ("topk", 1), ("topk", 3)])
def test_recompute_on_packed_sequences_and_every_selection_rule(selection, top_k):
    """Finished sequences have fewer than k_A active units: the rows kept of sg then include inactive units."""
    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=4, top_k=top_k, selection=selection, dtype=torch.float64,
              comm={"output": "gated_residual"})
    rim.train()
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4, 1]), enforce_sorted=False)
    _set_recompute(rim, False)
    a = run(rim, packed, True)
    _set_recompute(rim, True)
    b = run(rim, packed, True)
    torch.testing.assert_close(b[0], a[0])
    assert not b[2].active[0, 2:, 1].any()
    for n in a[3]:
        torch.testing.assert_close(b[3][n], a[3][n], msg=n)
    ref = run(rim, packed, False)  # and the plain path (autograd) agrees
    for n in a[3]:
        torch.testing.assert_close(b[3][n], ref[3][n], msg=n)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recompute_gradcheck(cell):
    torch.manual_seed(0)
    rim = RIM(2, 6, dtype=torch.float64, num_units=3, top_k=2, cell=cell,
              input_attention={"heads": 2, "key_size": 3, "dropout": 0.0},
              comm={"heads": 2, "key_size": 2, "value_size": 3, "dropout": 0.0, "output": "convex"})
    _set_recompute(rim, True)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 6, dtype=torch.float64)
    names = [n for n, _ in rim.named_parameters()]

    def f(x, h0, *ps):
        with torch.nn.utils.stateless._reparametrize_module(rim, dict(zip(names, ps, strict=True))):
            out, _ = rim(x, (h0, c0) if cell == "lstm" else h0)
        return out

    assert torch.autograd.gradcheck(f, (x, h0, *rim.parameters()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recompute_drops_exactly_what_backward_can_rebuild(cell):
    """Saved bytes, counted by storage (rims_core.saved_bytes): recompute keeps k_A of K rows of the gates'
    sigmoids and none of tanh(c') (LSTM), h~, qkv or the bounded output's sigmoids; it adds the final c (LSTM:
    every step's next state)."""
    T, B, K, k, H = 9, 5, 6, 4, 3
    ch, ck, cv = 2, 3, 4
    torch.manual_seed(0)
    rim = RIM(7, K * H, num_units=K, top_k=k, cell=cell,
              comm={"heads": ch, "key_size": ck, "value_size": cv, "output": "gated_residual"})
    rim.train()
    x = torch.randn(T, B, 7)
    _set_recompute(rim, False)
    full = saved_bytes(lambda: rim(x)[0])
    _set_recompute(rim, True)
    kept = saved_bytes(lambda: rim(x)[0])
    G = (4 if cell == "lstm" else 3) * H
    per_unit = (K - k) * G + K * (H + ch * (2 * ck + cv) + 2 * H)  # sg rows, h~, qkv, co
    if cell == "lstm":
        per_unit += K * H  # x2 = tanh(c')
    dropped = T * B * per_unit * 4 - (K * B * H * 4 if cell == "lstm" else 0)
    assert full - kept == dropped


def test_recompute_gradients_stay_finite_over_thousands_of_steps():
    """3,000 steps in chunks of 1,000 with the state carried across them (truncated backprop), recompute on: the
    gradients agree with the saving scan's and stay finite."""
    torch.manual_seed(0)
    rim = RIM(5, 16, num_units=4, top_k=2, comm={"output": "gated_residual"})
    rim.train()
    xs = [torch.randn(1000, 2, 5) * 3 for _ in range(3)]
    grads = {}
    for on in (False, True):
        _set_recompute(rim, on)
        torch.manual_seed(1)
        rim.zero_grad(set_to_none=True)
        state = None
        for x in xs:
            out, state = rim(x, state)
            (out.square().mean() + state[1].square().mean()).backward()
            state = tuple(s.detach() for s in state)
            assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in state)
        grads[on] = {n: p.grad.clone() for n, p in rim.named_parameters()}
    for n, g in grads[True].items():
        assert torch.isfinite(g).all(), n
        torch.testing.assert_close(g, grads[False][n], msg=n)

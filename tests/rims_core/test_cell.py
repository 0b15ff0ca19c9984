"""RIMCell against the paper's equations, nn.LSTMCell / nn.GRUCell, and finite differences."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rims_core import RIMCell
from rims_core.reference import reference_step

torch.set_default_dtype(torch.float32)


OUTPUTS = ["residual", "gated_residual", "convex"]  # comm.output forms; "off" = communication disabled


def make_cell(cell="lstm", heads=1, comm=True, selection="topk", K=4, k=2, H=5, D=3, value=None, bias=True,
              dtype=torch.float64, seed=0, output="convex"):
    """comm: True, False, or a comm.output form ("off" disables communication)."""
    torch.manual_seed(seed)
    top_k = K if selection == "all" else k
    if isinstance(comm, str):
        comm, output = comm != "off", (output if comm == "off" else comm)
    return RIMCell(
        D, K * H, bias, dtype=dtype, num_units=K, top_k=top_k, cell=cell, selection=selection,
        input_attention={"heads": heads, "key_size": 4, "value_size": value, "dropout": 0.0},
        comm={"enabled": comm, "heads": 2, "key_size": 3, "value_size": 4, "dropout": 0.0, "output": output},
    )


def rand_state(cell, B, dtype=torch.float64):
    h = torch.randn(B, cell.hidden_size, dtype=dtype)
    c = torch.randn(B, cell.hidden_size, dtype=dtype) if cell.config.cell == "lstm" else None
    return h, c


def run_fast(cell, x, h, c):
    out = cell(x, (h, c) if c is not None else h)
    return out if c is not None else (out, None)


# one head of value size 2 makes D=3 > dv: the path that projects values first is covered besides the folded one
@pytest.mark.parametrize("cell_kind", ["lstm", "gru"])
@pytest.mark.parametrize("heads,value", [(1, None), (2, None), (2, 1), (1, 2)])
@pytest.mark.parametrize("comm", ["off", *OUTPUTS])
@pytest.mark.parametrize("selection", ["topk", "all"])
def test_matches_per_unit_reference_outputs_and_gradients(cell_kind, heads, value, comm, selection):
    cell = make_cell(cell_kind, heads, comm, selection, value=value)
    B = 7
    x = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    h, c = rand_state(cell, B)
    h.requires_grad_(True)
    if c is not None:
        c.requires_grad_(True)
    h_fast, c_fast = run_fast(cell, x, h, c)
    h_ref, c_ref, _ = reference_step(cell, x, h, c)
    torch.testing.assert_close(h_fast, h_ref)
    if c is not None:
        torch.testing.assert_close(c_fast, c_ref)
    # gradients of the same scalar through both paths, w.r.t. every weight and input
    w = torch.randn_like(h_fast)
    inputs = [x, h, *([c] if c is not None else []), *cell.parameters()]
    g_fast = torch.autograd.grad((h_fast * w).sum() + (c_fast.sum() if c is not None else 0), inputs,
                                 allow_unused=True)
    g_ref = torch.autograd.grad((h_ref * w).sum() + (c_ref.sum() if c is not None else 0), inputs,
                                allow_unused=True)
    for gf, gr in zip(g_fast, g_ref, strict=True):
        if gr is None:
            assert gf is None or torch.count_nonzero(gf) == 0
        else:
            torch.testing.assert_close(gf, gr)


def test_random_selection_matches_reference_given_its_mask():
    cell = make_cell(selection="random")
    x = torch.randn(6, 3, dtype=torch.float64)
    h, c = rand_state(cell, 6)
    _, hT, cT, tr = cell.scan(x.unsqueeze(0), h, c, trace=True)
    h_ref, c_ref, _ = reference_step(cell, x, h, c, active=tr["active"][0])
    torch.testing.assert_close(hT, h_ref)
    torch.testing.assert_close(cT, c_ref)


def test_random_selection_is_uniform_over_units():
    torch.manual_seed(1)
    cell = make_cell(selection="random", K=5, k=2, dtype=torch.float32)
    x = torch.randn(1, 4000, 3)
    _, _, _, tr = cell.scan(x, torch.zeros(4000, cell.hidden_size), torch.zeros(4000, cell.hidden_size),
                            trace=True)
    assert (tr["active"].sum(-1) == 2).all()
    freq = tr["active"].float().mean((0, 1))  # expected 2/5 per unit; sd of the mean ~0.008
    assert torch.allclose(freq, torch.full_like(freq, 0.4), atol=0.04), freq


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_one_unit_reduces_to_torch_cell_with_copied_weights(kind):
    """K=1, k=1, comm off: with zero keys the attention on x is exactly 1/2; identity values and W^ih
    doubled then give exactly nn.LSTMCell / nn.GRUCell."""
    D, H = 5, 7
    ref = (nn.LSTMCell if kind == "lstm" else nn.GRUCell)(D, H, dtype=torch.float64)
    cell = RIMCell(D, H, dtype=torch.float64, num_units=1, top_k=1, cell=kind,
                   input_attention={"value_size": D, "dropout": 0.0}, comm={"enabled": False})
    with torch.no_grad():
        cell.inp_key.zero_()
        cell.inp_value.copy_(torch.eye(D, dtype=torch.float64))
        cell.weight_ih[0].copy_(2 * ref.weight_ih.T)
        cell.weight_hh[0].copy_(ref.weight_hh.T)
        cell.bias_ih[0].copy_(ref.bias_ih)
        cell.bias_hh[0].copy_(ref.bias_hh)
    x = torch.randn(4, D, dtype=torch.float64)
    h = torch.randn(4, H, dtype=torch.float64)
    if kind == "lstm":
        c = torch.randn(4, H, dtype=torch.float64)
        for a, b in zip(cell(x, (h, c)), ref(x, (h, c)), strict=True):
            torch.testing.assert_close(a, b)
    else:
        torch.testing.assert_close(cell(x, h), ref(x, h))


@pytest.mark.parametrize("selection", ["topk", "random", "all"])
@pytest.mark.parametrize("comm", ["off", *OUTPUTS])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck(selection, comm, kind):
    """Whatever the forward reads, the backward differentiates (both public ports fail this); every
    communication output form, through the fused scan's hand-written backward."""
    cell = make_cell(kind, heads=2, comm=comm, selection=selection, K=3, k=2, H=2, D=2)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    h, c = rand_state(cell, 3)
    h.requires_grad_(True)
    params = tuple(cell.parameters())

    def f(x, h, *ps):
        torch.manual_seed(0)  # the random rule draws the same units at every evaluation
        with torch.nn.utils.stateless._reparametrize_module(cell, dict(zip(
                [n for n, _ in cell.named_parameters()], ps, strict=True))):
            out = cell(x, (h, c) if c is not None else h)
        return out[0] if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(f, (x, h, *params), eps=1e-6, atol=1e-5)


def test_inactive_units_keep_state_bit_for_bit_and_get_no_gradient():
    cell = make_cell(K=6, k=2, H=4, dtype=torch.float32)
    B = 16
    x = torch.randn(B, 3)
    h, c = rand_state(cell, B, torch.float32)
    _, h1, c1, tr = cell.scan(x.unsqueeze(0), h, c, trace=True)
    act = tr["active"][0]  # (B, K)
    assert (act.sum(-1) == 2).all()
    hv, cv, h1v, c1v = (t.view(B, 6, 4) for t in (h, c, h1, c1))
    assert torch.equal(h1v[~act], hv[~act]) and torch.equal(c1v[~act], cv[~act])
    assert not torch.isclose(h1v[act], hv[act]).all(-1).any()
    # a unit inactive in every sample gets exactly zero gradient in its own weights
    x1 = x[:1]
    _, h2, c2, tr = cell.scan(x1.unsqueeze(0), h[:1], c[:1], trace=True)
    (h2.sum() + c2.sum()).backward()
    off = (~tr["active"][0, 0]).nonzero().flatten()
    on = tr["active"][0, 0].nonzero().flatten()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "inp_query", "comm_out"):
        g = getattr(cell, name).grad
        assert torch.count_nonzero(g[off]) == 0, name
        assert torch.count_nonzero(g[on]) > 0, name


def test_default_state_is_zero_and_unbatched_matches_batched():
    cell = make_cell(dtype=torch.float32)
    x = torch.randn(3)
    torch.manual_seed(1)  # training mode: the zero state ties every unit, broken by the same random draw
    h, c = cell(x)
    torch.manual_seed(1)
    hb, cb = cell(x.unsqueeze(0), (torch.zeros(1, 20), torch.zeros(1, 20)))
    assert h.shape == (20,)
    torch.testing.assert_close(h, hb[0])
    torch.testing.assert_close(c, cb[0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda cell: cell(torch.randn(2, 3, 3)), "Expected input to be 1D or 2D, got 3D instead"),
        (lambda cell: cell(torch.randn(2, 4)), "input.size\\(-1\\) must be equal to input_size. Expected 3, got 4"),
        (lambda cell: cell(torch.randn(2, 3), torch.zeros(2, 20)), "Expected hx to be a tuple"),
        (lambda cell: cell(torch.randn(2, 3), (torch.zeros(3, 20), torch.zeros(3, 20))),
         "Expected hidden\\[0\\] size \\(2, 20\\), got \\[3, 20\\]"),
    ],
)
def test_bad_inputs_raise_in_pytorch_style(call, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        call(make_cell(dtype=torch.float32))


def test_input_dropout_only_in_training_and_selection_unaffected():
    torch.manual_seed(0)
    cell = RIMCell(3, 20, num_units=4, top_k=2, input_attention={"dropout": 0.5}, comm={"dropout": 0.5})
    x = torch.randn(8, 3)
    cell.eval()
    a, b = cell(x), cell(x)
    torch.testing.assert_close(a, b)  # eval: deterministic
    h0, c0 = torch.randn(8, 20), torch.randn(8, 20)  # a nonzero state: no ties for the tie-break to settle
    cell.train()
    _, _, _, tr1 = cell.scan(x.unsqueeze(0), h0, c0, trace=True)
    cell.eval()
    _, _, _, tr2 = cell.scan(x.unsqueeze(0), h0, c0, trace=True)
    assert torch.equal(tr1["active"], tr2["active"])  # selection reads attention before dropout
    cell.train()
    assert not torch.allclose(cell(x)[0], a[0])

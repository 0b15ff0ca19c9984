"""Hypothesis: for any B, T, K, k the shapes hold, exactly k units update, inactive units keep their
state, and an inactive unit's own weights get no gradient from that step."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rims_core import RIM, RIMCell


@st.composite
def configs(draw):
    K = draw(st.integers(1, 6))
    return {
        "B": draw(st.integers(1, 5)), "T": draw(st.integers(1, 6)), "K": K, "k": draw(st.integers(1, K)),
        "H": draw(st.integers(1, 4)), "D": draw(st.integers(1, 5)), "cell": draw(st.sampled_from(["lstm", "gru"])),
        "selection": draw(st.sampled_from(["topk", "random"])), "comm": draw(st.booleans()),
        "heads": draw(st.integers(1, 3)), "seed": draw(st.integers(0, 2**16)),
    }


def build(p):
    torch.manual_seed(p["seed"])
    return RIM(p["D"], p["K"] * p["H"], num_units=p["K"], top_k=p["k"], cell=p["cell"],
               selection=p["selection"], input_attention={"heads": p["heads"], "key_size": 3, "dropout": 0.0},
               comm={"enabled": p["comm"], "heads": 2, "key_size": 2, "value_size": 3, "dropout": 0.0})


@settings(max_examples=60, deadline=None)
@given(configs())
def test_shapes_and_exactly_k_active(p):
    rim = build(p)
    x = torch.randn(p["T"], p["B"], p["D"])
    out, state, tr = rim(x, return_trace=True)
    h = state[0] if p["cell"] == "lstm" else state
    assert out.shape == (p["T"], p["B"], p["K"] * p["H"])
    assert h.shape == (1, p["B"], p["K"] * p["H"])
    assert (tr.active.sum(-1) == p["k"]).all()


@settings(max_examples=60, deadline=None)
@given(configs())
def test_inactive_units_keep_state_and_get_no_gradient(p):
    rim = build(p)
    cell: RIMCell = rim.cells[0]
    B, K, H = p["B"], p["K"], p["H"]
    x = torch.randn(1, B, p["D"])
    h0 = torch.randn(B, K * H)
    c0 = torch.randn(B, K * H) if p["cell"] == "lstm" else None
    _, h1, c1, tr = cell.scan(x, h0, c0, trace=True)
    act = tr["active"][0]  # (B, K)
    assert torch.equal(h1.view(B, K, H)[~act], h0.view(B, K, H)[~act])
    if c0 is not None:
        assert torch.equal(c1.view(B, K, H)[~act], c0.view(B, K, H)[~act])
    loss = h1.square().sum() + (c1.square().sum() if c1 is not None else 0)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "inp_query"] + (["comm_out"] if p["comm"] else [])
    grads = torch.autograd.grad(loss, [getattr(cell, n) for n in names])
    never = ~act.any(0)  # units inactive in every sample of this step
    for n, g in zip(names, grads, strict=True):
        assert torch.count_nonzero(g[never]) == 0, n

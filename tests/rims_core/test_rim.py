"""RIM honours the nn.LSTM / nn.GRU contract: shapes, layouts, packing, layers, directions, hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rims_core import RIM, RIMTrace


def tiny(cell="lstm", **kw):
    torch.manual_seed(0)
    base = {"num_units": 3, "top_k": 2, "cell": cell, "input_attention": {"dropout": 0.0},
            "comm": {"dropout": 0.0}}
    base.update(kw)
    return RIM(4, 12, dtype=torch.float64, **base)


def states(cell, S, N, H=12):
    h = torch.randn(S, N, H, dtype=torch.float64)
    return (h, torch.randn(S, N, H, dtype=torch.float64)) if cell == "lstm" else h


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_equals_loop_over_cell(cell):
    rim = tiny(cell)
    x = torch.randn(9, 5, 4, dtype=torch.float64)
    hx = states(cell, 1, 5)
    out, hn = rim(x, hx)
    rc = rim.cells[0]
    st = (hx[0][0], hx[1][0]) if cell == "lstm" else hx[0]
    outs = []
    for t in range(9):
        st = rc(x[t], st)
        outs.append(st[0] if cell == "lstm" else st)
    torch.testing.assert_close(out, torch.stack(outs))
    if cell == "lstm":
        torch.testing.assert_close(hn[0][0], st[0])
        torch.testing.assert_close(hn[1][0], st[1])
    else:
        torch.testing.assert_close(hn[0], st)


def test_shapes_match_nn_lstm_in_every_layout():
    for kwargs in ({}, {"num_layers": 2}, {"bidirectional": True}, {"num_layers": 3, "bidirectional": True}):
        for batch_first in (False, True):
            torch.manual_seed(0)
            rim = RIM(4, 12, batch_first=batch_first, num_units=3, top_k=2, **kwargs)
            ref = nn.LSTM(4, 12, batch_first=batch_first, **kwargs)
            x = torch.randn(5, 7, 4)
            for inp in (x, x[0]):  # batched and unbatched
                (o1, (h1, c1)), (o2, (h2, c2)) = rim(inp), ref(inp)
                assert o1.shape == o2.shape and h1.shape == h2.shape and c1.shape == c2.shape, kwargs


def test_batch_first_is_a_transpose():
    rim = tiny()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    torch.manual_seed(1)  # training mode: ties at the zero state are broken at random, the same draws twice
    out, (h, _c) = rim(x)
    rim.batch_first = True
    torch.manual_seed(1)
    out_bf, (h_bf, _c_bf) = rim(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1))
    torch.testing.assert_close(h_bf, h)  # states stay (S, N, H) whatever batch_first says, as nn.LSTM


def test_unbatched_matches_batch_of_one():
    rim = RIM(4, 12, 2, bidirectional=True, num_units=3, top_k=2, dtype=torch.float64)
    rim.eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    out, (h, _c) = rim(x)
    out_b, (h_b, _c_b) = rim(x.unsqueeze(1))
    torch.testing.assert_close(out, out_b[:, 0])
    torch.testing.assert_close(h, h_b[:, 0])
    assert h.shape == (4, 12)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_equals_each_sequence_run_alone(enforce_sorted, bidirectional):
    torch.manual_seed(0)
    rim = RIM(4, 12, 2, bidirectional=bidirectional, num_units=3, top_k=2, dtype=torch.float64)
    rim.eval()
    lengths = [7, 3, 5, 1] if not enforce_sorted else [7, 5, 3, 1]
    x = torch.randn(7, 4, 4, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=enforce_sorted)
    out_p, (h_p, c_p) = rim(packed)
    assert torch.equal(out_p.batch_sizes, packed.batch_sizes)
    out, lens = pad_packed_sequence(out_p)
    assert lens.tolist() == lengths
    for b, n in enumerate(lengths):
        o_b, (h_b, c_b) = rim(x[:n, b:b + 1])
        torch.testing.assert_close(out[:n, b], o_b[:, 0])
        assert torch.count_nonzero(out[n:, b]) == 0  # padding stays zero, as in nn.LSTM
        torch.testing.assert_close(h_p[:, b], h_b[:, 0])
        torch.testing.assert_close(c_p[:, b], c_b[:, 0])


def test_bidirectional_backward_direction_reads_reversed_input():
    torch.manual_seed(0)
    rim = RIM(4, 12, bidirectional=True, num_units=3, top_k=2, dtype=torch.float64)
    rim.eval()
    x = torch.randn(6, 2, 4, dtype=torch.float64)
    out, (h, _) = rim(x)
    z = torch.zeros(2, 12, dtype=torch.float64)
    rev_out, rev_h, _, _ = rim.cells[1].scan(x.flip(0), z, z)
    torch.testing.assert_close(out[..., 12:], rev_out.flip(0))
    torch.testing.assert_close(h[1], rev_h)


def test_drop_in_for_a_model_written_for_nn_lstm():
    class Tagger(nn.Module):  # the usual nn.LSTM idiom, untouched but for the class
        def __init__(self, rnn_cls):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.rnn = rnn_cls(8, 24, num_layers=2, batch_first=True, dropout=0.1)
            self.head = nn.Linear(24, 5)

        def forward(self, tokens, hx=None):
            out, (h, c) = self.rnn(self.emb(tokens), hx)
            return self.head(out), (h, c)

    tokens = torch.randint(0, 20, (3, 11))
    for cls in (nn.LSTM, RIM):
        torch.manual_seed(0)
        model = Tagger(cls)
        logits, (h, c) = model(tokens)
        assert logits.shape == (3, 11, 5) and h.shape == (2, 3, 24)
        logits2, _ = model(tokens, (h.detach(), c.detach()))  # carry state across chunks
        (logits.sum() + logits2.sum()).backward()
        assert all(p.grad is not None for p in model.rnn.parameters())


def test_gru_cell_returns_a_single_state_like_nn_gru():
    rim = tiny("gru")
    out, h = rim(torch.randn(5, 2, 4, dtype=torch.float64))
    assert isinstance(h, torch.Tensor) and h.shape == (1, 2, 12)
    torch.testing.assert_close(out[-1], h[0])


def test_state_layout_is_unit_major():
    rim = tiny(top_k=1)
    x = torch.randn(1, 8, 4, dtype=torch.float64)
    _out, (h, _c), tr = rim(x, return_trace=True)
    per_unit = h[0].view(8, 3, 4)
    changed = (per_unit != 0).any(-1)  # from a zero state only the active unit moves
    assert torch.equal(changed, tr.active[0, 0])


def test_trace_returned_and_hooked():
    rim = tiny()
    x = torch.randn(6, 5, 4, dtype=torch.float64)
    seen: list[RIMTrace] = []
    handle = rim.register_trace_hook(lambda mod, tr: seen.append(tr))
    torch.manual_seed(1)  # the same random tie-breaks in both forwards compared below
    out, _ = rim(x)  # signature unchanged while hooked
    assert len(seen) == 1 and seen[0].active.shape == (1, 6, 5, 3)
    assert (seen[0].active.sum(-1) == 2).all()
    assert seen[0].input_attention.shape == (1, 6, 5, 3, 1)
    assert seen[0].comm_attention.shape == (1, 6, 5, 4, 3, 3)
    torch.testing.assert_close(seen[0].comm_attention.sum(-1), torch.ones(1, 6, 5, 4, 3, dtype=torch.float64))
    handle.remove()
    rim(x)
    assert len(seen) == 1
    torch.manual_seed(1)
    out2, _, tr = rim(x, return_trace=True)
    torch.testing.assert_close(out2, out)
    assert torch.equal(tr.active, seen[0].active)
    assert tr.active_fraction().shape == (1, 3)


@pytest.mark.parametrize(
    "make,call,exc,match",
    [
        (lambda: RIM(4, 12, num_units=3, top_k=2), lambda m: m(torch.randn(2, 3, 4, 4)), ValueError,
         "RIM: Expected input to be 2D or 3D, got 4D instead"),
        (lambda: RIM(4, 12, num_units=3, top_k=2), lambda m: m(torch.randn(5, 2, 3)), RuntimeError,
         "input.size\\(-1\\) must be equal to input_size. Expected 4, got 3"),
        (lambda: RIM(4, 12, num_units=3, top_k=2), lambda m: m(torch.randn(5, 2, 4), (torch.zeros(2, 2, 12),) * 2),
         RuntimeError, "Expected hidden\\[0\\] size \\(1, 2, 12\\), got \\[2, 2, 12\\]"),
        (lambda: RIM(4, 12, num_units=3, top_k=2), lambda m: m(torch.randn(5, 2, 4), torch.zeros(1, 2, 12)), ValueError,
         "Expected hx to be a tuple \\(h_0, c_0\\) for cell='lstm'"),
        (lambda: RIM(4, 12, num_units=3, top_k=2, cell="gru"),
         lambda m: m(torch.randn(5, 2, 4), (torch.zeros(1, 2, 12),)),
         ValueError, "Expected hx to be a Tensor h_0 for cell='gru'"),
    ],
)
def test_bad_inputs_raise_in_pytorch_style(make, call, exc, match):
    with pytest.raises(exc, match=match):
        call(make())


def test_constructor_errors():
    with pytest.raises(ValueError, match="proj_size is not supported"):
        RIM(4, 12, num_units=3, proj_size=4)
    with pytest.raises(ValueError, match="num_units in \\[1, 2, 4, 5, 10"):
        RIM(4, 100)  # default num_units=6 does not divide 100: the error says which would
    with pytest.raises(ValueError, match="Expected num_layers to be a positive int, got 0"):
        RIM(4, 12, 0, num_units=3)
    with pytest.raises(ValueError, match="Expected dropout to be a number in \\[0, 1\\], got 2"):
        RIM(4, 12, dropout=2, num_units=3)


def test_reset_parameters_extra_repr_and_state_dict():
    torch.manual_seed(0)
    a = RIM(4, 12, 2, batch_first=True, num_units=3, top_k=2)
    before = [p.clone() for p in a.parameters()]
    a.reset_parameters()
    assert all(not torch.equal(p, q) for p, q in zip(a.parameters(), before, strict=True))
    r = repr(a)
    assert "4, 12, num_layers=2, batch_first=True, num_units=3, top_k=2" in r
    b = RIM(4, 12, 2, batch_first=True, num_units=3, top_k=2)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(a(x)[0], b(x)[0])


def test_per_unit_weights_are_separate_tensors_not_masked_blocks():
    rim = tiny()
    cell = rim.cells[0]
    K, H = 3, 4
    assert cell.weight_hh.shape == (K, H, 4 * H)  # (K, H, 4H): no (K*H, 4*K*H) matrix with zeroed blocks
    assert cell.weight_ih.shape[0] == K


def test_dtype_and_device_arguments():
    rim = RIM(4, 12, num_units=3, top_k=2, dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in rim.parameters())
    out, (h, _c) = rim(torch.randn(3, 2, 4, dtype=torch.float64))
    assert out.dtype == h.dtype == torch.float64


@pytest.mark.parametrize("output", ["residual", "gated_residual", "convex"])
def test_bf16_autocast_on_cpu_runs_forward_and_backward_close_to_fp32(output):
    """Close to fp32 for as long as both precisions select the same units: selection is a discontinuous
    ranking, so a near-tie that bf16 rounds the other way (or into a tie) legitimately changes the trajectory."""
    torch.manual_seed(0)
    rim = RIM(8, 24, num_units=3, top_k=2, input_attention={"dropout": 0.0},
              comm={"dropout": 0.0, "output": output}).eval()  # eval: ties by unit index, no random draw
    x = torch.randn(10, 4, 8)
    ref, _, tr = rim(x, return_trace=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, _c), tr16 = rim(x, return_trace=True)
    assert h.dtype == torch.float32  # states keep their dtype under autocast
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in rim.parameters())
    same = ((tr.active != tr16.active).any(-1)[0].cumsum(0) == 0)  # (L, N): no selection differed so far
    assert same.float().mean() > 0.5, "most steps select the same units"
    assert (out.float() - ref)[same].abs().max() < 0.02


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    # eval: training-mode tie-breaks draw from torch.rand, which compiled code takes from inductor's own RNG
    rim = RIM(4, 12, num_units=3, top_k=2, input_attention={"dropout": 0.0}, comm={"dropout": 0.0}).eval()
    x = torch.randn(4, 3, 4)
    eager, _ = rim(x)
    compiled = torch.compile(rim)
    out, (_h, _c) = compiled(x)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert rim.cells[0].weight_hh.grad is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; run on a GPU machine: pytest -m gpu")
def test_cuda_bf16_matches_cpu():
    torch.manual_seed(0)
    # eval: training-mode tie-breaks would come from the CPU and the CUDA generators, which differ
    rim = RIM(8, 24, num_units=3, top_k=2, input_attention={"dropout": 0.0}, comm={"dropout": 0.0}).eval()
    x = torch.randn(10, 4, 8)
    ref, _ = rim(x)
    gpu = rim.cuda()
    out, (_h, _c) = gpu(x.cuda())
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out16, _ = gpu(x.cuda())
    out16.float().sum().backward()
    assert (out16.float().cpu() - ref).abs().max() < 0.1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; run on a GPU machine: pytest -m gpu")
def test_cuda_compiled_step_matches_eager():
    torch.manual_seed(0)
    rim = RIM(8, 24, num_units=3, top_k=2, input_attention={"dropout": 0.0}, comm={"dropout": 0.0}).cuda().eval()
    x = torch.randn(6, 4, 8, device="cuda")
    eager, _ = rim(x)
    rim.compile_step()
    out, _ = rim(x)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-4)
    out.sum().backward()
    assert torch.isfinite(rim.cells[0].weight_hh.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; run on a GPU machine: pytest -m gpu")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cuda_graphed_matches_eager_outputs_and_gradients(cell):
    from rims_core import cuda_graphed

    torch.manual_seed(0)
    rim = RIM(8, 24, num_units=3, top_k=2, cell=cell).cuda().eval()
    x = torch.randn(12, 4, 8, device="cuda")
    run = cuda_graphed(rim, x)  # captured before any eager backward on the default stream (see graphs.py)
    out_g, state_g = run(x)
    out_g.square().sum().backward()
    graphed = {n: p.grad.clone() for n, p in rim.named_parameters()}
    rim.zero_grad(set_to_none=True)
    out, state = rim(x)
    out.square().sum().backward()
    torch.testing.assert_close(out_g, out)
    torch.testing.assert_close(state_g[0] if cell == "lstm" else state_g, state[0] if cell == "lstm" else state)
    for n, p in rim.named_parameters():
        torch.testing.assert_close(graphed[n], p.grad, msg=n)


def test_cuda_graphed_refuses_cpu_input():
    from rims_core import cuda_graphed

    with pytest.raises(ValueError, match="Expected a CUDA sample_input, got device cpu"):
        cuda_graphed(RIM(4, 12, num_units=3, top_k=2), torch.randn(3, 2, 4))

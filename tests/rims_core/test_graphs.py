"""GraphedRIM: whole-sequence CUDA graphs with bucketed shapes.

Without a GPU the capture itself cannot run: these tests pass GraphedRIM captures that return the padded
module uncaptured (stand-ins for torch.cuda.make_graphed_callables and, for calls without grad, for
cuda_graph_inference: the one mocked part), so everything around them runs for real: choosing and keeping
graphs, padding time and batch, the valid mask, packed input, slicing back, the fallbacks. The `gpu` tests
capture real graphs.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rims_core import RIM
from rims_core.graphs import GraphedRIM, bucket, install_graphs

from ..graph_captures import static_buffers, uncaptured

NO_DROPOUT = {"input_attention": {"dropout": 0.0}, "comm": {"dropout": 0.0}}


def grads_of(rim, out, state, leaves):
    states = state if isinstance(state, tuple) else (state,)
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + sum((s * s).sum() for s in states)
    params = list(rim.parameters())
    return torch.autograd.grad(loss, params + leaves)


def deterministic(rim):
    """Dropout off and ties broken by unit index: a padded graph draws its random numbers for the padded shape,
    so with random draws it equals the RIM in distribution, not value by value."""
    for c in rim.cells:
        c.random_ties = False
    return rim


def compare(rim, graphed, x, hx=None):
    leaves = [x] + ([t for t in (hx if isinstance(hx, tuple) else (hx,))] if hx is not None else [])
    graphed(x, hx)  # a capture draws random numbers (warm-up passes): capture first, then compare like with like
    torch.manual_seed(1)
    a_out, a_state = graphed(x, hx)
    torch.manual_seed(1)
    b_out, b_state = rim(x, hx)
    torch.testing.assert_close(a_out, b_out)
    for s1, s2 in zip(a_state if isinstance(a_state, tuple) else (a_state,),
                      b_state if isinstance(b_state, tuple) else (b_state,), strict=True):
        torch.testing.assert_close(s1, s2)
    for g1, g2 in zip(grads_of(rim, a_out, a_state, leaves), grads_of(rim, b_out, b_state, leaves), strict=True):
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize(("batch_first", "layers", "bidirectional"), [(False, 1, False), (True, 2, True)])
def test_every_shape_matches_the_rim_and_nearby_shapes_share_a_graph(cell, batch_first, layers, bidirectional):
    """Outputs, final states and the gradients of every parameter, of x and of hx equal the RIM's on each shape;
    the last short batch and a slightly shorter sequence replay the first graph (padded), farther shapes capture
    a bucketed graph of their own."""
    torch.manual_seed(0)
    rim = deterministic(RIM(5, 12, layers, batch_first=batch_first, bidirectional=bidirectional, num_units=3,
                            top_k=2, cell=cell, **NO_DROPOUT).train())
    graphed = GraphedRIM(rim, capture=uncaptured)
    S = layers * (2 if bidirectional else 1)
    expected_captures = [1, 1, 1, 2, 3]
    for (T, B), n in zip([(12, 6), (12, 5), (11, 6), (30, 6), (37, 3)], expected_captures, strict=True):
        x = torch.randn(*((B, T) if batch_first else (T, B)), 5, requires_grad=True)
        compare(rim, graphed, x)
        h0 = torch.randn(S, B, 12, requires_grad=True)
        hx = (h0, torch.randn(S, B, 12, requires_grad=True)) if cell == "lstm" else h0
        compare(rim, graphed, x, hx)  # hx that requires grad: a graph of its own kind
        assert graphed.captures == 2 * n  # each shape's graphs: without hx, and with an hx that requires grad
    shapes = sorted({k[:2] for k in graphed._graphs})
    assert shapes == [(12, 6), (bucket(30), bucket(6)), (bucket(37), bucket(3))]
    assert bucket(37) == 40 and graphed.status == "graphs"


def test_counts_one_capture_per_kind_of_call_and_none_for_repeats():
    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train()
    graphed = GraphedRIM(rim, capture=uncaptured)
    for _ in range(3):
        out, _ = graphed(torch.randn(10, 4, 5))
        out.sum().backward()
    assert graphed.captures == 1
    graphed(torch.randn(10, 4, 5, requires_grad=True))  # x requiring grad: a different graph
    assert graphed.captures == 2 and graphed.summary == "graphs, 2 captured"


def test_least_recently_used_graph_is_dropped_beyond_max_graphs():
    rim = RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train()
    graphed = GraphedRIM(rim, max_graphs=2, capture=uncaptured)
    for T in (10, 20, 10, 40):  # 10 is used again before 40 arrives: 20 is the one dropped
        graphed(torch.randn(T, 4, 5))
    assert sorted(k[0] for k in graphed._graphs) == [10, 40] and graphed.captures == 3


@pytest.mark.parametrize("case", ["eval", "no_grad", "inference_off", "unbatched", "trace", "cpu"])
def test_the_rim_runs_eagerly_where_a_graph_cannot_serve(case):
    """eval mode with grad; no grad without an inference capture (the CPU) or with inference=False; unbatched
    input; a trace; a CPU tensor without a stand-in capture."""
    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train()
    kw = {} if case == "cpu" else {"capture": uncaptured}
    if case in ("eval", "inference_off"):
        kw["capture_inference"] = static_buffers
    graphed = GraphedRIM(rim, inference=case != "inference_off", **kw)
    x = torch.randn(6, 3, 5)
    kwargs = {}
    if case == "eval":
        graphed.eval()
    elif case == "unbatched":
        x = x[:, 0]
    elif case == "trace":
        kwargs = {"return_trace": True}
    with torch.no_grad() if case in ("no_grad", "inference_off") else torch.enable_grad():
        torch.manual_seed(1)
        got = graphed(x, **kwargs)
        torch.manual_seed(1)
        want = rim(x, **kwargs)
    assert graphed.captures == 0
    torch.testing.assert_close(got[0], want[0])


def test_a_failed_capture_leaves_the_rim_eager_and_says_why():
    def fails(module, sample_args, num_warmup_iters=3):
        raise RuntimeError("operation not permitted when stream is capturing")

    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train()
    graphed = GraphedRIM(rim, capture=fails)
    x = torch.randn(6, 3, 5)
    graphed(x)
    torch.manual_seed(1)
    out, _ = graphed(x)
    torch.manual_seed(1)
    torch.testing.assert_close(out, rim(x)[0])
    assert graphed.status == "off: RuntimeError: operation not permitted when stream is capturing"
    graphed(x)
    assert graphed.captures == 0 and not graphed._graphs and graphed.summary == graphed.status
    # an inference capture that fails while a trace is asked for: the RIM's answer, trace included
    rim.eval()
    graphed = GraphedRIM(rim, capture_inference=fails)
    with torch.no_grad():
        got, want = graphed(x, return_trace=True), rim(x, return_trace=True)
    assert len(got) == 3 and graphed.status.startswith("off: RuntimeError")
    torch.testing.assert_close(got[2].active, want[2].active)


def test_bucket_rounds_up_to_eight_sizes_per_octave():
    assert [bucket(n) for n in (1, 16, 17, 18, 31, 33, 100, 196, 200)] == [1, 16, 18, 18, 32, 36, 104, 208, 208]
    assert all(n <= bucket(n) <= 1.125 * n for n in range(1, 2000))


@pytest.mark.parametrize(("kw", "message"), [({"max_graphs": 0}, "Expected max_graphs >= 1, got 0"),
                                             ({"max_padding": -0.5}, "Expected max_padding >= 0, got -0.5")])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        GraphedRIM(RIM(5, 12, num_units=3, top_k=2), **kw)


def test_reads_the_rims_attributes_and_trains_its_parameters():
    rim = RIM(5, 12, num_units=3, top_k=2)
    graphed = GraphedRIM(rim, capture=uncaptured)
    assert graphed.hidden_size == 12 and graphed.config is rim.config
    assert [id(p) for p in graphed.parameters()] == [id(p) for p in rim.parameters()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; run on a GPU machine: pytest -m gpu")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_real_graphs_match_the_rim_across_shapes_on_cuda(cell):
    torch.manual_seed(0)
    rim = RIM(8, 24, num_units=3, top_k=2, cell=cell, device="cuda", **NO_DROPOUT).train()
    graphed = GraphedRIM(rim)
    for T, B in [(12, 8), (12, 7), (30, 8)]:
        x = torch.randn(T, B, 8, device="cuda", requires_grad=True)
        out_g, _ = graphed(x)
        g = torch.autograd.grad(out_g.square().sum(), [x, *rim.parameters()])
        out, _ = rim(x)
        e = torch.autograd.grad(out.square().sum(), [x, *rim.parameters()])
        torch.testing.assert_close(out_g, out, rtol=1e-4, atol=1e-5)
        for a, b in zip(g, e, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert graphed.status == "graphs" and graphed.captures == 2


def test_install_graphs_keeps_the_module_tree_hooks_and_state_dict():
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.rnn = deterministic(RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train())
    keys = list(model.state_dict())
    seen = []
    model.rnn.register_forward_hook(lambda m, a, out: seen.append(out[0].shape))
    graphed = install_graphs(model.rnn, capture=uncaptured)
    x = torch.randn(10, 4, 5)
    out, _ = model.rnn(x)
    assert graphed.captures == 1 and seen == [(10, 4, 12)] and list(model.state_dict()) == keys
    del model.rnn.forward
    torch.testing.assert_close(model.rnn(x)[0], out)
    assert graphed.captures == 1 and len(seen) == 2


def test_autocast_gets_graphs_of_its_own_only_without_its_weight_cache():
    torch.manual_seed(0)
    rim = deterministic(RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train())
    graphed = GraphedRIM(rim, capture=uncaptured)
    x = torch.randn(10, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the cache on (the default): eager
        graphed(x)
    assert graphed.captures == 0
    graphed(x)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        graphed(x)
        torch.manual_seed(1)
        out, _ = graphed(x)
        torch.manual_seed(1)
        torch.testing.assert_close(out, rim(x)[0])
    assert graphed.captures == 2 and sorted(str(k[4][3]) for k in graphed._graphs) == ["None", "torch.bfloat16"]


def test_a_shape_whose_buckets_exceed_the_padding_bound_is_captured_exactly_once():
    rim = RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train()
    graphed = GraphedRIM(rim, max_padding=0.1, capture=uncaptured)
    graphed(torch.randn(10, 4, 5))
    for _ in range(2):  # bucket(33)^2 = 36^2 is 19% more work than 33^2: captured at (33, 33), then replayed
        graphed(torch.randn(33, 33, 5))
    assert graphed.captures == 2 and (33, 33) in {k[:2] for k in graphed._graphs}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
def test_acting_steps_replay_an_inference_graph_and_carry_the_state_like_the_rim(cell, grad_mode):
    """An RL policy's acting: T = 1, eval mode, no grad, the state carried for 2,000 steps. Every step's output
    and state equal the RIM's; fewer envs (7 of 8) replay the 8-row graph; the state stays finite."""
    torch.manual_seed(0)
    rim = RIM(5, 12, num_units=3, top_k=2, cell=cell, batch_first=True).eval()
    graphed = GraphedRIM(rim, capture=uncaptured, capture_inference=static_buffers)
    ctx = torch.no_grad if grad_mode == "no_grad" else torch.inference_mode
    with ctx():
        for B in (8, 7):
            hg = he = None
            for t in range(2000 if B == 8 else 50):
                x = torch.randn(B, 1, 5) * (1 + t % 7)
                out_g, hg = graphed(x, hg)
                out_e, he = rim(x, he)
                torch.testing.assert_close(out_g, out_e)
                for a, b in zip(hg if isinstance(hg, tuple) else (hg,), he if isinstance(he, tuple) else (he,),
                                strict=True):
                    torch.testing.assert_close(a, b)
            assert all(torch.isfinite(s).all() and s.abs().max() < 50
                       for s in (hg if isinstance(hg, tuple) else (hg,)))
    assert graphed.captures == 1 and [k[:2] for k in graphed._graphs] == [(1, 8)]
    assert graphed._graphs.popitem()[0][4] == ("infer", False, grad_mode == "inference_mode", None, False)


def test_no_grad_in_training_mode_and_in_eval_mode_get_graphs_of_their_own():
    """Evaluation in a training loop: the training graph, then no-grad calls in eval and in training mode,
    each a graph of its own kind, each equal to the RIM (dropout off, ties by index)."""
    torch.manual_seed(0)
    rim = deterministic(RIM(5, 12, num_units=3, top_k=2, **NO_DROPOUT).train())
    graphed = GraphedRIM(rim, capture=uncaptured, capture_inference=static_buffers)
    x = torch.randn(10, 4, 5)
    graphed(x)[0].sum().backward()
    with torch.no_grad():
        for mode in (False, True):
            rim.train(mode)
            torch.testing.assert_close(graphed(x)[0], rim(x)[0])
    assert graphed.captures == 3
    assert sorted(str(k[4][:2]) for k in graphed._graphs) == ["('infer', False)", "('infer', True)",
                                                              "(False, False)"]


@pytest.mark.parametrize("kind", ["train", "infer"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_packed_sequences_are_served_by_a_graph_with_their_own_valid_mask(kind, cell):
    """A packed batch (an RL learner's padded sequences): output data, final states (each sequence's state at
    its own last step) and the gradients of the parameters, x and hx equal the RIM's packed path."""
    torch.manual_seed(0)
    rim = deterministic(RIM(5, 12, 1, bidirectional=True, num_units=3, top_k=2, cell=cell, **NO_DROPOUT).train())
    graphed = GraphedRIM(rim, capture=uncaptured, capture_inference=static_buffers)
    x = torch.randn(9, 4, 5, requires_grad=kind == "train")
    lengths = torch.tensor([9, 3, 7, 1])
    h0 = torch.randn(2, 4, 12, requires_grad=kind == "train")
    hx = (h0, torch.randn(2, 4, 12)) if cell == "lstm" else h0
    with torch.enable_grad() if kind == "train" else torch.no_grad():  # a packing each: autograd frees its graph
        got = graphed(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        want = rim(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    assert graphed.captures == 1 and graphed._graphs.popitem()[0][:2] == (9, 4)
    torch.testing.assert_close(got[0].data, want[0].data)
    assert torch.equal(got[0].batch_sizes, want[0].batch_sizes)
    assert torch.equal(got[0].unsorted_indices, want[0].unsorted_indices)
    states = [(a, b) for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (got[1], want[1])),
                                     strict=True)]
    for a, b in states:
        torch.testing.assert_close(a, b)
    if kind == "train":
        for g1, g2 in zip(grads_of(rim, got[0].data, got[1], [x, h0]), grads_of(rim, want[0].data, want[1], [x, h0]),
                          strict=True):
            torch.testing.assert_close(g1, g2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; run on a GPU machine: pytest -m gpu")
def test_real_inference_graphs_match_the_rim_over_acting_steps_on_cuda():
    torch.manual_seed(0)
    rim = RIM(8, 24, num_units=3, top_k=2, batch_first=True, device="cuda").eval()
    graphed = GraphedRIM(rim)
    with torch.inference_mode():
        hg = he = None
        for _ in range(500):
            x = torch.randn(16, 1, 8, device="cuda")
            out_g, hg = graphed(x, hg)
            out_e, he = rim(x, he)
            torch.testing.assert_close(out_g, out_e, rtol=1e-4, atol=1e-5)
    assert graphed.status == "graphs" and graphed.captures == 1


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("comm", [True, False])
def test_without_grad_traces_and_trace_hooks_come_from_the_graph_as_the_rim_gives_them(packed, comm):
    """An acting step that collects unit selections (return_trace) and a trace hook: the graph returns the
    trace's tensors, equal to the RIM's (active units, both attentions; None without communication)."""
    torch.manual_seed(0)
    rim = RIM(5, 12, 2, num_units=3, top_k=2, comm={"enabled": comm}).eval()
    graphed = GraphedRIM(rim, capture=uncaptured, capture_inference=static_buffers)
    x, lengths = torch.randn(7, 4, 5), torch.tensor([7, 2, 5, 1])
    seen = []
    with torch.no_grad():
        args = (pack_padded_sequence(x, lengths, enforce_sorted=False),) if packed else (x,)
        got = graphed(*args, return_trace=True)
        want = rim(*args, return_trace=True)
        handle = rim.register_trace_hook(lambda m, tr: seen.append(tr))
        graphed(*args)
        assert graphed.captures == 1 and len(seen) == 1  # a hook wants the trace too: the same graph serves it
        handle.remove()
        graphed(*args)
    assert graphed.captures == 2 and len(seen) == 1  # without a trace: a graph that leaves it out
    for field in ("active", "input_attention", "comm_attention"):
        a, b = getattr(got[2], field), getattr(want[2], field)
        assert (a is None) == (b is None) == (field == "comm_attention" and not comm)
        if a is not None:
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(getattr(seen[0], field), b)
    assert want[2].active.shape == (2, 7, 4, 3) and got[2].active.dtype == torch.bool

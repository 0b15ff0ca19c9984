"""TransformerCore: the nn.LSTM calling convention, chunked == whole (the cache is the state), causality, the
sliding window past max_context, gradients, a long stream, errors, and a small learning check."""

from __future__ import annotations

import pytest
import torch

from rims_core import TransformerCore, TransformerState, build_recurrent

from .recall import CHANCE, train_recall


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core machine is shared: several threads per process oversubscribe it
    yield
    torch.set_num_threads(threads)


def _core(**kw) -> TransformerCore:
    torch.manual_seed(0)
    kw = {"num_layers": 2, "heads": 2, **kw}
    return TransformerCore(5, 8, kw.pop("num_layers"), **kw).eval()


def test_shapes_follow_batch_first_and_the_state_holds_the_cache():
    seq_first = _core()
    batch_first = _core(batch_first=True)
    batch_first.load_state_dict(seq_first.state_dict())
    x = torch.randn(7, 3, 5)  # (T, B, D)
    out, state = seq_first(x)
    out_b, state_b = batch_first(x.transpose(0, 1))
    assert out.shape == (7, 3, 8) and out_b.shape == (3, 7, 8)
    torch.testing.assert_close(out_b.transpose(0, 1), out)
    assert isinstance(state, TransformerState)
    assert state.keys.shape == state.values.shape == (2, 3, 2, 7, 4)  # (N, B, nh, C, dh)
    assert state.position.tolist() == [7, 7, 7]
    torch.testing.assert_close(state_b.keys, state.keys)
    unbatched, _ = seq_first(x[:, 0])  # (T, D), as nn.LSTM accepts
    torch.testing.assert_close(unbatched, out[:, 0])


@pytest.mark.parametrize("max_context", [64, 4])  # the window holds the whole sequence / slides over it
def test_chunks_with_the_state_carried_give_the_whole_sequence(max_context):
    core = _core(max_context=max_context, batch_first=True)
    x = torch.randn(3, 23, 5)
    whole, s_whole = core(x)
    outs, state = [], None
    for a, b in [(0, 1), (1, 2), (2, 9), (9, 10), (10, 23)]:  # single steps and longer chunks
        out, state = core(x[:, a:b], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-5, atol=1e-5)
    _, head_state = core(x[:, :3])
    again, _ = core(x[:, 3:], tuple(s.detach() for s in head_state))  # a plain tuple, as a trainer detaches it
    torch.testing.assert_close(again, whole[:, 3:], rtol=1e-5, atol=1e-5)
    for got, want in zip(state, s_whole, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert state.keys.shape[3] == min(max_context - 1, 23)


def test_causal_a_later_input_leaves_earlier_outputs_unchanged():
    core = _core(batch_first=True)
    x = torch.randn(2, 12, 5)
    out, _ = core(x)
    t = 6
    y = x.clone()
    y[:, t + 1] += 3.0
    out_y, _ = core(y)
    torch.testing.assert_close(out_y[:, : t + 1], out[:, : t + 1])
    assert (out_y[:, t + 1] - out[:, t + 1]).abs().max() > 1e-3  # the change is seen where it happens


def test_past_max_context_the_oldest_inputs_drop_out_of_the_window():
    core = _core(num_layers=1, max_context=4, batch_first=True)  # one layer: a token sees exactly 4 inputs
    x = torch.randn(2, 10, 5)
    out, _ = core(x)
    y = x.clone()
    y[:, 0] += 3.0
    out_y, _ = core(y)
    assert (out_y[:, 3] - out[:, 3]).abs().max() > 1e-3  # step 0 is still in step 3's window
    torch.testing.assert_close(out_y[:, 4:], out[:, 4:])  # and in no later one's


def test_gradient_reaches_every_parameter():
    core = _core(batch_first=True).train()
    out, state = core(torch.randn(2, 5, 5))
    out2, _ = core(torch.randn(2, 4, 5), state)  # through the cache as well
    (out.square().mean() + out2.square().mean()).backward()
    for name, p in core.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_long_stream_in_chunks_stays_finite_with_a_bounded_cache():
    core = _core(max_context=32, batch_first=True)
    state, steps = None, 0
    with torch.no_grad():
        for _ in range(50):  # 2,000 steps in chunks of 40
            out, state = core(torch.randn(2, 40, 5) * 3, state)
            steps += 40
            assert torch.isfinite(out).all()
            assert state.keys.shape[3] == 31  # max_context - 1 tokens kept, however long the stream
    assert state.position.tolist() == [steps, steps] == [2000, 2000]


def test_errors_name_the_field_the_value_and_the_fix():
    with pytest.raises(ValueError, match=r"Expected heads to divide hidden_size, got heads=4 and hidden_size=6; "
                                         r"heads in \[1, 2, 3, 6\] would divide it"):
        build_recurrent("transformer", 5, 6)
    with pytest.raises(ValueError, match="Expected bidirectional=False for kind='transformer', got True"):
        build_recurrent("transformer", 5, 8, bidirectional=True)
    with pytest.raises(ValueError, match="Expected max_context to be a positive int, got 0"):
        TransformerCore(5, 8, max_context=0)
    core = _core()
    _, state = core(torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match=r"Expected state to be a TransformerState with keys of shape "
                                         r"\(2, 4, 2, C, 4\)"):
        core(torch.randn(3, 4, 5), state)  # a state of batch 2 for a batch of 4


def test_factory_settings_reach_the_module():
    core = build_recurrent("transformer", 5, 12, 3, batch_first=True, dropout=0.1, heads=3, max_context=16)
    assert (core.num_layers, core.heads, core.max_context, core.dropout, core.batch_first) == (3, 3, 16, 0.1, True)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) for kind='transformer' \['mem_slots'\]"):
        build_recurrent("transformer", 5, 8, mem_slots=2)


@pytest.mark.slow
@pytest.mark.learning
def test_learns_a_small_copy_task_well_below_chance():
    core = TransformerCore(10, 32, 1, batch_first=True)
    losses = train_recall(core, 32, steps=200)
    assert sum(losses[:10]) / 10 > 0.8 * CHANCE  # it starts near chance
    assert sum(losses[-20:]) / 20 < 0.1 * CHANCE

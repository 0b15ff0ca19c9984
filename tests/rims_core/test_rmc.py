"""RelationalMemory (Santoro et al. 2018): the nn.GRU calling convention with the memory as the state, chunked ==
whole, the identity start, gradients, a long stream, errors, the default sizes, and a small learning check."""

from __future__ import annotations

import pytest
import torch

from rims_core import RelationalMemory, build_recurrent

from .recall import CHANCE, train_recall


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core machine is shared: several threads per process oversubscribe it
    yield
    torch.set_num_threads(threads)


def _core(**kw) -> RelationalMemory:
    torch.manual_seed(0)
    kw = {"num_layers": 2, "mem_slots": 3, "num_heads": 2, **kw}
    return RelationalMemory(5, 12, kw.pop("num_layers"), **kw).eval()


def test_shapes_follow_batch_first_and_the_state_is_the_memory():
    seq_first = _core()
    batch_first = _core(batch_first=True)
    batch_first.load_state_dict(seq_first.state_dict())
    x = torch.randn(7, 4, 5)  # (T, B, D)
    out, mem = seq_first(x)
    out_b, mem_b = batch_first(x.transpose(0, 1))
    assert out.shape == (7, 4, 12) and out_b.shape == (4, 7, 12)
    torch.testing.assert_close(out_b.transpose(0, 1), out)
    assert mem.shape == (2, 4, 3, 4)  # (N, B, mem_slots, num_heads * head_size); head_size = 12 // (3 * 2)
    torch.testing.assert_close(mem_b, mem)
    # the output is the top layer's memory, flattened (3 x 4 = hidden_size: no output map)
    torch.testing.assert_close(out[-1], mem[-1].flatten(1))
    unbatched, _ = seq_first(x[:, 0])
    torch.testing.assert_close(unbatched, out[:, 0])


def test_the_memory_starts_as_the_identity_so_slots_differ():
    core = _core(num_layers=1, mem_slots=3, num_heads=1, head_size=2)  # M = 2 < 3 slots: the identity is cut
    assert core.initial_state(2).tolist() == [[[[1, 0], [0, 1], [0, 0]]] * 2]
    _, mem = core(torch.randn(1, 2, 5))
    assert (mem[0, :, 0] - mem[0, :, 1]).abs().max() > 1e-3


def test_chunks_with_the_memory_carried_give_the_whole_sequence():
    core = _core(batch_first=True)
    x = torch.randn(3, 17, 5)
    whole, mem_whole = core(x)
    outs, mem = [], None
    for a, b in [(0, 1), (1, 6), (6, 7), (7, 17)]:
        out, mem = core(x[:, a:b], mem)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole)
    torch.testing.assert_close(mem, mem_whole)


def test_causal_a_later_input_leaves_earlier_outputs_unchanged():
    core = _core(batch_first=True)
    x = torch.randn(2, 9, 5)
    out, _ = core(x)
    y = x.clone()
    y[:, 5] += 3.0
    out_y, _ = core(y)
    torch.testing.assert_close(out_y[:, :5], out[:, :5])
    assert (out_y[:, 5] - out[:, 5]).abs().max() > 1e-3


def test_gradient_reaches_every_parameter():
    # two blocks per step; hidden 10 != 3 slots x 2 heads x head size 1: an output map to train as well
    core = RelationalMemory(5, 10, 2, batch_first=True, mem_slots=3, num_heads=2, num_blocks=2)
    assert isinstance(core.out[0], torch.nn.Linear)
    out, mem = core(torch.randn(2, 4, 5))
    out2, _ = core(torch.randn(2, 3, 5), mem)
    (out.square().mean() + out2.square().mean()).backward()
    for name, p in core.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_long_stream_in_chunks_stays_finite():
    core = _core(batch_first=True)
    mem = None
    with torch.no_grad():
        for _ in range(20):  # 2,000 steps in chunks of 100
            out, mem = core(torch.randn(2, 100, 5) * 3, mem)
            assert torch.isfinite(out).all() and torch.isfinite(mem).all()


def test_default_sizes_come_from_hidden_size():
    core = build_recurrent("rmc", 5, 64)  # 4 slots x 4 heads x head size 4 = 64: the flattened memory
    assert (core.mem_slots, core.num_heads, core.head_size) == (4, 4, 4) and isinstance(core.out[0], torch.nn.Identity)
    odd = build_recurrent("rmc", 5, 60)  # 60 // 16 = 3: rows of 12, a map from 48 to 60
    assert odd.head_size == 3 and odd(torch.randn(2, 1, 5))[0].shape == (2, 1, 60)


def test_errors_name_the_field_the_value_and_the_fix():
    with pytest.raises(ValueError, match="Expected hidden_size >= mem_slots \\* num_heads = 16 to derive head_size, "
                                         "got hidden_size=8; give head_size or fewer mem_slots / num_heads"):
        build_recurrent("rmc", 5, 8)
    with pytest.raises(ValueError, match="Expected bidirectional=False for kind='rmc', got True"):
        build_recurrent("rmc", 5, 16, bidirectional=True)
    with pytest.raises(ValueError, match="Expected head_size to be a positive int or None, got 0"):
        build_recurrent("rmc", 5, 16, head_size=0)
    with pytest.raises(ValueError, match=r"\['top_k'\] apply only to kind='rims', got kind='rmc'"):
        build_recurrent("rmc", 5, 16, top_k=2)
    core = _core()
    with pytest.raises(ValueError, match=r"Expected state of shape \(2, 3, 3, 4\) \(num_layers, batch, mem_slots, "
                                         r"mem_size\), got \(2, 2, 3, 4\)"):
        core(torch.randn(4, 3, 5), core.initial_state(2))


@pytest.mark.slow
@pytest.mark.learning
def test_learns_a_small_copy_task_well_below_chance():
    core = RelationalMemory(10, 64, 1, batch_first=True)
    losses = train_recall(core, 64, steps=400)
    assert sum(losses[:10]) / 10 > 0.8 * CHANCE  # it starts near chance
    assert sum(losses[-50:]) / 50 < 0.3 * CHANCE

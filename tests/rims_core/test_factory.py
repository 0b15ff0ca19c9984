"""build_recurrent by model.kind, parameter and multiply-add accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rims_core import (
    MODEL_KINDS,
    RIM,
    RelationalMemory,
    TransformerCore,
    build_recurrent,
    count_parameters,
    factory,
    macs_per_step,
)

CLASSES = {"rims": RIM, "lstm": factory.AutocastSafeLSTM, "gru": nn.GRU, "transformer": TransformerCore,
           "rmc": RelationalMemory}


def test_kinds_build_the_right_module_with_one_contract():
    assert tuple(CLASSES) == MODEL_KINDS
    x = torch.randn(5, 2, 10)
    for kind, cls in CLASSES.items():
        m = build_recurrent(kind, 10, 48, num_layers=2)
        assert type(m) is cls
        out, state = m(x)
        assert out.shape == (5, 2, 48)
        out2, _ = m(x, state)  # every kind takes back the state it returned
        assert out2.shape == (5, 2, 48)


def test_rim_only_keys_are_refused_for_baselines_and_unknown_kinds_named():
    with pytest.raises(ValueError, match="\\['num_units', 'top_k'\\] apply only to kind='rims'"):
        build_recurrent("lstm", 10, 60, num_units=6, top_k=4)
    with pytest.raises(ValueError, match="Expected kind to be one of \\('rims', 'lstm', 'gru', 'transformer', "
                                         "'rmc'\\), got 'rnn'"):
        build_recurrent("rnn", 10, 60)
    with pytest.raises(ValueError, match="unknown RIM setting\\(s\\) \\['topk'\\]"):
        build_recurrent("rims", 10, 60, topk=3)


def test_macs_per_step_counts_what_is_computed():
    lstm = nn.LSTM(10, 600)
    assert macs_per_step(lstm) == 4 * 600 * (10 + 600)
    rim = RIM(10, 600)
    K, H, G = 6, 100, 400
    expected = (10 * 64 + 10 * K * G + K * 64 + K * G + K * H * (G + 64)
                + K * H * 4 * 96 + 4 * K * K * 64 + 2 * K * 128 * H)  # default comm output: W^o and the gate W^g
    assert macs_per_step(rim) == expected
    residual = RIM(10, 600, comm={"output": "residual"})  # the paper's residual: W^o only
    assert macs_per_step(residual) == expected - K * 128 * H
    assert macs_per_step(rim) < macs_per_step(lstm)  # the paper's RIM is cheaper per step than LSTM-600
    assert count_parameters(rim) == sum(p.numel() for p in rim.parameters())
    with pytest.raises(TypeError, match=r"Expected a RIM, nn\.LSTM, nn\.GRU, TransformerCore or RelationalMemory, "
                                        r"got Linear"):
        macs_per_step(nn.Linear(2, 2))


def _input_side_macs_from_shapes(cell, rows: int) -> int:
    """Per-row multiply-adds of the input gates, read off the maps input_maps really builds for `rows` rows."""
    x = torch.randn(rows, 1, cell.input_size)
    with torch.no_grad():
        _, z, w_u = cell.input_maps(x)
    K, F, width = w_u.shape
    project_first = 0 if z is x else cell.inp_value.shape[0] * cell.inp_value.shape[1]  # x W^v, (D, dv)
    return project_first + K * F * width


@pytest.mark.parametrize("input_size,kw,rows,folds", [
    (10, {}, 2048, True),  # small input, value size 4H: W^v W^ih formed once (D x G per unit)
    (10, {}, 1, False),  # the same RIM acting one step of one sample: forming the maps would cost more
    (3, {"input_attention": {"value_size": 2}}, 2048, False),  # D > dv: x W^v first is cheaper per row
    (10, {"input_attention": {"value_size": 9}}, 2048, True),  # D > dv and still folded (a rule "dv >= D" errs)
    (30, {"input_attention": {"heads": 2, "value_size": 2}}, 1, True),  # several heads: always folded
])
def test_macs_per_step_follows_the_folding_the_cell_runs(input_size, kw, rows, folds):
    rim = RIM(input_size, 8, num_units=2, top_k=1, comm={"enabled": False}, **kw)
    cell = rim.cells[0]
    assert cell.folds_value(rows) is folds
    cfg = cell.config
    nh, G = cfg.input_attention.heads, cell.weight_hh.shape[-1]
    others = (cell.inp_key.numel()  # shared input keys
              + cfg.num_units * nh * (cfg.input_attention.key_size + G)  # attention scores, gate scaling
              + cell.weight_hh.numel() + cell.inp_query.numel())  # recurrent gates and queries
    assert macs_per_step(rim, rows=rows) == others + _input_side_macs_from_shapes(cell, rows)
    if rows > 1000:  # a long sequence: what macs_per_step logs by default
        assert macs_per_step(rim) == macs_per_step(rim, rows=rows)


def _linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def test_transformer_macs_are_its_matrices_once_per_token_plus_attention_over_the_context():
    core = TransformerCore(10, 32, 3, heads=4, max_context=100)
    # every Linear acts once per token; each block's scores and read cost E per attended token each
    assert macs_per_step(core, context=20) == _linear_weights(core) + 3 * 2 * 32 * 20
    assert macs_per_step(core) == macs_per_step(core, context=100)  # default: a full window


def test_rmc_macs_count_each_map_on_the_rows_it_acts_on():
    core = RelationalMemory(10, 30, 2, mem_slots=3, num_heads=2, head_size=4, num_blocks=2)  # M = 8, 24 -> 30
    S, M, R = 3, 8, 4  # R: the memory rows and the input row
    expected = 0
    for layer, out in zip(core.layers, core.out, strict=True):
        per_row = {id(m) for m in (*layer.mlp, layer.qkv) if isinstance(m, nn.Linear)}
        expected += layer.inp.weight.numel() + layer.gate_x.weight.numel() + S * layer.gate_m.weight.numel()
        expected += 2 * sum(R * m.weight.numel() for m in layer.modules() if id(m) in per_row)  # two blocks
        expected += 2 * 2 * R * R * M + out.weight.numel()  # scores and read per block; the output map
    assert macs_per_step(core) == expected


def test_the_lstm_kind_is_an_nn_lstm_with_its_parameters_and_keys():
    m = build_recurrent("lstm", 5, 8, num_layers=2)
    assert isinstance(m, nn.LSTM) and list(m.state_dict()) == list(nn.LSTM(5, 8, 2).state_dict())


def test_the_probe_says_whether_nn_lstm_runs_under_cpu_autocast_and_the_lstm_kind_runs_either_way():
    """On a CPU with a bf16 LSTM kernel the lstm kind runs it (bf16 output); on one without (seen: an AMD EPYC
    without AVX-512, where nn.LSTM under autocast raises) it runs in fp32 instead of failing."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(3, 3)(torch.zeros(2, 1, 3))
        ran = True
    except RuntimeError:
        ran = False
    assert factory.cpu_autocast_lstm_supported(torch.bfloat16) is ran
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = build_recurrent("lstm", 3, 4)(torch.randn(6, 2, 3))
    assert torch.isfinite(out).all() and out.dtype == (torch.bfloat16 if ran else torch.float32)


@pytest.mark.parametrize("packed", [False, True])
def test_without_a_cpu_bf16_lstm_kernel_the_lstm_kind_runs_in_fp32_under_autocast(monkeypatch, packed):
    """The fallback (forced here, whatever this CPU has): outputs, states and gradients are the fp32 LSTM's,
    for plain and packed input and an fp32 or bf16 initial state."""
    monkeypatch.setattr(factory, "cpu_autocast_lstm_supported", lambda dtype=torch.bfloat16: False)
    torch.manual_seed(0)
    m = build_recurrent("lstm", 5, 8)
    x, lengths = torch.randn(7, 3, 5), torch.tensor([7, 4, 2])
    hx = (torch.randn(1, 3, 8), torch.randn(1, 3, 8).bfloat16())

    def call(module_forward, x):
        inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if packed else x
        out, (h, c) = module_forward(inp, hx)
        return (out.data if packed else out), h, c

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = call(m, x)
    want = call(lambda i, s: nn.LSTM.forward(m, i, tuple(t.float() for t in s)), x)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    grads = torch.autograd.grad(got[0].sum(), list(m.parameters()))
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)

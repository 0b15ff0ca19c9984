"""build_recurrent by model.kind, parameter and multiply-add accounting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rims_core import RIM, build_recurrent, count_parameters, macs_per_step


def test_kinds_build_the_right_module_with_one_contract():
    x = torch.randn(5, 2, 10)
    for kind, cls in (("rims", RIM), ("lstm", nn.LSTM), ("gru", nn.GRU)):
        m = build_recurrent(kind, 10, 60, num_layers=2)
        assert type(m) is cls
        out, _ = m(x)
        assert out.shape == (5, 2, 60)


def test_rim_only_keys_are_refused_for_baselines_and_unknown_kinds_named():
    with pytest.raises(ValueError, match="\\['num_units', 'top_k'\\] apply only to kind='rims'"):
        build_recurrent("lstm", 10, 60, num_units=6, top_k=4)
    with pytest.raises(ValueError, match="Expected kind to be one of \\('rims', 'lstm', 'gru'\\), got 'rnn'"):
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
    with pytest.raises(TypeError, match=r"Expected a RIM, nn\.LSTM or nn\.GRU, got Linear"):
        macs_per_step(nn.Linear(2, 2))

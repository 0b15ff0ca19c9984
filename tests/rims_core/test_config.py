"""Every RIMConfig error names the field, the value given and the fix."""

from __future__ import annotations

import pytest

from rims_core import CommConfig, InputAttentionConfig, RIMConfig, RIMConfigError


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 0}, "Expected hidden_size to be a positive int, got 0"),
        ({"hidden_size": 600.0}, "Expected hidden_size to be a positive int, got 600.0"),
        ({"hidden_size": 600, "num_units": -1}, "Expected num_units to be a positive int, got -1"),
        ({"hidden_size": 600, "top_k": 0}, "Expected top_k to be a positive int, got 0"),
        ({"hidden_size": 600, "top_k": True}, "Expected top_k to be a positive int, got True"),
        ({"hidden_size": 600, "top_k": 7}, "top_k=7 > num_units=6; set top_k to at most 6"),
        ({"hidden_size": 100}, "hidden_size=100 and num_units=6; num_units in \\[1, 2, 4, 5, 10, 20, 25, 50\\]"),
        ({"hidden_size": 600, "cell": "rnn"}, "Expected cell to be one of \\('lstm', 'gru'\\), got 'rnn'"),
        ({"hidden_size": 600, "selection": "best"}, "Expected selection to be one of .*got 'best'"),
        ({"hidden_size": 600, "selection": "all"}, "set top_k=6 or selection='topk'"),
        ({"hidden_size": 600, "input_attention": {"heads": 0}}, "InputAttentionConfig: Expected heads .* got 0"),
        ({"hidden_size": 600, "input_attention": {"dropout": 1.0}}, "Expected dropout to be a float in \\[0, 1\\)"),
        ({"hidden_size": 600, "input_attention": {"value_size": -4}}, "Expected value_size .* got -4"),
        ({"hidden_size": 600, "input_attention": {"keysize": 4}},
         "unknown key\\(s\\) \\['keysize'\\] in input_attention"),
        ({"hidden_size": 600, "comm": {"enabled": "yes"}}, "CommConfig: Expected enabled to be a bool, got 'yes'"),
        ({"hidden_size": 600, "comm": {"key_size": 0}}, "CommConfig: Expected key_size to be a positive int, got 0"),
        ({"hidden_size": 600, "comm": {"dropout": -0.1}}, "CommConfig: Expected dropout"),
        ({"hidden_size": 600, "comm": 3}, "Expected comm to be a CommConfig or a dict, got 3"),
        ({"hidden_size": 600, "comm": {"output": "tanh"}},
         "CommConfig: Expected output to be one of \\('residual', 'gated_residual', 'convex'\\) or None .*got 'tanh'"),
    ],
)
def test_config_errors_name_field_value_and_fix(kwargs, match):
    with pytest.raises(RIMConfigError, match=match):
        RIMConfig(**kwargs)


def test_defaults_follow_the_paper():
    cfg = RIMConfig(hidden_size=600)
    assert (cfg.num_units, cfg.top_k, cfg.unit_size) == (6, 4, 100)
    assert cfg.input_attention == InputAttentionConfig(heads=1, key_size=64, value_size=None, dropout=0.1)
    assert cfg.input_value_size == 400  # 4 x unit size, Table 3
    # one default departs from the paper's text: the communication output is bounded (docs/model.md), resolved
    # by cell: the official code's gated residual for LSTM units, the convex (highway) update for GRU units
    assert cfg.comm == CommConfig(enabled=True, heads=4, key_size=32, value_size=32, dropout=0.1, output=None)
    assert cfg.comm_output == "gated_residual"
    assert cfg.replace(cell="gru").comm_output == "convex"  # resolved on use, so changing the cell follows
    assert cfg.replace(comm={"output": "residual"}).comm_output == "residual"


def test_dicts_and_round_trip():
    cfg = RIMConfig(hidden_size=60, num_units=3, top_k=3, selection="all", comm={"enabled": False})
    d = cfg.to_dict()
    assert d["comm"]["enabled"] is False and d["input_attention"]["key_size"] == 64
    assert RIMConfig(**d) == cfg
    with pytest.raises(RIMConfigError, match="top_k=4 > num_units=3"):
        cfg.replace(top_k=4)
    with pytest.raises(AttributeError):
        cfg.top_k = 2  # frozen

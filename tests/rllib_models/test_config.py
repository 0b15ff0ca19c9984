"""model_config validation: the sweep vocabulary, unknown keys refused with a hint, RLlib's merged keys kept."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from rims_core.config import CommConfig, RIMConfig
from rllib_models.config import RLLIB_MERGED_KEYS, ModelConfigError, RIMModelConfig, parse_model_config


def test_defaults_are_the_papers_atari_setting():
    cfg = parse_model_config(None)
    assert (cfg.rim.num_units, cfg.rim.top_k, cfg.rim.hidden_size, cfg.rim.cell) == (6, 4, 600, "lstm")


def test_round_trip_through_the_plain_dict():
    cfg = parse_model_config({"num_units": 4, "top_k": 3, "hidden_size": 64, "cell": "gru",
                              "comm": {"heads": 2}, "conv_filters": [[8, 4, 2], [16, 3, 3]], "encoder_hiddens": [],
                              "triton": False, "cuda_graph": True, "recompute": True})
    assert parse_model_config(cfg.to_model_config()) == cfg


def test_the_rim_settings_are_rims_core_s_config_with_its_defaults():
    cfg = parse_model_config({"num_units": 4, "top_k": 3, "hidden_size": 64, "comm": {"heads": 2}})
    assert cfg.rim == RIMConfig(hidden_size=64, num_units=4, top_k=3, comm={"heads": 2})
    mc = cfg.to_model_config()
    assert set(mc) == {f.name for f in fields(RIMConfig)} | {"max_seq_len", "conv_filters", "encoder_hiddens",
                                                            "triton", "cuda_graph", "recompute"}
    assert mc["comm"] == asdict(CommConfig(heads=2))  # RIMConfig's defaults filled in


@pytest.mark.parametrize("key,hint", [("num_unit", "num_units"), ("topk", "top_k"), ("hiden_size", "hidden_size")])
def test_a_typo_is_refused_with_the_key_it_resembles(key, hint):
    with pytest.raises(ModelConfigError, match=rf"unknown key\(s\) '{key}' \(did you mean '{hint}'\?\)"):
        parse_model_config({key: 4})


def test_an_unrelated_key_lists_the_valid_ones():
    with pytest.raises(ModelConfigError, match=r"unknown key\(s\) 'lstm_cell_size'.*expected a subset of"):
        parse_model_config({"lstm_cell_size": 256})


def test_keys_rllib_merges_are_accepted():
    assert "vf_share_layers" in RLLIB_MERGED_KEYS
    assert parse_model_config({"vf_share_layers": False}) == RIMModelConfig()


@pytest.mark.parametrize("mc,match", [
    ({"top_k": 7}, "top_k <= num_units, got top_k=7 > num_units=6"),
    ({"hidden_size": 100, "num_units": 6}, "hidden_size to be divisible by num_units"),
    ({"num_units": 0}, "Expected num_units to be a positive int, got 0"),
    ({"max_seq_len": "32"}, "Expected max_seq_len to be a positive int, got '32'"),
    ({"cell": "rnn"}, "Expected cell to be one of"),
    ({"comm": 3}, "Expected comm to be a dict"),
    ({"comm": {"head": 2}}, r"unknown key\(s\) \['head'\] in comm"),
    ({"conv_filters": [[16, 8]]}, "conv_filters to be a non-empty list of \\[out_channels, kernel, stride\\]"),
    ({"encoder_hiddens": [0]}, "encoder_hiddens to be a list of positive ints"),
    ({"triton": "yes"}, "Expected triton to be true or false, got 'yes'"),
    ({"cuda_graph": 1}, "Expected cuda_graph to be true or false, got 1"),
    ({"recompute": "on"}, "Expected recompute to be true or false, got 'on'"),
])
def test_invalid_values_name_the_field_and_what_is_allowed(mc, match):
    with pytest.raises(ModelConfigError, match=match):
        parse_model_config(mc)

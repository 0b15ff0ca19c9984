"""The spec's model.* keys are rims_core's RIM settings, declared once: the same names, types and defaults as
RIMConfig / InputAttentionConfig / CommConfig, ranges that refuse what the dataclasses refuse, and the choices
of model.kind and search.algorithm from their tables."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from pydantic import ValidationError

from rims_core.config import MODEL_KINDS, CommConfig, InputAttentionConfig, RIMConfig, RIMConfigError
from sweeps.flat import RIM_ONLY
from sweeps.search import SEARCH_ALGORITHMS
from sweeps.spec import SpecError, load_spec
from sweeps.spec_models import AttentionSpec, CommSpec, ModelSpec, SearchSpec, rim_rule

PAIRS = [(InputAttentionConfig, AttentionSpec), (CommConfig, CommSpec)]


@pytest.mark.parametrize("config,spec", PAIRS, ids=["input_attention", "comm"])
def test_sub_models_have_the_dataclass_fields_types_and_defaults(config, spec):
    hints = typing.get_type_hints(config)
    assert list(spec.model_fields) == [f.name for f in dataclasses.fields(config)]
    for f in dataclasses.fields(config):
        assert spec.model_fields[f.name].annotation == hints[f.name], f.name
    assert spec().model_dump() == dataclasses.asdict(config())


def test_model_spec_is_kind_and_layers_plus_the_rim_config():
    rim = [f.name for f in dataclasses.fields(RIMConfig)]
    assert list(ModelSpec.model_fields) == ["kind", "hidden_size", "num_layers", *rim[1:]]
    assert typing.get_args(ModelSpec.model_fields["kind"].annotation) == MODEL_KINDS
    defaults = ModelSpec().model_dump()
    assert {k: v for k, v in defaults.items() if k not in ("kind", "num_layers")} == dataclasses.asdict(
        RIMConfig(hidden_size=600))
    assert tuple(f"model.{k}" for k in rim[1:]) == RIM_ONLY  # the keys only a RIM has, one list


def test_search_algorithms_are_the_table():
    assert typing.get_args(SearchSpec.model_fields["algorithm"].annotation) == tuple(SEARCH_ALGORITHMS)


def _outside(rule: dict) -> list:
    """Values just outside a rule's range (and one just inside, last), to try on both declarations."""
    if "ge" in rule and isinstance(rule["ge"], int):
        return [rule["ge"] - 1, -5, rule["ge"]]
    return [rule["ge"] - 0.01, rule["lt"], rule["lt"] - 0.01]


RANGES = [(config, f.name, rim_rule(f)) for config in (InputAttentionConfig, CommConfig)
          for f in dataclasses.fields(config) if "ge" in rim_rule(f)]


@pytest.mark.parametrize("config,name,rule", RANGES, ids=[f"{c.__name__}.{n}" for c, n, _ in RANGES])
def test_each_range_refuses_what_the_dataclass_refuses(config, name, rule):
    spec = dict(PAIRS)[config]
    *bad, good = _outside(rule)
    for value in bad:
        with pytest.raises(RIMConfigError):
            config(**{name: value})
        with pytest.raises(ValidationError):
            spec(**{name: value})
    assert getattr(config(**{name: good}), name) == getattr(spec(**{name: good}), name) == good


def test_rim_ranges_refuse_what_rim_config_refuses():
    for name in ("num_units", "top_k"):
        with pytest.raises(RIMConfigError):
            RIMConfig(hidden_size=6, **{name: 0})
        with pytest.raises(ValidationError):
            ModelSpec(**{name: 0})


def test_spec_errors_keep_pydantic_messages_and_paths():
    with pytest.raises(SpecError) as info:
        load_spec({"name": "t", "task": {"name": "copying"},
                   "model": {"comm": {"dropout": 1.0}, "input_attention": {"heads": 0}, "cell": "rnn"}})
    errors = dict(info.value.errors)
    assert errors["model.comm.dropout"] == "Input should be less than 1 (got 1.0)"
    assert errors["model.input_attention.heads"] == "Input should be greater than or equal to 1 (got 0)"
    assert errors["model.cell"] == "Input should be 'lstm' or 'gru' (got 'rnn')"


def test_baselines_are_not_held_to_rim_constraints():
    # hidden_size 25 is not divisible by the default num_units 6: fine for an LSTM, refused for a RIM
    assert load_spec({"name": "t", "task": {"name": "copying"}, "model": {"kind": "lstm", "hidden_size": 25}})
    with pytest.raises(SpecError, match="divisible by num_units"):
        load_spec({"name": "t", "task": {"name": "copying"}, "model": {"kind": "rims", "hidden_size": 25}})


def test_descriptions_and_ranges_are_declared_once_in_rims_core():
    """The spec's help texts and ranges are the dataclass fields' metadata, not a second table."""
    for config, spec in [*PAIRS, (RIMConfig, ModelSpec)]:
        for f in dataclasses.fields(config):
            if f.name in spec.model_fields and f.metadata.get("doc"):
                assert spec.model_fields[f.name].description == f.metadata["doc"], f.name
    assert len(RANGES) == 8  # heads, key_size, value_size, dropout of each attention

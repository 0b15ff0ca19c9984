"""Search-space expansion: the top_k <= num_units constraint holds in every trial, RIM-only keys are varied
only for RIMs, seeds are an axis of their own."""

from __future__ import annotations

import optuna
import pytest

from sweeps.flat import config_id, resolve
from sweeps.space import expand, optuna_space, trial_points
from sweeps.spec import load_spec

BASE = {"name": "t", "task": {"name": "copying", "blank": 5}, "model": {"hidden_size": 24}}


def test_grid_holds_constraint_and_does_not_duplicate_baselines():
    spec = load_spec({**BASE, "seeds": 3, "space": {
        "model.kind": {"grid": ["rims", "lstm", "gru"]}, "model.num_units": {"grid": [2, 4]},
        "model.top_k": {"grid": [1, 2, 3, 4]}, "model.comm.enabled": {"grid": [True, False]}}})
    configs = expand(spec)
    rims = [c for c in configs if c["model.kind"] == "rims"]
    assert all(c["model.top_k"] <= c["model.num_units"] for c in rims)
    # units 2 -> top_k 1, 2; units 4 -> 1..4: 6 pairs x comm on/off
    assert len(rims) == 12
    baselines = [c for c in configs if c["model.kind"] != "rims"]
    assert len(baselines) == 2  # one per baseline kind, not one per RIM-only combination
    assert not any(k.startswith(("model.num_units", "model.top_k", "model.comm")) for c in baselines for k in c)
    points = trial_points(spec)
    assert len(points) == 14 * 3
    for i in range(0, len(points), 3):  # seeds adjacent, same configuration
        group = points[i:i + 3]
        assert [p["seed"] for p in group] == [0, 1, 2]
        assert len({config_id(p) for p in group}) == 1
    assert len({config_id(p) for p in points}) == 14


def test_random_search_draws_within_the_constraint():
    spec = load_spec({**BASE, "search": {"algorithm": "random", "num_samples": 40, "seed": 3}, "space": {
        "model.num_units": {"choice": [2, 4, 6]}, "model.top_k": {"int": [1, 6]},
        "optim.lr": {"loguniform": [1e-4, 1e-2]}}, "model": {"hidden_size": 48}})
    configs = expand(spec)
    assert len(configs) == 40
    assert all(c["model.top_k"] <= c["model.num_units"] for c in configs)
    assert all(1e-4 <= c["optim.lr"] <= 1e-2 for c in configs)
    assert len({c["model.top_k"] for c in configs}) > 3  # draws do cover the range
    assert expand(spec) == configs  # deterministic by search.seed


def test_optuna_define_by_run_respects_constraint_and_kind():
    spec = load_spec({**BASE, "search": {"algorithm": "optuna", "num_samples": 30}, "space": {
        "model.kind": {"choice": ["rims", "lstm"]}, "model.num_units": {"choice": [2, 4]},
        "model.top_k": {"int": [1, 4]}}, "model": {"hidden_size": 24}})
    define = optuna_space(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        constants = define(trial)
        cfg = resolve({**constants, **trial.params})
        seen.append(cfg)
        study.tell(trial, 0.0)
    assert {c["model.kind"] for c in seen} == {"rims", "lstm"}
    assert all(c["model.top_k"] <= c["model.num_units"] for c in seen if c["model.kind"] == "rims")
    assert all("model.top_k" not in c for c in seen if c["model.kind"] == "lstm")
    assert all(c["task.blank"] == 5 for c in seen)


def test_expand_refuses_optuna():
    spec = load_spec({**BASE, "search": {"algorithm": "optuna"}})
    with pytest.raises(ValueError, match="Optuna suggests"):
        expand(spec)


def test_a_list_of_spaces_runs_their_union():
    spec = load_spec({**BASE, "model": {"hidden_size": 24}, "seeds": 2, "space": [
        {"model.kind": {"grid": ["rims"]}, "model.top_k": {"grid": [2, 3]}},
        {"model.kind": {"grid": ["lstm"]}, "model.hidden_size": {"grid": [16, 32]}},
        {"model.kind": {"grid": ["rims"]}, "model.top_k": {"grid": [3]}}]})  # overlaps the first: kept once
    configs = expand(spec)
    assert sorted((c["model.kind"], c.get("model.top_k"), c["model.hidden_size"]) for c in configs) == [
        ("lstm", None, 16), ("lstm", None, 32), ("rims", 2, 24), ("rims", 3, 24)]
    assert len(trial_points(spec)) == 8

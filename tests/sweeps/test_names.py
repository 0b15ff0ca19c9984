"""Trial run names: after what differs between a sweep's trials, under the spec's names; a function of the
configuration and seed (a reopened run keeps its name), unique in a sweep, the same in Tune's table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from sweeps.keys import TAG_VARYING
from sweeps.progress import TrialName
from sweeps.space import trial_points, varying_keys
from sweeps.spec import load_spec
from sweeps.tracking import RunWriter, run_name

SPEC = {"name": "n", "task": {"name": "copying", "blank": 3, "test_blanks": [6]},
        "model": {"kind": "rims", "hidden_size": 24, "num_units": 4, "top_k": 2}, "seeds": 2,
        "space": {"model.comm.enabled": {"grid": [True, False]}, "model.kind": {"grid": ["rims", "lstm"]},
                  "optim.lr": {"grid": [0.01, 0.001]}, "model.top_k": {"grid": [1, 2]}}}


def test_names_say_what_differs_under_the_spec_names_and_are_unique():
    spec = load_spec(SPEC)
    keys = varying_keys(spec)
    assert keys == ["model.kind", "model.comm.enabled", "optim.lr", "model.top_k"]
    names = [run_name(p, keys) for p in trial_points(spec)]
    assert len(set(names)) == len(names) == 20  # 2 x 2 x 2 RIM configurations + 2 LSTM ones, x 2 seeds
    assert "rims comm.enabled=true lr=0.01 top_k=2 seed=1" in names
    assert "lstm lr=0.001 seed=0" in names, "RIM-only keys are not in a baseline's name"


@pytest.mark.parametrize("keys,config,name", [
    ([], {"model.kind": "rims", "seed": 3}, "rims seed=3"),
    (["model.comm.dropout", "model.input_attention.dropout"],
     {"model.kind": "rims", "model.comm.dropout": 0.1, "model.input_attention.dropout": 0.25, "seed": 0},
     "rims comm.dropout=0.1 input_attention.dropout=0.25 seed=0"),
    (["optim.dropout", "model.dropout"], {"model.kind": "gru", "optim.dropout": 0.5, "model.dropout": 0.0,
                                          "seed": 0}, "gru optim.dropout=0.5 model.dropout=0 seed=0"),
    (["task.test_blanks", "optim.lr"], {"model.kind": "lstm", "task.test_blanks": [20, 40], "optim.lr": 1.23456e-4,
                                        "seed": 1}, "lstm test_blanks=[20,40] lr=0.0001235 seed=1"),
])
def test_short_forms(keys, config, name):
    assert run_name(config, keys) == name


def test_tune_shows_the_run_name_for_grid_and_optuna_trials():
    spec = load_spec(SPEC)
    keys = varying_keys(spec)
    namer = TrialName(keys, [7, 8])
    point = trial_points(spec)[1]
    assert namer(SimpleNamespace(config={"trial": point})) == run_name(point, keys)
    optuna_config = {"model.kind": "lstm", "optim.lr": 0.01, "model.top_k": 2, "__trial_index__": 1}
    assert namer(SimpleNamespace(config=optuna_config)) == "lstm lr=0.01 seed=8"


def test_a_run_is_named_once_and_a_second_run_of_one_name_is_numbered(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tags = {TAG_VARYING: "model.kind,optim.lr"}
    config = {"model.kind": "rims", "optim.lr": 0.01, "model.num_units": 4, "seed": 0}

    def open_run(trial_id: str, tags: dict[str, str] = tags) -> str:
        writer = RunWriter(uri)
        writer.apply({"op": "open", "experiment": "names", "parent_run_id": "", "sweep_id": "s1",
                      "trial_id": trial_id, "config": config, "tags": tags})
        return writer.run_id

    first = open_run("t1")
    assert open_run("t1") == first, "a trial reopens its run (resume)"
    second = open_run("t2")  # the same configuration and seed again (an interrupted trial generated anew)
    client = MlflowClient(uri)
    assert client.get_run(first).info.run_name == "rims lr=0.01 seed=0"
    assert client.get_run(second).info.run_name == "rims lr=0.01 seed=0 #2"
    assert client.get_run(open_run("t3", {})).info.run_name == "t3", "a sweep started before names keeps ids"

"""Spec validation: every malformed spec is refused with its path in the spec, before anything runs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from sweeps.spec import SpecError, load_spec

SPECS = Path(__file__).resolve().parents[2] / "sweeps" / "specs"

GOOD = {
    "name": "t",
    "task": {"name": "copying", "blank": 5, "test_blanks": [10]},
    "model": {"kind": "rims", "hidden_size": 24, "num_units": 4, "top_k": 2},
    "optim": {"max_steps": 4, "eval_every": 2},
    "space": {"model.kind": {"grid": ["rims", "lstm"]}, "model.top_k": {"grid": [1, 2]}},
}


def with_(path: str, value):
    spec = copy.deepcopy(GOOD)
    node = spec
    *parents, leaf = path.split("/")
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


BAD = [
    (with_("name", ...), "name", "Field required"),
    (with_("name", "has space"), "name", "pattern"),
    (with_("colour", "red"), "colour", r"unknown key, not permitted \(value 'red'\); expected one of \[.*'seeds'"),
    (with_("task/name", "copy"), "task.name", "expected one of .*'copying'.*got 'copy'"),
    (with_("task/blnk", 3), "task.blnk", r"unknown key, not permitted \(value 3\); did you mean 'task.blank'\?"),
    (with_("task/blank", 0), "task.blank", "greater than or equal to 1"),
    (with_("task/test_blanks", []), "task.test_blanks", "non-empty list"),
    (with_("model/kind", "mamba"), "model.kind", "'rims', 'lstm', 'gru', 'transformer' or 'rmc'"),
    (with_("model/hidden_size", "big"), "model.hidden_size", "valid integer"),
    (with_("model/hidden_size", -6), "model.hidden_size", "greater than or equal to 1"),
    (with_("model/hidden_size", 25), "model.hidden_size", "divisible by num_units"),
    (with_("model/num_unit", 4), "model.num_unit", "did you mean 'model.num_units'"),
    (with_("model/comm", {"enabld": True}), "model.comm.enabld", "did you mean 'model.comm.enabled'"),
    (with_("seeds", "three"), "seeds", "positive number of seeds or a list of integer seeds, got 'three'"),
    (with_("space", 3), "space", "mapping of dotted keys to distributions"),
    (with_("space/model.kind", "rims"), "space.model.kind", r"expected one of \{grid: ..., .*got 'rims'"),
    (with_("model/comm", {"enabled": "maybe"}), "model.comm.enabled", "valid boolean"),
    (with_("optim/lr", 0), "optim.lr", "greater than 0"),
    (with_("seeds", 0), "seeds", "positive number of seeds"),
    (with_("seeds", [1, 1]), "seeds", "distinct seeds"),
    (with_("space/model.top_k", {"grid": [5, 6]}), "space.model.top_k", "no configuration satisfies it"),
    (with_("space/model.topk", {"grid": [1]}), "space.model.topk", "did you mean 'model.top_k'"),
    (with_("space/model.top_k", {"grid": []}), "space.model.top_k.grid", "non-empty list"),
    (with_("space/model.top_k", {"range": [1, 2]}), "space.model.top_k", "expected one of"),
    (with_("space/optim.lr", {"loguniform": [0, 1]}), "space.optim.lr.loguniform", "low > 0"),
    (with_("space/optim.lr", {"uniform": [0.1, 0.01]}), "space.optim.lr.uniform", "low < high"),
    (with_("space/optim.lr", {"uniform": [0.01, 0.1]}), "space.optim.lr", "every space entry must be a grid"),
    (with_("space/seed", {"grid": [0, 1]}), "space.seed", "their own axis"),
    (with_("search/metric", "eval/ce_blank10"), "search.metric", "out-of-distribution test condition"),
    (with_("search/metric", "val/loss"), "search.metric", "unknown metric 'val/loss'"),
    (with_("search/algorithm", "bayes"), "search.algorithm", "'grid', 'random' or 'optuna'"),
    (with_("scheduler/name", "pbt"), "scheduler.name", "'none' or 'asha'"),
    (with_("resources/cpu", 0), "resources.cpu", "greater than 0"),
    (with_("stop/metric", "val/ce"), "stop", "go together"),
    ({**GOOD, "space": [{"model.kind": {"grid": ["rims"]}}, {"model.hidden_size": {"grid": [25]}}]},
     "space[1].model.hidden_size", "divisible by num_units"),
    ({**with_("search/algorithm", "optuna"), "space": [{"model.kind": {"grid": ["rims"]}}]}, "space",
     "Optuna needs one space"),
    ({**GOOD, "space": []}, "space", "non-empty list of spaces"),
    ({**with_("search/algorithm", "optuna"), "space": {"model.top_k": {"grid": [1, 3]}}}, "space.model.top_k",
     "consecutive ints"),
    ({**with_("search/algorithm", "random"), "space": {"model.hidden_size": {"int": [20, 40]}}},
     "space.model.hidden_size", "must be a grid or choice"),
    # a value of a grid or choice is checked as the field it varies would check it, before launch
    (with_("space/model.top_k", {"grid": [0, 1]}), r"space.model.top_k.grid[0]", r"greater than or equal to 1 \(got 0"),
    (with_("space/optim.lr", {"grid": [0.1, -1]}), r"space.optim.lr.grid[1]", r"greater than 0 \(got -1\)"),
    (with_("space/model.comm.dropout", {"grid": [1.0]}), "space.model.comm.dropout.grid[0]", r"less than 1 \(got 1.0"),
    (with_("space/model.kind", {"grid": ["rims", "rnn"]}), "space.model.kind.grid[1]",
     "'rims', 'lstm', 'gru', 'transformer' or 'rmc'"),
    (with_("space/task.test_blanks", {"grid": [[], [3]]}), "space.task.test_blanks.grid[0]", "non-empty list"),
    ({**with_("search/algorithm", "random"), "space": {"model.hidden_size": {"choice": [24, "big"]}}},
     "space.model.hidden_size.choice[1]", "valid integer"),
]


@pytest.mark.parametrize("spec,path,message", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_spec_names_the_path_and_the_problem(spec, path, message):
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    paths = [p for p, _ in info.value.errors]
    assert path in paths, info.value
    assert re.search(message, str(info.value)), info.value


def test_every_error_is_reported_at_once():
    spec = with_("model/kind", "mamba")
    spec["optim"]["lr"] = -1
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert {"model.kind", "optim.lr"} <= {p for p, _ in info.value.errors}


def test_files_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        load_spec(tmp_path / "list.yaml")


def test_good_spec_and_shipped_specs_load():
    spec = load_spec(GOOD)
    assert spec.objective == ("val/ce", "min")
    assert spec.seed_list == [0]
    for path in SPECS.glob("*.yaml"):
        load_spec(path)

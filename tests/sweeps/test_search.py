"""The table of search algorithms decides what the spec accepts and how the space expands."""

from __future__ import annotations

import pytest

from sweeps.search import DISTRIBUTIONS, SEARCH_ALGORITHMS, search_algorithm
from sweeps.space import expand
from sweeps.spec import SpecError, load_spec

BASE = {"name": "t", "task": {"name": "copying", "blank": 5}, "model": {"hidden_size": 24}}
UNION = [{"model.top_k": {"grid": [1, 2]}}, {"model.num_units": {"grid": [4]}}]


@pytest.mark.parametrize("name", sorted(SEARCH_ALGORITHMS))
def test_each_algorithm_accepts_its_distributions_and_refuses_the_others(name):
    algo = search_algorithm(name)
    ranges = {"uniform": [0.001, 0.01], "loguniform": [0.001, 0.01], "int": [1, 3]}
    for dist in DISTRIBUTIONS:
        arg = ranges.get(dist, [0.001, 0.01])
        spec = {**BASE, "search": {"algorithm": name}, "space": {"optim.lr" if dist != "int" else "optim.batch_size":
                                                                 {dist: arg}}}
        if dist in algo.distributions:
            load_spec(spec)
        else:
            with pytest.raises(SpecError, match=f"search.algorithm is '{name}', so every space entry must be"):
                load_spec(spec)


@pytest.mark.parametrize("name", sorted(SEARCH_ALGORITHMS))
def test_unions_and_expansion_follow_the_table(name):
    algo = search_algorithm(name)
    spec = {**BASE, "search": {"algorithm": name, "num_samples": 3}, "space": UNION}
    if not algo.union:
        with pytest.raises(SpecError, match="needs one space"):
            load_spec(spec)
        spec["space"] = UNION[0]
    loaded = load_spec(spec)
    if not algo.expanded:
        with pytest.raises(ValueError, match="is not expanded"):
            expand(loaded)
        return
    configs = expand(loaded)
    if algo.sampled:  # num_samples draws from each space of the union, the distinct ones kept
        assert [len(expand(sub)) for sub in loaded.subspecs()] == [3, 3]
        assert {(c["model.num_units"], c["model.top_k"]) for c in configs} <= {(4, 4), (6, 1), (6, 2)}
    else:  # every combination: top_k 1, 2 (num_units 6), and num_units 4 (top_k 4)
        assert sorted((c["model.num_units"], c["model.top_k"]) for c in configs) == [(4, 4), (6, 1), (6, 2)]


def test_an_unknown_algorithm_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"search.algorithm: expected one of \['grid', 'optuna', 'random'\], "
                                         r"got 'bayes'"):
        search_algorithm("bayes")

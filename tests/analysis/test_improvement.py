"""Probability of improvement and IQM against rliable's own functions on the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import metrics as rly

from analysis.improvement import poi_ci, probability_of_improvement
from analysis.stats import iqm, iqm_ci


@pytest.mark.parametrize("shape", [((5, 4), (5, 4)), ((3, 1), (7, 1)), ((6, 3), (4, 3))])
def test_probability_of_improvement_is_rliables(shape):
    rng = np.random.default_rng(sum(shape[0]) * 7)
    x = rng.normal(0.3, 1, shape[0]).round(1)  # rounded: ties happen and must count one half
    y = rng.normal(0, 1, shape[1]).round(1)
    assert probability_of_improvement(x, y) == pytest.approx(rly.probability_of_improvement(x, y), abs=1e-12)
    assert probability_of_improvement(y, x) == pytest.approx(1 - probability_of_improvement(x, y), abs=1e-12)


def test_probability_of_improvement_extremes_and_identical_runs():
    x, y = np.array([[3.0], [4.0]]), np.array([[1.0], [2.0], [2.5]])
    assert probability_of_improvement(x, y) == 1.0 and probability_of_improvement(y, x) == 0.0
    same = np.array([[0.2, 0.4], [0.6, 0.8]])
    assert probability_of_improvement(same, same) == 0.5 == rly.probability_of_improvement(same, same)
    assert probability_of_improvement([1.0, 2.0], [1.5]) == 0.5  # 1-D: one task


def test_iqm_is_rliables_aggregate_iqm():
    rng = np.random.default_rng(3)
    scores = rng.exponential(1.0, (10, 5))
    assert iqm(scores) == pytest.approx(rly.aggregate_iqm(scores), rel=1e-12)
    assert iqm_ci(scores, n_boot=200)[0] == pytest.approx(rly.aggregate_iqm(scores), rel=1e-12)


def test_poi_interval_is_deterministic_and_brackets_the_point():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 1, (5, 3)), rng.normal(0, 1, (5, 3))
    point, low, high = poi_ci(x, y, n_boot=500, seed=4)
    assert (point, low, high) == poi_ci(x, y, n_boot=500, seed=4)
    assert 0 <= low <= point <= high <= 1 and low < high
    wide = poi_ci(x[:3], y[:3], n_boot=500, seed=4)
    assert wide[2] - wide[1] > 0  # fewer runs: still an interval, not a point


@pytest.mark.parametrize(("x", "y", "match"), [
    (np.ones((2, 3)), np.ones((2, 2)), "y: Expected the same number of tasks as x"),
    (np.array([]), np.ones(2), "x: Expected finite scores"),
    (np.array([1.0, np.nan]), np.ones(2), "x: Expected finite scores"),
])
def test_bad_scores_are_refused_naming_the_argument(x, y, match):
    with pytest.raises(ValueError, match=match):
        probability_of_improvement(x, y)

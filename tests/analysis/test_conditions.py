"""The RL section by condition: scores gathered per condition and family, intervals, probability of improvement."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from rliable import metrics as rly

from analysis.conditions import condition_blocks, condition_rows, condition_scores, poi_rows
from analysis.stats import iqm

RIMS = {"distractors2": [0.9, 0.8, 0.85, 0.7, 0.95], "novelcolors2": [0.6, 0.7, 0.65, 0.5, 0.8]}
LSTM = {"distractors2": [0.7, 0.6, 0.75, 0.8, 0.65], "novelcolors2": [0.4, 0.5, 0.3, 0.6, 0.45]}


def runs_table(extra_failed: bool = True) -> pa.Table:
    rows = []
    for kind, scores in (("rims", RIMS), ("lstm", LSTM)):
        for i in range(5):
            rows.append({"model.kind": kind, "status": "FINISHED", "val/success_rate": scores["distractors2"][i],
                         **{f"eval/success_rate_{c}": v[i] for c, v in scores.items()},
                         "eval/episode_len_mean_novelcolors2": 10.0})
    if extra_failed:  # a failed run's values must not count
        rows.append({"model.kind": "rims", "status": "FAILED", "val/success_rate": 0.0,
                     "eval/success_rate_distractors2": 0.0, "eval/success_rate_novelcolors2": 0.0,
                     "eval/episode_len_mean_novelcolors2": 99.0})
    return pa.Table.from_pylist(rows)


def test_scores_are_the_finished_runs_final_values_per_condition_and_family():
    scores = condition_scores(runs_table(), "success_rate")
    assert list(scores) == ["distractors2", "novelcolors2"]  # episode_len_mean is another base metric
    np.testing.assert_allclose(scores["novelcolors2"]["rims"], RIMS["novelcolors2"])
    np.testing.assert_allclose(scores["distractors2"]["lstm"], LSTM["distractors2"])


def test_rows_give_mean_t_interval_and_iqm():
    rows = {(r.condition, r.group): r for r in condition_rows(condition_scores(runs_table(), "success_rate"))}
    r = rows[("novelcolors2", "rims")]
    assert r.n == 5 and r.mean == pytest.approx(np.mean(RIMS["novelcolors2"]))
    assert r.low < r.mean < r.high
    assert r.iqm == pytest.approx(iqm(RIMS["novelcolors2"])) and r.iqm_low <= r.iqm <= r.iqm_high


def test_poi_per_condition_and_pooled_over_test_conditions_match_rliable():
    scores = condition_scores(runs_table(), "success_rate")
    rows = poi_rows(scores, "rims", "lstm", pooled=["distractors2", "novelcolors2"])
    single = {p.conditions: p for p in rows}
    x = np.array(RIMS["novelcolors2"])[:, None]
    y = np.array(LSTM["novelcolors2"])[:, None]
    assert single[("novelcolors2",)].poi == pytest.approx(rly.probability_of_improvement(x, y))
    both = single[("distractors2", "novelcolors2")]
    xx = np.stack([RIMS[c] for c in ("distractors2", "novelcolors2")], axis=1)
    yy = np.stack([LSTM[c] for c in ("distractors2", "novelcolors2")], axis=1)
    assert both.poi == pytest.approx(rly.probability_of_improvement(xx, yy))
    assert both.low <= both.poi <= both.high


def test_report_section_pools_only_the_test_conditions():
    blocks = condition_blocks(runs_table(), "val/success_rate", train_condition="distractors2")
    text = "\n".join(b.text for b in blocks)
    assert "By condition: success_rate" in text and "| novelcolors2 | rims | 5 |" in text
    poi_lines = [ln for ln in text.splitlines() if ln.startswith("| rims |")]
    # per condition (2 lines); no pooled line: one test condition only
    assert [ln.split(" | ")[1] for ln in poi_lines] == ["distractors2", "novelcolors2"]
    assert condition_blocks(runs_table().drop(["model.kind"]), "val/success_rate") == []


def test_success_rate_intervals_stay_in_zero_one():
    scores = {"distractors2": {"rims": np.array([0.75, 0.95, 1.0]), "lstm": np.array([0.4, 0.5, 0.6])}}
    plain = {r.group: r for r in condition_rows(scores)}
    clipped = {r.group: r for r in condition_rows(scores, (0.0, 1.0))}
    assert plain["rims"].high > 1.0 and clipped["rims"].high == 1.0 and clipped["rims"].low == plain["rims"].low
    assert (clipped["lstm"].low, clipped["lstm"].high) == (plain["lstm"].low, plain["lstm"].high)
    table = pa.Table.from_pylist([{"model.kind": k, "status": "FINISHED", "eval/success_rate_distractors2": v}
                                  for k, vs in scores["distractors2"].items() for v in vs])
    text = "\n".join(b.text for b in condition_blocks(table, "val/success_rate"))
    assert "| distractors2 | rims | 3 | 0.900 | [0.57, 1.00] |" in text and "clipped to [0, 1]" in text
    returns = table.rename_columns(["model.kind", "status", "eval/episode_return_mean_distractors2"])
    text = "\n".join(b.text for b in condition_blocks(returns, "val/episode_return_mean"))
    assert "| distractors2 | rims | 3 | 0.900 | [0.57, 1.23] |" in text and "clipped" not in text  # not a fraction

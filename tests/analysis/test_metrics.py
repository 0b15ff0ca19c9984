"""analysis.metrics (over sweeps.keys.TASK_KEYS) against the tasks' own code: the same objectives, RL flags and
metric names, and chance levels that the tasks' metric functions give for a model that learnt nothing task-specific."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.metrics import chance_level, metric_info, split_metric, task_metrics
from sweeps.keys import TASK_KEYS
from sweeps.tasks import TASKS, build_task
from sweeps.tasks.copying import copying_metrics, make_batch

# The declarations take their objective and metric docs from sweeps.keys.TASK_KEYS, so comparing the two would
# check nothing: what the tasks' code reports is compared instead, on tiny settings.
TINY = {
    "copying": {"task.blank": 3, "task.test_blanks": [6], "task.eval_size": 4},
    "smnist": {"task.source": "digits", "task.train_resolution": 4, "task.test_resolutions": [5], "task.val_size": 8,
               "task.eval_size": 8, "task.train_size": 16},
    "bouncing": {"task.frame_size": 8, "task.n_frames": 6, "task.train_balls": 1, "task.test_balls": [2],
                 "task.burn_in": 2, "task.rollout": 3, "task.train_size": 4, "task.eval_size": 2},
}


@pytest.mark.parametrize("name", ["copying", "bouncing", pytest.param("smnist", marks=pytest.mark.slow)])
def test_the_metrics_a_task_reports_are_the_documented_ones(name):
    task = build_task({"task.name": name, **TINY[name], "model.kind": "lstm", "model.hidden_size": 8}, "cpu")
    with torch.no_grad():
        reported = task.evaluate(task.build_model())
    bases = {split_metric(k)[1] for k in reported}
    assert bases == set(task_metrics(name)), name
    assert TASK_KEYS[name].objective[0] in reported and not TASK_KEYS[name].rl
    assert {split_metric(k)[0] for k in reported} == {"val", "eval"}
    assert all(split_metric(k)[2] for k in reported if k.startswith("eval/")), "every eval metric names a condition"


def test_every_task_has_an_objective_among_its_documented_metrics():
    assert set(TASK_KEYS) == set(TASKS) == {"copying", "smnist", "bouncing", "atari", "fetch"}
    for name, keys in TASK_KEYS.items():
        docs = task_metrics(name)
        assert split_metric(keys.objective[0])[1] in docs, name
        assert keys.rl == (name in ("atari", "fetch")), name
        for base, info in docs.items():
            assert info.doc and info.chance_doc and info.better in ("lower", "higher"), (name, base)
            assert metric_info(name, f"val/{base}") is info


def test_split_metric():
    assert split_metric("eval/ce_all_blank200") == ("eval", "ce_all", "blank200")
    assert split_metric("eval/acc_res24") == ("eval", "acc", "res24")
    assert split_metric("val/ce_all") == ("val", "ce_all", None)
    assert metric_info("copying", "eval/ce_all_blank200").base == "ce_all"
    assert metric_info("nope", "val/ce") is None and chance_level("bouncing", "val/bce") is None


@pytest.mark.parametrize("blank", [3, 50, 200])
def test_copying_chance_levels_are_what_the_task_computes_for_a_memoryless_model(blank):
    # a model that predicts the blanks (and the marker's blank target) with certainty and, at the 10 recall
    # positions, a uniform distribution over the symbols 1..8: what is left without any memory
    gen = torch.Generator().manual_seed(0)
    _, y = make_batch(2000, blank, gen)
    logits = torch.full((*y.shape, 10), -1e4)
    logits[..., 0] = torch.where(y == 0, 1e4, -1e4)
    recall = (y != 0).unsqueeze(-1) & (torch.arange(10) >= 1) & (torch.arange(10) <= 8)
    logits = torch.where(recall, torch.rand(*y.shape, 10, generator=gen) * 1e-6, logits)  # ~uniform, random argmax
    _, m = copying_metrics(logits, y)
    settings = {"task.blank": blank}
    assert m.ce == pytest.approx(chance_level("copying", "val/ce"), abs=1e-4)
    assert chance_level("copying", "val/ce") == pytest.approx(math.log(8))
    assert m.ce_all == pytest.approx(chance_level("copying", f"eval/ce_all_blank{blank}"), abs=1e-4)
    assert m.ce_all == pytest.approx(chance_level("copying", "val/ce_all", settings), abs=1e-4)
    assert m.acc == pytest.approx(chance_level("copying", "eval/acc_blank6"), abs=0.01)  # 20,000 guesses
    # task.num_symbols changes the length and the share of recall positions
    assert chance_level("copying", "val/ce_all", {"task.blank": blank, "task.num_symbols": 5}) == pytest.approx(
        5 * math.log(8) / (blank + 10))


def test_smnist_chance_levels_are_what_a_uniform_guess_scores():
    from sweeps.tasks.smnist import _metrics

    y = torch.randint(0, 10, (5000,), generator=torch.Generator().manual_seed(0))
    _, m = _metrics(torch.rand(5000, 10, generator=torch.Generator().manual_seed(1)) * 1e-6, y)
    assert m["ce"] == pytest.approx(chance_level("smnist", "eval/ce_res24"), abs=1e-5)
    assert m["acc"] == pytest.approx(chance_level("smnist", "val/acc"), abs=0.015)

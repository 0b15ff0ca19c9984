"""analysis.metrics against the tasks' own code: the same metric names, and chance levels that the tasks' metric
functions give for a model that learnt nothing task-specific."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.metrics import chance_level, metric_info, split_metric, task_metrics
from sweeps.tasks import TASKS
from sweeps.tasks.copying import copying_metrics, make_batch


def test_every_task_metric_is_documented():
    for name, task in TASKS.items():
        docs = task_metrics(name)
        assert split_metric(task.objective[0])[1] in docs, name
        if name != "atari":  # atari's metric_docs also lists the PPO learner's train/ statistics
            assert set(docs) == set(task.metric_docs), name
        for base, info in docs.items():
            assert info.doc and info.chance_doc and info.better in ("lower", "higher"), (name, base)


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

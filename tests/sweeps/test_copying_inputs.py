"""Copying's input pipelines (task.input, task.dropout) and the plateau learning-rate schedule (optim.lr_schedule):
the official script's pipeline as settings, checked on what each setting changes."""

from __future__ import annotations

import pytest
import torch

from sweeps.flat import resolve
from sweeps.spec import base_config, load_spec
from sweeps.tasks.copying import VOCAB, CopyingModel, make_batch
from sweeps.trial import load_checkpoint, run_trial

SPEC = {"name": "t", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "lstm", "hidden_size": 12},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 8, "eval_every": 2}}
OFFLINE = {"tracking_uri": None, "sweep_id": "s", "seeds": [0]}  # no tracking: the reports are what is checked


def config(spec: dict = SPEC, **over):
    return resolve({**base_config(load_spec(spec)), "seed": 0, **over})


def test_embedding_input_feeds_the_core_a_learned_vector_of_hidden_size():
    m = CopyingModel("lstm", 12, input="embedding")
    assert m.rnn.input_size == 12 and m.embed.weight.shape == (VOCAB, 12)
    assert m.embed.weight.abs().max() <= 0.1  # the official script's uniform(-0.1, 0.1)
    x, _ = make_batch(4, 3, torch.Generator().manual_seed(0))
    out = m(x)
    out.sum().backward()
    assert out.shape == (4, 3 + 20, VOCAB) and m.embed.weight.grad.abs().sum() > 0
    assert CopyingModel("lstm", 12).rnn.input_size == VOCAB and CopyingModel("lstm", 12).embed is None


@pytest.mark.parametrize("kind", ["rims", "lstm"])
def test_dropout_acts_in_training_only_and_zero_leaves_the_model_deterministic(kind):
    kw = {"num_units": 3, "top_k": 2, "input_attention": {"dropout": 0.0}, "comm": {"dropout": 0.0}} \
        if kind == "rims" else {}
    x, _ = make_batch(4, 3, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    m = CopyingModel(kind, 12, input="embedding", dropout=0.5, **kw)
    assert not torch.equal(m(x), m(x))  # two training passes draw different masks
    m.eval()
    assert torch.equal(m(x), m(x))
    if kind == "lstm":  # (a RIM in training mode has randomness of its own)
        plain = CopyingModel(kind, 12, input="embedding", dropout=0.0, **kw)
        assert torch.equal(plain(x), plain(x))


@pytest.mark.parametrize(("kw", "message"), [
    ({"input": "embed"}, "Expected input 'onehot' or 'embedding', got 'embed'"),
    ({"dropout": 1.0}, "Expected 0 <= dropout < 1, got 1.0")])
def test_bad_pipeline_settings_are_refused_with_what_is_allowed(kw, message):
    with pytest.raises(ValueError, match=message):
        CopyingModel("lstm", 12, **kw)


def test_the_trial_builds_the_pipeline_its_config_names():
    reports = []
    run_trial(config(**{"task.input": "embedding", "task.dropout": 0.5, "task.loss": "ce_all"}), OFFLINE,
              trial_id="e", checkpoint_dir=None, report=lambda m, d: reports.append((m, load_checkpoint(d))))
    state = reports[-1][1]["model"]
    assert state["embed.weight"].shape == (VOCAB, 12) and state["rnn.weight_ih_l0"].shape == (48, 12)


def test_constant_schedule_keeps_the_rate_and_logs_it():
    reports = []
    run_trial(config(), OFFLINE, trial_id="c", checkpoint_dir=None, report=lambda m, d: reports.append(m))
    assert [r["train/lr"] for r in reports] == [0.01] * 4


def lr_run(tmp_path, name, checkpoint_dir=None, **over):
    """A plateau run whose objective cannot improve (lr 1e-6: changes far below ReduceLROnPlateau's threshold
    1e-4; a smaller rate would fall under its eps 1e-8, below which it skips the drop): the reports, and a copy
    of each checkpoint by step."""
    import shutil
    reports, ckpts = [], {}

    def report(m, d):
        reports.append(m)
        ckpts[m["step"]] = shutil.copytree(d, tmp_path / f"{name}-{m['step']}")

    run_trial(config(**{"optim.lr": 1e-6, "optim.lr_schedule": "plateau", **over}), OFFLINE, trial_id=name,
              checkpoint_dir=checkpoint_dir, report=report)
    return reports, ckpts


@pytest.mark.parametrize(("patience", "rates"), [(0, [1, 1, 0.5, 0.25]), (1, [1, 1, 1, 0.5])])
def test_plateau_halves_the_rate_after_patience_evaluations_without_improvement(tmp_path, patience, rates):
    reports, _ = lr_run(tmp_path, "p", **{"optim.plateau_patience": patience})
    assert [r["train/lr"] / 1e-6 for r in reports] == pytest.approx(rates)
    ce = [r["val/ce"] for r in reports]
    assert max(ce) - min(ce) < 1e-4 * min(ce)  # it did not improve beyond ReduceLROnPlateau's threshold


def test_a_resumed_trial_continues_the_schedule_where_it_stopped(tmp_path):
    whole, ckpts = lr_run(tmp_path, "w", **{"optim.plateau_patience": 0})
    assert "lr_schedule" in load_checkpoint(ckpts[4])
    resumed, _ = lr_run(tmp_path, "r", checkpoint_dir=ckpts[4], **{"optim.plateau_patience": 0})
    assert [r["step"] for r in resumed] == [6, 8]
    assert [r["train/lr"] for r in resumed] == [r["train/lr"] for r in whole[2:]]

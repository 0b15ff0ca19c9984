"""sweeps.activations: a RIM's per-step unit activity from its trace hook, and a logged trial's, as numpy arrays
(what analysis' unit figures draw; the figures themselves: tests/analysis/test_plots.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweeps.activations import trace_activity, unit_activations
from sweeps.evaluate import load_trial
from sweeps.tasks.copying import VOCAB, CopyingModel, make_batch

SPEC = {"name": "t", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 8},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 4, "max_steps": 4, "eval_every": 2}}


@pytest.fixture(scope="module")
def copying():
    torch.manual_seed(0)
    model = CopyingModel("rims", hidden_size=12, num_units=3, top_k=2)
    x, _ = make_batch(6, blank=5, generator=torch.Generator().manual_seed(1))
    return model, x


def test_trace_activity_is_the_cores_trace_in_eval_mode(copying):
    model, x = copying
    model.train()
    active = trace_activity(model, x)
    assert model.training  # the mode is restored
    model.eval()  # the trace runs the model in eval mode (no dropout)
    with torch.no_grad():
        _, _, trace = model.rnn(F.one_hot(x, VOCAB).float(), return_trace=True)
    expect = trace.active[0].permute(1, 0, 2).numpy()  # (S, T, N, K) -> (N, T, K)
    assert isinstance(active, np.ndarray) and active.dtype == bool and active.shape == (6, x.shape[1], 3)
    np.testing.assert_array_equal(active, expect)
    assert np.all(active.sum(axis=-1) == 2)  # top_k units per step
    with pytest.raises(ValueError, match=r"layer 1 out of range; the trace has 1"):
        trace_activity(model, x, layer=1)


def test_trace_activity_needs_a_rim_core():
    x, _ = make_batch(2, blank=3)
    with pytest.raises(ValueError, match=r"RIM.*LSTM"):
        trace_activity(CopyingModel("lstm", hidden_size=8), x)


def test_unit_activations_trace_the_trained_model_of_a_logged_trial(tmp_path):
    from tests.sweeps.logged import logged_trial

    uri, _, run = logged_trial(tmp_path, SPEC, "p", "activations-test")
    tokens, active = unit_activations(run.info.run_id, 5, tracking_uri=uri)
    x, _ = make_batch(5, 3, torch.Generator().manual_seed(0))  # the trial's blank, seed 0
    np.testing.assert_array_equal(tokens, x.numpy())
    _, model, _ = load_trial(run.info.run_id, uri)
    np.testing.assert_array_equal(active, trace_activity(model, x))
    fresh = trace_activity(CopyingModel("rims", hidden_size=12, num_units=3, top_k=2), x)
    assert active.shape == fresh.shape == (5, 3 + 2 * 10, 3)
    other, _ = unit_activations(run.info.run_id, 5, tracking_uri=uri, seed=1)
    assert not np.array_equal(other, tokens)  # seed picks the sequences
    parent = run.data.tags["mlflow.parentRunId"]
    with pytest.raises(ValueError, match=r"unit_activations: .*no final checkpoint"):
        unit_activations(parent, 5, tracking_uri=uri)
    with pytest.raises(ValueError, match="n >= 1, got 0"):
        unit_activations(run.info.run_id, 0, tracking_uri=uri)


@pytest.mark.slow  # a second logged trial: about 6 s
def test_unit_activations_of_a_baseline_are_none(tmp_path):
    from tests.sweeps.logged import logged_trial

    spec = {**SPEC, "model": {"kind": "lstm", "hidden_size": 8}}
    uri, _, run = logged_trial(tmp_path, spec, "p", "activations-lstm")
    assert unit_activations(run.info.run_id, 4, tracking_uri=uri) is None

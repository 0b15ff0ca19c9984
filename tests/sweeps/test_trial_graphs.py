"""resources.cuda_graph: a RIM trial's training steps and evaluations through rims_core.install_graphs, and the
tag that says how it went (rims.cuda_graph).

CUDA graphs cannot be captured without a GPU: here the trial's captures are stand-ins for
torch.cuda.make_graphed_callables and rims_core.graphs.cuda_graph_inference that return the module uncaptured
(sweeps.trial.CPU_GRAPH_CAPTURE and CPU_INFERENCE_CAPTURE, the one mocked part), so the trial's own path runs for
real: installing, serving its batches and evaluations, keeping its checkpoints and metrics, the tag.
tests/rims_core/test_graphs.py has `gpu` tests with real graphs.
"""

from __future__ import annotations

import pytest

import sweeps.trial
from sweeps.keys import TAG_CUDA_GRAPH
from sweeps.spec import load_spec

from ..graph_captures import uncaptured
from .logged import logged_trial

SPEC = {"name": "t", "task": {"name": "copying", "blank": 2, "test_blanks": [4], "eval_size": 8},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
        "optim": {"lr": 0.01, "batch_size": 4, "max_steps": 4, "eval_every": 2}}


def failing(module, sample_args, num_warmup_iters=3):
    raise RuntimeError("capture failed")


def counted(calls):
    """An inference stand-in that records the shape of x of each capture."""
    def capture(module, sample_args, num_warmup_iters=3):
        calls.append(tuple(sample_args[0].shape[:2]))
        return module
    return capture


# the training batches (one shape, T 22 and B 4) give one training graph; the evaluations, the validation set at
# blank 2 and the test set at blank 4 (T 22 and 24, 8 sequences each), one inference graph each, and the selection
# statistics over the last training batch (no grad, with the trace) a third
@pytest.mark.parametrize(("capture", "tag", "inference_captures"),
                         [(uncaptured, "graphs, 4 captured", 3),
                          (failing, "off: RuntimeError: capture failed", 0)])
def test_a_graphed_trial_logs_what_the_eager_one_does_and_says_how_its_graphs_fared(tmp_path, monkeypatch,
                                                                                    capture, tag,
                                                                                    inference_captures):
    calls: list = []
    monkeypatch.setattr(sweeps.trial, "CPU_GRAPH_CAPTURE", capture)
    monkeypatch.setattr(sweeps.trial, "CPU_INFERENCE_CAPTURE", counted(calls))
    _, _, on = logged_trial(tmp_path / "on", SPEC, "00000", "t", cuda_graph=True)
    _, _, off = logged_trial(tmp_path / "off", SPEC, "00000", "t")
    assert on.data.tags[TAG_CUDA_GRAPH] == tag and TAG_CUDA_GRAPH not in off.data.tags
    metrics = [k for k in on.data.metrics if k.startswith(("train/ce", "val/", "eval/"))]
    assert "val/ce" in metrics and "eval/ce_blank4" in metrics
    for k in metrics:  # static shapes, graphed exactly: the same arithmetic and random draws
        assert on.data.metrics[k] == off.data.metrics[k], k
    assert calls == [(22, 8), (24, 8), (22, 4)][:inference_captures]


def test_a_cpu_trial_installs_no_graphs_and_records_nothing(tmp_path):
    _, _, run = logged_trial(tmp_path, SPEC, "00000", "t", cuda_graph=True)
    assert TAG_CUDA_GRAPH not in run.data.tags


def test_resources_cuda_graph_is_a_sweep_setting_off_by_default():
    assert load_spec(SPEC).resources.cuda_graph is False
    assert load_spec({**SPEC, "resources": {"cuda_graph": True}}).resources.cuda_graph is True

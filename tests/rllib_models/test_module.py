"""The RIM policy module against RLlib's recurrent contract, and the old-stack adapter against the new one."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rims_core import saved_bytes
from rllib_models import torch_core
from rllib_models.catalog import RIMModelV2
from rllib_models.config import ModelConfigError
from rllib_models.module import RIMRLModule, rims_module_spec

from ..graph_captures import static_buffers, uncaptured

FRAME = gym.spaces.Box(-1.0, 1.0, (84, 84, 1), np.float32)
VECTOR = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
ACTIONS = gym.spaces.Discrete(6)
SMALL = {"num_units": 4, "top_k": 2, "hidden_size": 32, "max_seq_len": 8,
         "input_attention": {"dropout": 0.0}, "comm": {"dropout": 0.0}}


def module(obs_space=VECTOR, **mc) -> RIMRLModule:
    torch.manual_seed(0)
    return RIMRLModule(observation_space=obs_space, action_space=ACTIONS, model_config={**SMALL, **mc})


def batched_state(m: RIMRLModule, B: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).unsqueeze(0).repeat(B, *([1] * v.ndim)) for k, v in m.get_initial_state().items()}


@pytest.mark.parametrize("cell,keys", [("lstm", {"h", "c"}), ("gru", {"h"})])
def test_initial_state_has_no_batch_dim_and_zeros(cell, keys):
    state = module(cell=cell).get_initial_state()
    assert set(state) == keys
    assert all(v.shape == (1, 32) and v.dtype == np.float32 and not v.any() for v in state.values())


@pytest.mark.parametrize("obs_space", [FRAME, VECTOR], ids=["cnn", "mlp"])
def test_shapes_of_every_forward(obs_space):
    m = module(obs_space)
    B, T = 3, 5
    batch = {Columns.OBS: torch.rand(B, T, *obs_space.shape) * 2 - 1, Columns.STATE_IN: batched_state(m, B)}
    out = m.forward_train(batch)
    assert out[Columns.ACTION_DIST_INPUTS].shape == (B, T, ACTIONS.n)
    assert out[Columns.EMBEDDINGS].shape == (B, T, 32)
    assert {k: v.shape for k, v in out[Columns.STATE_OUT].items()} == {"h": (B, 1, 32), "c": (B, 1, 32)}
    values = m.compute_values(batch, out[Columns.EMBEDDINGS])
    assert values.shape == (B, T)
    assert torch.allclose(values, m.compute_values(batch)), "values from embeddings = values recomputed"


def test_a_sequence_equals_stepping_with_the_state_fed_back():
    """The contract RLlib relies on: a T-step training forward from STATE_IN gives the same outputs as T
    one-step exploration forwards, each fed the previous STATE_OUT (what the env runner does)."""
    m = module().eval()
    B, T = 2, 6
    obs = torch.randn(B, T, 5)
    state = batched_state(m, B)
    with torch.no_grad():
        full = m.forward_train({Columns.OBS: obs, Columns.STATE_IN: state})
        logits = []
        for t in range(T):
            out = m.forward_exploration({Columns.OBS: obs[:, t:t + 1], Columns.STATE_IN: state})
            logits.append(out[Columns.ACTION_DIST_INPUTS])
            state = out[Columns.STATE_OUT]
    assert torch.allclose(torch.cat(logits, 1), full[Columns.ACTION_DIST_INPUTS], atol=1e-6)
    assert all(torch.allclose(state[k], full[Columns.STATE_OUT][k], atol=1e-6) for k in state)


def test_state_in_matters():
    """A recurrent policy: the same observation with another state gives other logits."""
    m = module().eval()
    obs = torch.randn(2, 1, 5)
    zero = batched_state(m, 2)
    other = {k: torch.randn_like(v) for k, v in zero.items()}
    with torch.no_grad():
        a = m.forward_inference({Columns.OBS: obs, Columns.STATE_IN: zero})[Columns.ACTION_DIST_INPUTS]
        b = m.forward_inference({Columns.OBS: obs, Columns.STATE_IN: other})[Columns.ACTION_DIST_INPUTS]
    assert not torch.allclose(a, b)


def test_selection_stats_count_exactly_top_k_active_units_per_step():
    m = module().eval()
    state = batched_state(m, 4)
    with torch.no_grad():
        for _ in range(10):
            state = m.forward_exploration({Columns.OBS: torch.randn(4, 1, 5), Columns.STATE_IN: state})[
                Columns.STATE_OUT]
    stats = m.selection_stats()
    assert sorted(stats) == [f"rims/active_frac/{k}" for k in range(4)]
    assert sum(stats.values()) == pytest.approx(2.0), "top_k = 2 of 4 units active at every step"
    assert m.selection_stats() == {}, "reset after reading"


def test_encoders_follow_rllibs_conv_stack_and_the_mlp_sizes():
    cnn = module(FRAME).core.encoder
    assert cnn(torch.zeros(1, 1, 84, 84)).shape == (1, 256), "84 -> 21 -> 11 -> 1x1x256"
    mlp = module(VECTOR, encoder_hiddens=[16, 8]).core
    assert mlp.rim.input_size == 8


def test_old_stack_adapter_computes_what_the_new_module_computes():
    new = module(FRAME).eval()
    old = RIMModelV2(FRAME, ACTIONS, ACTIONS.n, {"max_seq_len": 8, "custom_model_config": SMALL}, "rims").eval()
    old.core.load_state_dict(new.core.state_dict())
    B, T = 2, 3
    obs = torch.rand(B, T, 84, 84, 1)
    state = batched_state(new, B)
    with torch.no_grad():
        ref = new.forward_train({Columns.OBS: obs, Columns.STATE_IN: state})
        logits, st = old.forward_rnn(obs.reshape(B, T, -1), [s[:, 0] for s in state.values()], torch.tensor([T] * B))
    assert torch.allclose(logits, ref[Columns.ACTION_DIST_INPUTS], atol=1e-6)
    assert torch.allclose(st[0], ref[Columns.STATE_OUT]["h"][:, 0], atol=1e-6)
    assert torch.allclose(old.value_function(), new.compute_values({}, ref[Columns.EMBEDDINGS]).reshape(-1),
                          atol=1e-6)
    assert [s.shape for s in old.get_initial_state()] == [(32,), (32,)]


def test_the_spec_factory_validates_in_the_driver():
    spec = rims_module_spec({"num_units": 4, "top_k": 2, "hidden_size": 32})
    assert spec.module_class is RIMRLModule and spec.model_config["max_seq_len"] == 32
    with pytest.raises(ModelConfigError, match="did you mean 'top_k'"):
        rims_module_spec({"topk": 2})
    with pytest.raises(ModelConfigError, match="top_k <= num_units"):
        rims_module_spec({"num_units": 3, "top_k": 4, "hidden_size": 30})


def test_the_policy_checks_and_uses_the_triton_step_where_it_runs(triton_interpreter):
    """On the device of its first forward (here Triton's interpreter, standing in for CUDA: tests/conftest.py)
    the policy turns the Triton step on after its check, even when that forward is an acting one under no_grad,
    and acts as the torch step does; model_config triton=False keeps it off."""
    B, T = 2, 3
    obs = torch.randn(B, T, 5)
    outs = {}
    for flag in (True, False):
        m = module(triton=flag).eval()
        with torch.no_grad():
            outs[flag] = m.forward_exploration({Columns.OBS: obs, Columns.STATE_IN: batched_state(m, B)})
        assert [c.use_triton for c in m.core.rim.cells] == [flag]
        assert m.core.triton_status == ("on" if flag else "off: turned off by the setting")
    torch.testing.assert_close(outs[True][Columns.ACTION_DIST_INPUTS], outs[False][Columns.ACTION_DIST_INPUTS])
    for k in ("h", "c"):
        torch.testing.assert_close(outs[True][Columns.STATE_OUT][k], outs[False][Columns.STATE_OUT][k])


def test_on_a_cpu_the_policy_decides_nothing():
    m = module()
    with torch.no_grad():
        m.forward_exploration({Columns.OBS: torch.randn(1, 1, 5), Columns.STATE_IN: batched_state(m, 1)})
    assert m.core.triton_status is None and [c.use_triton for c in m.core.rim.cells] == [False]


def test_cuda_graph_serves_acting_and_learning_as_the_eager_policy_does(monkeypatch):
    """model_config cuda_graph, with CPU stand-ins for the captures (the one mocked part; a GPU captures real
    ones): 300 acting steps with the state fed back (exploration, which collects the unit selections) replay
    one inference graph, and a learner pass over zero-padded sequences (SEQ_LENS) one training graph; logits,
    states, selection statistics and every gradient are the eager policy's, and the state_dict keys stay."""
    monkeypatch.setattr(torch_core, "CPU_GRAPH_CAPTURES", (uncaptured, static_buffers))
    eager, graphed = module(), module(cuda_graph=True)
    B = 4
    se, sg = batched_state(eager, B), batched_state(graphed, B)
    with torch.no_grad():
        for _ in range(300):
            obs = torch.randn(B, 1, 5) * 3
            oe = eager.forward_exploration({Columns.OBS: obs, Columns.STATE_IN: se})
            og = graphed.forward_exploration({Columns.OBS: obs, Columns.STATE_IN: sg})
            torch.testing.assert_close(og[Columns.ACTION_DIST_INPUTS], oe[Columns.ACTION_DIST_INPUTS])
            se, sg = oe[Columns.STATE_OUT], og[Columns.STATE_OUT]
            for k in se:
                torch.testing.assert_close(sg[k], se[k])
    assert all(torch.isfinite(v).all() for v in sg.values())
    assert graphed.core.selection_stats() == eager.core.selection_stats() != {}
    assert graphed.core.graph_status == "graphs, 1 captured"
    state = {k: torch.randn(3, *v.shape[1:]) * 0.5 for k, v in se.items()}
    batch = {Columns.OBS: torch.randn(3, 8, 5), Columns.STATE_IN: state, Columns.SEQ_LENS: torch.tensor([8, 5, 2])}
    grads = []
    for m in (eager, graphed):
        out = m.forward_train(batch)
        loss = (out[Columns.ACTION_DIST_INPUTS].sin().sum() + m.compute_values(batch, out[Columns.EMBEDDINGS]).sum()
                + sum((v * v).sum() for v in out[Columns.STATE_OUT].values()))
        grads.append((out, torch.autograd.grad(loss, list(m.parameters()))))
    (oe, ge), (og, gg) = grads
    torch.testing.assert_close(og[Columns.ACTION_DIST_INPUTS], oe[Columns.ACTION_DIST_INPUTS])
    for k in oe[Columns.STATE_OUT]:
        torch.testing.assert_close(og[Columns.STATE_OUT][k], oe[Columns.STATE_OUT][k])
    for a, b in zip(gg, ge, strict=True):
        torch.testing.assert_close(a, b)
    assert graphed.core.graph_status == "graphs, 2 captured"
    assert list(graphed.state_dict()) == list(eager.state_dict())


def test_without_the_setting_or_a_gpu_the_policy_installs_no_graphs(monkeypatch):
    for cpu_captures, flag in ((None, True), ((uncaptured, static_buffers), False)):
        monkeypatch.setattr(torch_core, "CPU_GRAPH_CAPTURES", cpu_captures)
        m = module(cuda_graph=flag)
        with torch.no_grad():
            m.forward_exploration({Columns.OBS: torch.randn(2, 1, 5), Columns.STATE_IN: batched_state(m, 2)})
        assert m.core.graph_status is None and m.core.graphs is None and "forward" not in vars(m.core.rim)


def test_recompute_learns_with_the_eager_policys_gradients():
    """model_config recompute: the RIM's cells keep less for the learner's backward; a learner pass over padded
    sequences gives the logits and every gradient of the policy that keeps everything."""
    plain, low = module(), module(recompute=True)
    assert all(c.recompute for c in low.core.rim.cells) and not any(c.recompute for c in plain.core.rim.cells)
    state = {k: torch.randn(3, *v.shape) * 0.5 for k, v in plain.get_initial_state().items()}
    batch = {Columns.OBS: torch.randn(3, 8, 5), Columns.STATE_IN: state, Columns.SEQ_LENS: torch.tensor([8, 5, 2])}
    assert saved_bytes(lambda: low.forward_train(batch)) < saved_bytes(lambda: plain.forward_train(batch))
    grads = []
    for m in (plain, low):
        out = m.forward_train(batch)
        loss = out[Columns.ACTION_DIST_INPUTS].sin().sum() + m.compute_values(batch, out[Columns.EMBEDDINGS]).sum()
        grads.append((out[Columns.ACTION_DIST_INPUTS], torch.autograd.grad(loss, list(m.parameters()))))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for a, b in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(a, b)

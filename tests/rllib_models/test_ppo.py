"""Real PPO iterations on ALE Pong (ale-py's ROM, RLlib's env runner and learner, a local Ray): the RIM module on
the new stack, the ModelCatalog 'rims' model on the old stack, RLlib's LSTM baseline, and checkpoint / resume."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest
import ray
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_models.ppo import PPOSettings, build_ppo_config, fast_path_status, train_ppo
from sweeps.trial import load_checkpoint, save_checkpoint

from ..graph_captures import static_buffers, uncaptured

pytestmark = pytest.mark.integration

TINY = PPOSettings(env="ALE/Pong-v5", num_envs=2, rollout_length=32, num_epochs=1, eval_episodes=1, max_seq_len=16)
RIMS = {"kind": "rims", "hidden_size": 32, "num_units": 4, "top_k": 2}
OPTIM = {"lr": 2.5e-4, "batch_size": 32, "max_steps": 64, "grad_clip": 0.5, "eval_every": 64}


@pytest.fixture(scope="module")
def local_ray():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sampling and learning run in this process: one thread, as a trial gets (benchmarks.md)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_resources_triton_cuda_graph_and_recompute_reach_the_rim_policys_model_config():
    """The sweeps' resources.triton, resources.cuda_graph and resources.recompute decide what a RIM policy does;
    RLlib's LSTM has no such keys (its model_config would refuse them)."""
    for triton, graph, recompute in ((True, False, True), (False, True, False)):
        spec = build_ppo_config(TINY, RIMS, lr=2.5e-4, minibatch_size=32, grad_clip=0.5, total_steps=64, seed=0,
                                triton=triton, cuda_graph=graph, recompute=recompute).get_rl_module_spec()
        mc = spec.model_config
        assert (mc["triton"], mc["cuda_graph"], mc["recompute"]) == (triton, graph, recompute)
    lstm = build_ppo_config(TINY, {"kind": "lstm", "hidden_size": 32}, lr=2.5e-4, minibatch_size=32, grad_clip=0.5,
                            total_steps=64, seed=0, cuda_graph=True, recompute=True).get_rl_module_spec()
    assert not {"cuda_graph", "triton", "recompute"} & set(lstm.model_config)


@pytest.mark.slow
def test_one_iteration_with_cuda_graph_samples_and_learns_as_without(local_ray, monkeypatch):
    """model_config cuda_graph through a real PPO iteration (local env runner and learner, in this process), with
    CPU stand-ins for the captures (the one mocked part; rllib_models.torch_core.CPU_GRAPH_CAPTURES): the env
    runner's acting steps and the learner's padded sequences go through the graphs, and the iteration ends with
    the weights of the same iteration without them."""
    from rllib_models import torch_core

    monkeypatch.setattr(torch_core, "CPU_GRAPH_CAPTURES", (uncaptured, static_buffers))
    after, status, tags = {}, {}, {}
    for graph in (False, True):
        algo = build_ppo_config(TINY, {**RIMS, "input_attention": {"dropout": 0.0}, "comm": {"dropout": 0.0}},
                                lr=2.5e-4, minibatch_size=32, grad_clip=0.5, total_steps=64, seed=0,
                                cuda_graph=graph).build_algo()
        try:
            algo.train()
            after[graph] = weights(algo.get_module())
            learner = algo.learner_group._learner.module[DEFAULT_MODULE_ID]  # the local learner's own copy
            status[graph] = (algo.env_runner.module.core.graph_status, learner.core.graph_status)
            tags[graph] = fast_path_status(algo, old_stack=False)
        finally:
            algo.stop()
    assert status[False] == (None, None)
    actor, learner = status[True]
    assert actor == "graphs, 1 captured"  # 2 envs, one step each call: one inference graph (with the trace)
    assert learner.startswith("graphs, ") and learner != "graphs, 0 captured"
    # what a trial tags: both copies, as they differ; nothing without the setting (nor for Triton on a CPU)
    assert tags == {False: {}, True: {"cuda_graph": f"learner: {learner}; env runners: {actor}"}}
    for k, v in after[False].items():
        torch.testing.assert_close(after[True][k], v, msg=k)


def test_one_iteration_new_stack_rim_module(local_ray):
    from rllib_models.module import RIMRLModule

    algo = build_ppo_config(TINY, RIMS, lr=2.5e-4, minibatch_size=32, grad_clip=0.5, total_steps=64,
                            seed=0).build_algo()
    try:
        assert isinstance(algo.get_module(), RIMRLModule)
        before = weights(algo.get_module())
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] == 64
        learner = result["learners"]["default_policy"]
        assert math.isfinite(learner["policy_loss"]) and learner["entropy"] > 0
        assert changed(before, weights(algo.get_module())), "the learner updated the RIM policy"
        # the env runner samples with the updated weights
        runner = algo.env_runner.module.state_dict()
        assert all(torch.equal(runner[k], v) for k, v in algo.get_module().state_dict().items())
    finally:
        algo.stop()


def test_one_iteration_old_stack_catalog_model(local_ray):
    from rllib_models.catalog import RIMModelV2

    settings = TINY.model_copy(update={"api_stack": "old"})
    algo = build_ppo_config(settings, RIMS, lr=2.5e-4, minibatch_size=32, grad_clip=0.5, total_steps=64,
                            seed=0).build_algo()
    try:
        model = algo.get_policy().model
        assert isinstance(model, RIMModelV2)
        assert fast_path_status(algo, old_stack=True) == {}  # a CPU: no fast path, no tag
        before = weights(model)
        result = algo.train()
        assert result["num_env_steps_sampled_this_iter"] == 64
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        assert math.isfinite(stats["policy_loss"])
        assert changed(before, weights(model)), "the old-stack policy was updated"
    finally:
        algo.stop()


def test_lstm_baseline_matches_size_and_encoder(local_ray):
    algo = build_ppo_config(TINY, {"kind": "lstm", "hidden_size": 32}, lr=2.5e-4, minibatch_size=32,
                            grad_clip=0.5, total_steps=64, seed=0).build_algo()
    try:
        module = algo.get_module()
        lstms = [m for m in module.modules() if isinstance(m, torch.nn.LSTM)]
        assert len(lstms) == 1 and lstms[0].hidden_size == 32 and lstms[0].input_size == 256, \
            "one shared LSTM of hidden_size on the same 256-feature conv encoder as the RIM module"
        convs = [(c.out_channels, c.kernel_size, c.stride) for c in module.modules() if isinstance(c, torch.nn.Conv2d)]
        assert convs == [(16, (8, 8), (4, 4)), (32, (4, 4), (2, 2)), (256, (11, 11), (11, 11))]
        before = weights(module)
        algo.train()
        assert changed(before, weights(module))
    finally:
        algo.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["new", "old"])
def test_reports_checkpoints_and_resume_continue_the_same_training(local_ray, tmp_path, stack):
    """A trial killed after its first report resumes from that checkpoint: the step count, the position in the
    learning-rate schedule and the weights continue; nothing is reported twice."""
    settings = TINY.model_copy(update={"api_stack": stack})
    optim = {**OPTIM, "max_steps": 128}
    logged: list[tuple[int, dict]] = []
    kept = tmp_path / "kept"

    class Killed(Exception):
        pass

    def report_then_die(metrics, directory):
        shutil.copytree(directory, kept)
        raise Killed

    with pytest.raises(Killed):
        train_ppo(settings, RIMS, optim, 0, checkpoint_dir=None, log=lambda m, s: logged.append((s, m)),
                  report=report_then_die, save=save_checkpoint, load=load_checkpoint)
    assert [s for s, _ in logged] == [0, 64]
    first = logged[1][1]
    assert {"val/episode_return_mean", "val/episode_len_mean", "train/policy_loss", "sys/env_steps_per_s",
            "rims/active_frac/0"} <= set(first)
    assert -21 <= first["val/episode_return_mean"] <= 21 and first["val/episode_len_mean"] > 0
    assert sum(v for k, v in first.items() if k.startswith("rims/active_frac/")) == pytest.approx(2.0)
    assert load_checkpoint(kept)["step"] == 64 and (kept / "algo").is_dir()

    reports: list[dict] = []
    train_ppo(settings, RIMS, optim, 0, checkpoint_dir=Path(kept), log=lambda m, s: logged.append((s, m)),
              report=lambda m, d: reports.append(m), save=save_checkpoint, load=load_checkpoint)
    assert [s for s, _ in logged] == [0, 64, 128], "resumed at 64: no step 0 again, no repeat of 64"
    assert [r["step"] for r in reports] == [128] and reports[0]["train/iterations"] == 2
    # lr decays linearly from 2.5e-4 at step 0 to 0 at 128; a restarted schedule would report the first value again
    assert reports[0]["train/lr"] < first["train/lr"]


@pytest.mark.slow
def test_train_ppo_gives_the_fast_path_status_before_the_report_that_changed_it(local_ray, monkeypatch):
    """train_ppo's status(changes) (a trial's rims.cuda_graph / rims.triton tags) with model_config cuda_graph and
    CPU stand-ins for the captures (the one mocked part): the learner's and the env runner's graphs at the first
    report, before its log; afterwards only what changed. Without the setting, on a CPU: never called."""
    from rllib_models import torch_core

    monkeypatch.setattr(torch_core, "CPU_GRAPH_CAPTURES", (uncaptured, static_buffers))
    settings = TINY.model_copy(update={"eval_episodes": 0})
    for graph in (False, True):
        events: list[tuple[str, object]] = []
        train_ppo(settings, {**RIMS, "input_attention": {"dropout": 0.0}, "comm": {"dropout": 0.0}},
                  {**OPTIM, "max_steps": 128}, 0, checkpoint_dir=None, cuda_graph=graph,
                  log=lambda m, s, ev=events: ev.append(("log", s)), report=lambda m, d: None,
                  save=save_checkpoint, load=load_checkpoint, status=lambda c, ev=events: ev.append(("status", c)))
        given = [c for kind, c in events if kind == "status"]
        if not graph:
            assert given == []
            continue
        assert events[:2] == [("log", 0), ("status", given[0])], "the first report's status comes before its log"
        assert set(given[0]) == {"cuda_graph"}
        assert re.fullmatch(r"learner: graphs, [1-9]\d* captured; env runners: graphs, 1 captured",
                            given[0]["cuda_graph"])
        shown = dict(given[0])
        for c in given[1:]:  # a later call holds only changed values
            assert c and all(shown.get(k) != v for k, v in c.items())
            shown.update(c)


def test_stateless_cartpole_is_an_atari_task_env_and_typos_name_the_valid_ids():
    from rllib_models.envs import CARTPOLE_ENV

    settings = PPOSettings(env="StatelessCartPole", env_config={"max_episode_steps": 200})
    settings.check_env()
    assert settings.env_spec(train=True) == settings.env_spec(train=False) == (CARTPOLE_ENV,
                                                                               {"max_episode_steps": 200})
    with pytest.raises(ValueError, match=r"env: Expected an ALE game id like 'ALE/Pong-v5', got 'StatelessCartpole'; "
                                         r"did you mean 'StatelessCartPole'\?.*'StatelessCartPole', 'RepeatPrevious'"):
        PPOSettings(env="StatelessCartpole").check_env()
    with pytest.raises(ValueError, match=r"env_config: Expected keys among \['max_episode_steps'\] for "
                                         r"StatelessCartPole, got \['max_steps'\]"):
        PPOSettings(env="StatelessCartPole", env_config={"max_steps": 100}).check_env()
    with pytest.raises(ValueError, match="Expected max_episode_steps to be a positive int, got 0"):
        PPOSettings(env="StatelessCartPole", env_config={"max_episode_steps": 0}).check_env()


def test_stateless_cartpole_hides_velocities_and_truncates_at_the_limit():
    from rllib_models.envs import make_stateless_cartpole

    env = make_stateless_cartpole({"max_episode_steps": 50})
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (2,)
    prev, steps, total = obs, 0, 0.0
    while True:  # angle plus its change since the last step: a policy with one step of memory balances the pole
        action = int(obs[1] + 10 * (obs[1] - prev[1]) > 0)
        prev = obs
        obs, reward, terminated, truncated, _ = env.step(action)
        steps, total = steps + 1, total + reward
        if terminated or truncated:
            break
    assert (steps, total, terminated, truncated) == (50, 50.0, False, True)


def test_one_iteration_on_stateless_cartpole_rim_module(local_ray):
    settings = PPOSettings(env="StatelessCartPole", num_envs=2, rollout_length=32, num_epochs=1, eval_episodes=1,
                           max_seq_len=16)
    algo = build_ppo_config(settings, RIMS, lr=2.5e-4, minibatch_size=32, grad_clip=0.5, total_steps=64,
                            seed=0).build_algo()
    try:
        module = algo.get_module()
        assert not any(isinstance(m, torch.nn.Conv2d) for m in module.modules()), "vector observations: an MLP"
        assert module.core.encoder[0].in_features == 2, "cart position and pole angle only"
        before = weights(module)
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] >= 64
        assert result["env_runners"]["episode_return_mean"] >= 1
        assert changed(before, weights(module))
        assert algo.evaluate()["env_runners"]["episode_len_mean"] >= 1
    finally:
        algo.stop()

"""PPO with a RIM (or RLlib's built-in LSTM) policy: the config, and a training loop that reports like a sweep trial.

Defaults are CleanRL's Atari PPO (ppo_atari_lstm.py), the setting the paper's PPO agents build on: 8 envs x 128
steps per iteration, 4 minibatches, 4 epochs, lr 2.5e-4 decayed linearly to 0, clip 0.1, entropy 0.01, value
coefficient 0.5, GAE (gamma 0.99, lambda 0.95), global gradient norm clipped at 0.5, no KL penalty.

The sweep vocabulary carries over: ``model.*`` settings pick and size the recurrent core, ``optim.lr``,
``optim.batch_size`` (the PPO minibatch, in env steps), ``optim.max_steps`` (total env steps),
``optim.grad_clip`` and ``optim.eval_every`` (env steps between reports, rounded up to whole iterations).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rims_core.config import RIM_ONLY_KEYS
from rims_core.errors import NonFiniteLossError

from .config import DEFAULT_ATARI_FILTERS, parse_model_config

__all__ = ["CARTPOLE_ENV_ID", "MEMORY_ENV_ID", "PPOBase", "PPOSettings", "build_ppo_config", "check_settings",
           "fast_path_status", "model_spec", "ppo_metrics", "train_ppo"]

MEMORY_ENV_ID = "RepeatPrevious"  # rllib_models.envs.RepeatPrevious, the memory check's env
CARTPOLE_ENV_ID = "StatelessCartPole"  # RLlib's CartPole without velocities (rllib_models.envs), needs memory


class PPOBase(BaseModel):
    """PPO's settings, whatever the environment; a task's ``task.*`` model subclasses it and says which env
    RLlib's runners build (``env_spec``) and what can be refused before any worker starts (``check_env``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_envs: int = Field(8, ge=1, description="parallel envs per env runner (CleanRL: 8)")
    rollout_length: int = Field(128, ge=1, description="env steps per env per iteration (CleanRL: 128)")
    num_epochs: int = Field(4, ge=1, description="passes over each iteration's batch")
    clip_param: float = Field(0.1, gt=0, description="PPO ratio clip")
    entropy_coeff: float = Field(0.01, ge=0)
    vf_coeff: float = Field(0.5, ge=0, description="value loss coefficient")
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    anneal_lr: bool = Field(True, description="decay optim.lr linearly to 0 over optim.max_steps")
    max_seq_len: int = Field(32, ge=1, description="training sequence length (truncated BPTT)")
    eval_episodes: int = Field(3, ge=0, description="greedy evaluation episodes at each report (0: none)")
    num_env_runners: int = Field(0, ge=0, description="remote env runners (0: sample in the trial's process)")
    api_stack: Literal["new", "old"] = Field("new", description="RLlib API stack (old: ModelCatalog 'rims')")

    @property
    def batch_size(self) -> int:
        """Env steps per iteration (PPO's train batch)."""
        return self.num_envs * self.rollout_length

    def env_spec(self, train: bool) -> tuple[str, dict[str, Any]]:
        """(the env's registered name, its env_config) for training (train=True) or evaluation envs."""
        raise NotImplementedError

    def check_env(self) -> None:
        """Raise ValueError ("<field>: Expected ..., got ...") for an env this machine cannot build."""


class PPOSettings(PPOBase):
    """The PPO and environment settings of task ``atari``: an ALE game, or one of two small envs that need memory,
    RepeatPrevious and StatelessCartPole (the task keeps the name ``atari`` for them: same settings, same metrics)."""

    env: str = Field("ALE/Pong-v5", description="ALE game id, or 'StatelessCartPole' (CartPole without velocities) "
                                                "or 'RepeatPrevious' (the memory check); the task stays 'atari'")
    env_config: dict[str, Any] = Field(default_factory=dict, description="extra env settings (RepeatPrevious: "
                                       "num_tokens, delay, episode_len; StatelessCartPole: max_episode_steps, 500)")

    def env_spec(self, train: bool) -> tuple[str, dict[str, Any]]:
        from .envs import ATARI_ENV, CARTPOLE_ENV, MEMORY_ENV

        if self.env == MEMORY_ENV_ID:
            return MEMORY_ENV, dict(self.env_config)
        if self.env == CARTPOLE_ENV_ID:
            return CARTPOLE_ENV, dict(self.env_config)
        return ATARI_ENV, {"env": self.env, "train": train, **self.env_config}

    def check_env(self) -> None:
        from .envs import cartpole_config, check_env_id

        check_env_id(self.env, others=(CARTPOLE_ENV_ID, MEMORY_ENV_ID))
        if self.env == CARTPOLE_ENV_ID:
            cartpole_config(self.env_config)


def model_spec(model: dict[str, Any], max_seq_len: int) -> tuple[str, dict[str, Any]]:
    """("rims" | "lstm", model_config) from resolved ``model.*`` settings; raises ValueError on what PPO cannot
    build (GRU baseline, several layers, a RIM that cannot exist) before anything starts."""
    kind = model.get("kind", "rims")
    if kind not in ("rims", "lstm"):
        raise ValueError(f"model.kind: Expected 'rims' or 'lstm' for PPO (RLlib has no built-in GRU baseline), "
                         f"got {kind!r}")
    if model.get("num_layers", 1) != 1:
        raise ValueError(f"model.num_layers: Expected 1 for PPO policies, got {model.get('num_layers')!r}")
    rim = {k: model[k] for k in RIM_ONLY_KEYS if k in model} if kind == "rims" else {"num_units": 1, "top_k": 1}
    cfg = parse_model_config({"hidden_size": model.get("hidden_size", 600), "max_seq_len": max_seq_len, **rim})
    if kind == "rims":
        return kind, cfg.to_model_config()
    # RLlib's built-in LSTM at the same hidden size, on the same encoder, with linear heads as the RIM module
    return kind, {"use_lstm": True, "lstm_cell_size": cfg.rim.hidden_size, "max_seq_len": max_seq_len,
                  "conv_filters": [list(f) for f in DEFAULT_ATARI_FILTERS], "fcnet_hiddens": list(cfg.encoder_hiddens),
                  "fcnet_activation": "relu", "head_fcnet_hiddens": [], "vf_share_layers": True}


def check_settings(settings: PPOBase, model: dict[str, Any], minibatch_size: int) -> tuple[str, dict[str, Any]]:
    """Everything that can be refused without starting a worker: the env, the model, the batch sizes.
    Returns model_spec(model, settings.max_seq_len)."""
    settings.check_env()
    spec = model_spec(model, settings.max_seq_len)
    if settings.api_stack == "old" and model.get("kind", "rims") == "lstm":
        raise ValueError("task.api_stack: the LSTM baseline runs on the new stack; use api_stack 'new'")
    if minibatch_size > settings.batch_size:
        raise ValueError(f"optim.batch_size: Expected a PPO minibatch <= num_envs x rollout_length = "
                         f"{settings.batch_size}, got {minibatch_size}")
    return spec


def build_ppo_config(settings: PPOBase, model: dict[str, Any], *, lr: float, minibatch_size: int,
                     grad_clip: float, total_steps: int, seed: int, gpus: float = 0.0, triton: bool = True,
                     cuda_graph: bool = False, recompute: bool = False) -> Any:
    """A PPOConfig (new or old stack per settings.api_stack) for the RIM or LSTM policy of ``model``; triton,
    cuda_graph and recompute (the sweeps' resources.triton, resources.cuda_graph, resources.recompute) go into a
    RIM policy's model_config."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from .catalog import register_rims_model
    from .envs import register_envs
    from .module import rims_module_spec

    kind, mc = check_settings(settings, model, minibatch_size)
    if kind == "rims":
        mc = {**mc, "triton": triton, "cuda_graph": cuda_graph, "recompute": recompute}
    register_envs()
    env, env_config = settings.env_spec(train=True)
    _, eval_env_config = settings.env_spec(train=False)
    schedule = [[0, lr], [total_steps, 0.0]] if settings.anneal_lr else None
    config = (
        PPOConfig()
        .environment(env, env_config=env_config)
        .env_runners(num_env_runners=settings.num_env_runners, num_envs_per_env_runner=settings.num_envs,
                     rollout_fragment_length=settings.rollout_length)
        .training(train_batch_size=settings.batch_size, minibatch_size=minibatch_size,
                  num_epochs=settings.num_epochs, clip_param=settings.clip_param,
                  entropy_coeff=settings.entropy_coeff, vf_loss_coeff=settings.vf_coeff, gamma=settings.gamma,
                  lambda_=settings.gae_lambda, grad_clip=grad_clip, grad_clip_by="global_norm",
                  use_kl_loss=False, kl_coeff=0.0, vf_clip_param=float("inf"))
        .evaluation(evaluation_interval=10**9, evaluation_duration=max(1, settings.eval_episodes),
                    evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                    evaluation_config={"explore": False, "env_config": eval_env_config})
        .debugging(seed=seed)
        .reporting(metrics_num_episodes_for_smoothing=20)
    )
    if settings.api_stack == "old":
        register_rims_model()
        config = config.api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
        config = config.env_runners(preprocessor_pref=None)  # the env is preprocessed already (no wrap_deepmind)
        config = config.training(lr=lr, lr_schedule=schedule, train_batch_size=settings.batch_size,
                                 model={"custom_model": "rims", "max_seq_len": settings.max_seq_len,
                                        "custom_model_config": mc})
        config = config.resources(num_gpus=gpus)
    else:
        config = config.training(lr=schedule or lr, train_batch_size_per_learner=settings.batch_size)
        from .connectors import RealStepPPOTorchLearner  # advantages standardised over the real steps only

        config = config.training(learner_class=RealStepPPOTorchLearner)
        if kind == "rims":
            config = config.rl_module(rl_module_spec=rims_module_spec(mc))
        else:
            config = config.rl_module(model_config=DefaultModelConfig(**mc))
        config = config.learners(num_learners=0, num_gpus_per_learner=gpus)
    return config


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def ppo_metrics(result: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, float]:
    """Sweep-named metrics from one ``Algorithm.train()`` result (either stack) and an ``evaluate()`` result."""
    out: dict[str, float] = {}
    runners = result.get("env_runners", {})
    for name in ("episode_return_mean", "episode_len_mean"):
        v = runners.get(name)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[f"train/{name}"] = float(v)
    learner = _get(result, "learners", "default_policy") or _get(result, "info", "learner", "default_policy",
                                                                    "learner_stats") or {}
    for src, dst in (("policy_loss", "policy_loss"), ("vf_loss", "vf_loss"), ("entropy", "entropy"),
                     ("total_loss", "loss"), ("default_optimizer_learning_rate", "lr"), ("cur_lr", "lr"),
                     ("vf_explained_var", "vf_explained_var")):
        v = learner.get(src)
        if v is not None:
            out[f"train/{dst}"] = float(v)
    if evaluation:
        ev = evaluation.get("env_runners", evaluation)
        for name in ("episode_return_mean", "episode_len_mean"):
            v = ev.get(name)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[f"val/{name}"] = float(v)
    return out


def _selection_stats(algo: Any, old_stack: bool) -> dict[str, float]:
    """rims/active_frac/<k> over the sampling since the last call, averaged over env runners (RIM policies)."""
    if old_stack:
        model = algo.get_policy().model
        return model.selection_stats() if hasattr(model, "selection_stats") else {}
    stats = algo.env_runner_group.foreach_env_runner(
        lambda r: r.module.selection_stats() if hasattr(r.module, "selection_stats") else {},
        local_env_runner=algo.config.num_env_runners == 0)
    stats = [s for s in stats if s]
    return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]} if stats else {}


def _core_status(module: Any) -> tuple[str | None, str | None]:
    """(triton_status, graph_status) of a RIM policy's core (RIMPolicyCore), (None, None) for other models."""
    core = getattr(module, "core", None)
    return (getattr(core, "triton_status", None), getattr(core, "graph_status", None))


def fast_path_status(algo: Any, old_stack: bool) -> dict[str, str]:
    """How the RIM policy's CUDA fast paths fared in every copy of it: {"triton": ..., "cuda_graph": ...}.

    A value is the cores' status (rllib_models.torch_core: "on", "graphs, N captured", "off: why") where every
    learner and env runner has the same one, else "learner: ...; env runners: ..." with "none" for a copy
    without one (a CPU, the setting off, no forward yet), e.g. a GPU learner beside CPU env runners. A key is
    left out where no copy has a status (every CPU trial)."""
    if old_stack:
        parts = {"policy": [_core_status(algo.get_policy().model)]}
    else:
        from ray.rllib.core import DEFAULT_MODULE_ID

        learners = algo.learner_group.foreach_learner(lambda lr: _core_status(lr.module[DEFAULT_MODULE_ID]))
        parts = {"learner": [r.get() for r in learners.ignore_errors()],
                 "env runners": algo.env_runner_group.foreach_env_runner(
                     lambda r: _core_status(r.module), local_env_runner=algo.config.num_env_runners == 0)}
    out = {}
    for i, key in enumerate(("triton", "cuda_graph")):
        per = {name: [s[i] for s in got] for name, got in parts.items()}
        flat = [v for vs in per.values() for v in vs]
        if all(v is None for v in flat):
            continue
        if len(set(flat)) == 1:
            out[key] = flat[0]
        else:
            out[key] = "; ".join(f"{name}: {', '.join(sorted({v or 'none' for v in vs}))}"
                                 for name, vs in per.items())
    return out


def train_ppo(settings: PPOBase, model: dict[str, Any], optim: dict[str, Any], seed: int, *,
              checkpoint_dir: Path | None, log: Callable[[dict[str, float], int], None],
              report: Callable[[dict[str, float], Path | None], None], gpus: float = 0.0, triton: bool = True,
              cuda_graph: bool = False, recompute: bool = False,
              save: Callable[[Path, dict[str, Any]], None], load: Callable[[Path], dict[str, Any]],
              evaluate: Callable[[Any], dict[str, float]] | None = None,
              status: Callable[[dict[str, str]], None] | None = None) -> None:
    """Train until optim.max_steps env steps; every optim.eval_every env steps: an evaluation (``evaluate(algo)``
    -> ``val/`` and ``eval/`` metrics when given, else RLlib's greedy evaluation of settings.eval_episodes), metrics,
    a checkpoint (RLlib's under ``algo/`` plus save(dir, {"step", "iteration"})), log(metrics, step), then
    report(metrics, dir). Restarted from checkpoint_dir it continues the same training (weights, optimizer,
    lr schedule position, step count). status(changes): fast_path_status's entries that changed since the last
    report, given before log at each report (a trial keeps them as tags)."""
    import torch  # here, not at the top: the spec checks (check_settings, PPOSettings) must not import torch

    config = build_ppo_config(settings, model, lr=optim["lr"], minibatch_size=optim["batch_size"],
                              grad_clip=optim["grad_clip"], total_steps=optim["max_steps"], seed=seed, gpus=gpus,
                              triton=triton, cuda_graph=cuda_graph, recompute=recompute)
    algo = config.build_algo()
    old = settings.api_stack == "old"
    try:
        step = iteration = 0
        if checkpoint_dir is not None:
            path = str(Path(checkpoint_dir) / "algo")
            algo.restore(path) if old else algo.restore_from_path(path)
            meta = load(Path(checkpoint_dir))
            step, iteration = int(meta["step"]), int(meta["iteration"])
            if old:  # the old stack re-derives its scheduled lr only after the next update: set it for this one
                algo.get_policy().on_global_var_update({"timestep": step})
        if step == 0:
            params = (sum(p.numel() for p in algo.get_policy().model.parameters()) if old else
                      sum(p.numel() for p in algo.get_module().parameters()))
            log({"model/num_params": float(params)}, 0)
        every = max(1, math.ceil(optim["eval_every"] / settings.batch_size))
        shown: dict[str, str] = {}  # the fast-path statuses last given to status()
        t0, steps0 = time.perf_counter(), step
        while step < optim["max_steps"]:
            result = algo.train()
            iteration += 1
            step += int(_get(result, "env_runners", "num_env_steps_sampled")
                        or result.get("num_env_steps_sampled_this_iter") or settings.batch_size)
            if not (iteration % every == 0 or step >= optim["max_steps"]):
                continue
            elapsed = time.perf_counter() - t0
            if evaluate is not None:
                metrics = {**ppo_metrics(result, None), **evaluate(algo)}
            else:
                metrics = ppo_metrics(result, algo.evaluate() if settings.eval_episodes else None)
            loss = metrics.get("train/loss")
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLossError(f"non-finite PPO loss ({loss}) at env step {step}", step=step)
            metrics.update(_selection_stats(algo, old))
            if status is not None:
                now = fast_path_status(algo, old)
                if changed := {k: v for k, v in now.items() if shown.get(k) != v}:
                    status(changed)
                    shown.update(changed)
            metrics["sys/env_steps_per_s"] = (step - steps0) / elapsed
            metrics["step"] = float(step)
            metrics["train/iterations"] = float(iteration)
            with tempfile.TemporaryDirectory() as d:
                path = str(Path(d) / "algo")
                algo.save(path) if old else algo.save_to_path(path)
                save(Path(d), {"step": step, "iteration": iteration, "torch_rng": torch.get_rng_state()})
                log(metrics, step)
                report({**metrics, "failed": 0.0}, Path(d))
            t0, steps0 = time.perf_counter(), step
    finally:
        algo.stop()

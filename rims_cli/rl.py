"""``rims rl train``: one PPO training run as a one-trial sweep of task ``atari``.

``--env`` is an ALE game or one of the small envs that need memory, ``StatelessCartPole`` and ``RepeatPrevious``;
the task keeps the name ``atari`` for them (the same PPO settings, metric names and MLflow experiment).

The command line becomes a spec (the same keys a sweep YAML would use), validated before anything starts, and
runs through the local runner: the same MLflow layout (a parent run and one nested trial run, the same metric
and param names as RL sweeps), checkpoints under ``--out`` and resumption by running the same command again.
``--kind`` is the spec key model.kind, as in ``rims demo``; ``--model`` is its deprecated alias (README).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import runs_url

__all__ = ["FLAGS", "TRIAL", "add_rl_parser", "train_spec"]

# spec key -> command-line flag, for errors that name what the user typed
FLAGS = {"task.env": "--env", "model.kind": "--kind", "model.num_units": "--num-units", "model.top_k": "--top-k",
         "model.hidden_size": "--hidden-size", "model.cell": "--cell", "optim.max_steps": "--timesteps",
         "optim.lr": "--lr", "optim.batch_size": "--minibatch-size", "optim.eval_every": "--eval-every",
         "task.num_envs": "--num-envs", "task.rollout_length": "--rollout-length",
         "task.eval_episodes": "--eval-episodes", "task.max_seq_len": "--max-seq-len",
         "task.api_stack": "--api-stack", "task.num_env_runners": "--num-env-runners", "seeds": "--seed",
         "task.num_epochs": "--num-epochs", "task.clip_param": "--clip-param", "task.vf_coeff": "--vf-coeff",
         "task.entropy_coeff": "--entropy-coeff", "task.gae_lambda": "--gae-lambda", "optim.grad_clip": "--grad-clip",
         "task.anneal_lr": "--anneal-lr"}

TRIAL = "00000"  # the one trial of the one-trial sweep


def train_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec dict of one training run from the parsed ``rims rl train`` arguments."""
    game = args.env.split("/")[-1].split("-")[0].lower()
    model: dict[str, Any] = {"kind": args.kind, "hidden_size": args.hidden_size}
    if args.kind == "rims":
        model |= {"num_units": args.num_units, "top_k": args.top_k, "cell": args.cell}
    return {
        "name": args.name or f"{game}-{args.kind}-s{args.seed}",
        "experiment": args.experiment,
        "task": {"name": "atari", "env": args.env, "num_envs": args.num_envs, "rollout_length": args.rollout_length,
                 "eval_episodes": args.eval_episodes, "max_seq_len": args.max_seq_len, "api_stack": args.api_stack,
                 "num_env_runners": args.num_env_runners, "num_epochs": args.num_epochs, "clip_param": args.clip_param,
                 "vf_coeff": args.vf_coeff, "entropy_coeff": args.entropy_coeff, "gae_lambda": args.gae_lambda,
                 "anneal_lr": args.anneal_lr},
        "model": model,
        "optim": {"lr": args.lr, "batch_size": args.minibatch_size, "max_steps": args.timesteps,
                  "eval_every": args.eval_every, "grad_clip": args.grad_clip},
        "seeds": [args.seed],
    }


def _train(args: argparse.Namespace) -> int:
    from sweeps.spec import SpecError, load_spec

    raw = train_spec(args)
    try:
        spec = load_spec(raw, preflight=True)
    except SpecError as e:
        for path, msg in e.errors:
            flag = FLAGS.get(path)
            print(f"rims rl train: {flag} ({path}): {msg}" if flag else f"rims rl train: {path}: {msg}",
                  file=sys.stderr)
        return 2
    import yaml

    from sweeps.local import CHECKPOINT_DIR, run_local
    from sweeps.tracking import absolute_tracking_uri

    out = Path(args.out or Path("rl_results") / spec.name).resolve()
    uri = absolute_tracking_uri(args.mlflow_uri)
    res = run_local(spec, yaml.safe_dump(raw, sort_keys=False), out, jobs=1, device=args.device, mlflow_uri=uri,
                    smoke=args.smoke)
    outcome = next((k for k in ("completed", "stopped_early", "failed", "errored") if res.counts[k]), "nothing run")
    earlier = res.previously_done.get(TRIAL)
    if earlier is not None:
        step = earlier.get("last", {}).get("step")
        said = {"completed": "finished", "stopped_early": "stopped early"}.get(earlier["status"], earlier["status"])
        print(f"\n{spec.name}: already {said} at step "
              f"{int(step) if step is not None else '?'}; nothing trained (delete {out} or use a new --out to "
              "train again)")
    else:
        print(f"\n{spec.name}: {outcome}" + "".join(f"\n  failed: {f}" for f in res.failures))
    print(f"checkpoints: {out / 'trials' / TRIAL / CHECKPOINT_DIR}")
    print(_mlflow_lines(uri, res))
    return 0 if res.counts["completed"] + res.counts["stopped_early"] == 1 else 1


def _mlflow_lines(uri: str, res: Any) -> str:
    """Where the run is: experiment, parent and trial run ids, and the runs table (an http server) or the
    store's file and the `mlflow ui` command that serves it."""
    from mlflow.tracking import MlflowClient

    from sweeps.keys import TAG_SWEEP, TAG_TRIAL

    try:
        found = MlflowClient(uri).search_runs([res.experiment_id], max_results=1, filter_string=(
            f"tags.`{TAG_SWEEP}` = '{res.sweep_id}' and tags.`{TAG_TRIAL}` = '{TRIAL}'"))
    except Exception as e:  # the store went away after training: say where the run was meant to be
        return f"MLflow: experiment {res.experiment!r} at {uri} (could not read the run back: {str(e)[:200]})"
    run = found[0] if found else None
    lines = [f"MLflow: experiment {res.experiment!r} (id {res.experiment_id}), run "
             f"{run.info.run_id if run else '(none)'}" + (f" {run.info.run_name!r}" if run else "")
             + f" under parent run {res.parent_run_id}"]
    if uri.startswith("sqlite:"):
        lines.append(f"  store: {uri[len('sqlite:///'):]}")
    lines.append(f"  browse: {runs_url(uri, res.experiment_id, run.info.run_id if run else None)}")
    return "\n".join(lines)


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's dest and says once, on stderr, what to type."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"rims rl train: {option_string} is deprecated and will be removed in the next release; use "
              f"{self.replacement} (the spec key model.kind, as in `rims demo --kind`)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_rl_parser(sub: Any) -> None:
    """``rims rl train``: PPO with CleanRL's Atari defaults (see rllib_models.ppo)."""
    rl = sub.add_parser("rl", help="reinforcement learning: PPO on Atari with RIM or LSTM policies (RLlib)")
    t = rl.add_subparsers(dest="rl_command", required=True).add_parser(
        "train", help="PPO on an Atari game (or StatelessCartPole) with a RIM or LSTM policy, logged to MLflow")
    t.add_argument("--env", default="ALE/Pong-v5",
                   help="ALE game id, or StatelessCartPole (CartPole without velocities, 500-step episodes) or "
                        "RepeatPrevious (the memory check); the spec's task name stays 'atari' (task.env)")
    t.add_argument("--kind", choices=["rims", "lstm"], default="rims",
                   help="rims: rllib_models.RIMRLModule; lstm: RLlib's built-in LSTM at --hidden-size (model.kind)")
    t.add_argument("--model", dest="kind", choices=["rims", "lstm"], action=_DeprecatedAlias, replacement="--kind",
                   help="deprecated alias of --kind (removed in the next release)")
    t.add_argument("--num-units", type=int, default=6, help="k_T (model.num_units)")
    t.add_argument("--top-k", type=int, default=4, help="k_A, active units per step (model.top_k)")
    t.add_argument("--hidden-size", type=int, default=600, help="total hidden size, over units (model.hidden_size)")
    t.add_argument("--cell", choices=["lstm", "gru"], default="lstm", help="per-unit cell (model.cell)")
    t.add_argument("--seed", type=int, default=0, help="seed of the policy's weights and the envs (seeds)")
    t.add_argument("--timesteps", type=int, default=10_000_000, help="env steps to train (optim.max_steps)")
    t.add_argument("--lr", type=float, default=2.5e-4, help="Adam lr, decayed linearly to 0 (optim.lr)")
    t.add_argument("--minibatch-size", type=int, default=256, help="PPO minibatch in env steps (optim.batch_size)")
    t.add_argument("--eval-every", type=int, default=102_400,
                   help="env steps between reports, greedy evaluations and checkpoints (optim.eval_every)")
    t.add_argument("--eval-episodes", type=int, default=3, help="greedy games per evaluation (task.eval_episodes)")
    t.add_argument("--num-envs", type=int, default=8, help="envs per env runner (task.num_envs)")
    t.add_argument("--rollout-length", type=int, default=128,
                   help="steps per env per iteration (task.rollout_length)")
    t.add_argument("--max-seq-len", type=int, default=32, help="training sequence length (task.max_seq_len)")
    t.add_argument("--num-epochs", type=int, default=4, help="passes over each iteration's batch (task.num_epochs)")
    t.add_argument("--clip-param", type=float, default=0.1, help="PPO ratio clip (task.clip_param)")
    t.add_argument("--vf-coeff", type=float, default=0.5, help="value loss coefficient (task.vf_coeff)")
    t.add_argument("--entropy-coeff", type=float, default=0.01, help="entropy bonus (task.entropy_coeff)")
    t.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda (task.gae_lambda)")
    t.add_argument("--anneal-lr", action=argparse.BooleanOptionalAction, default=True,
                   help="decay --lr linearly to 0 over --timesteps (task.anneal_lr)")
    t.add_argument("--grad-clip", type=float, default=0.5, help="global gradient-norm clip (optim.grad_clip)")
    t.add_argument("--num-env-runners", type=int, default=0,
                   help="remote env runners (0: sample in-process) (task.num_env_runners)")
    t.add_argument("--api-stack", choices=["new", "old"], default="new",
                   help="RLlib API stack; old uses the ModelCatalog model 'rims' (task.api_stack)")
    t.add_argument("--device", default=None, help="learner device, e.g. cuda (default: cpu)")
    t.add_argument("--mlflow-uri", default=None, help="tracking store; default sqlite:///<cwd>/mlflow.db")
    t.add_argument("--experiment", default="atari", help="MLflow experiment (default: atari)")
    t.add_argument("--name", default=None, help="run name (default: <game>-<kind>-s<seed>)")
    t.add_argument("--out", default=None, help="checkpoints folder (default rl_results/<name>); run again to resume")
    t.add_argument("--smoke", action="store_true", help="one tiny PPO iteration (2 envs x 32 steps): a first check")
    t.set_defaults(func=_train)

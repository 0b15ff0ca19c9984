"""PPO speed: the RIM policy against RLlib's built-in LSTM of the same hidden size, same config, where the time goes.

Both run the same PPO settings (sampling in the training process, num_env_runners=0, the way a sweep trial runs).
Each measurement is a fresh process that starts a local Ray, builds one algorithm and times ``--iterations`` calls
of ``Algorithm.train()``. Every call is split into sampling (the env runner's ``sample()``: env steps and policy
forwards) and learning (``LearnerGroup.update()``: the PPO epochs), timed around those calls themselves: RLlib's
``result["timers"]`` are exponential moving averages (coefficient 0.01), which hold the first iteration's value for
hundreds of iterations. The process's one-off costs are timed too: imports, ``ray.init``, building the algorithm
(module, learner, envs). Reported: the first iteration and the median of the later ones ("steady").

Processes alternate RIM, LSTM, LSTM, RIM, ... for ``--rounds`` rounds (two algorithms in one process slowed
whichever ran second), for each torch thread setting of ``--threads`` (a comma list; ``default``: torch's own,
one per core), and the ratios RIM / LSTM of the steady iteration times and threads / 1-thread come last.

    python bench/ppo_speed.py                                  # Pong, CleanRL's settings, hidden 600
    python bench/ppo_speed.py --hidden-size 120
    python bench/ppo_speed.py --env StatelessCartPole --hidden-size 64 --num-units 4 --top-k 2 --num-envs 4 \\
        --rollout-length 500 --num-epochs 6 --minibatch-size 128 --max-seq-len 20 --threads 1,default \\
        --iterations 3 --rounds 1
    python bench/ppo_speed.py --omp-wait-policy ACTIVE         # OpenMP threads spin (dedicated cores)
    python bench/ppo_speed.py --device cuda                    # learner on the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

T_START = time.perf_counter()


def _timed(fn: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    """fn, appending the seconds of each call to spent."""
    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            spent.append(time.perf_counter() - t)
    return wrapper


def worker(args: argparse.Namespace) -> None:
    """One model in this process: prints a JSON line with the one-off costs and each iteration's time split."""
    import ray
    import torch

    from rllib_models.ppo import PPOSettings, build_ppo_config

    if args.worker_threads != "default":
        torch.set_num_threads(int(args.worker_threads))
    t_import = time.perf_counter() - T_START
    t = time.perf_counter()
    ray.init(num_cpus=max(2, os.cpu_count() or 2), num_gpus=1 if args.device == "cuda" else 0,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_ray = time.perf_counter() - t
    settings = PPOSettings(env=args.env, num_envs=args.num_envs, rollout_length=args.rollout_length,
                           num_epochs=args.num_epochs, max_seq_len=args.max_seq_len, eval_episodes=0)
    model = ({"kind": "rims", "hidden_size": args.hidden_size, "num_units": args.num_units, "top_k": args.top_k}
             if args.worker == "rims" else {"kind": "lstm", "hidden_size": args.hidden_size})
    t = time.perf_counter()
    algo = build_ppo_config(settings, model, lr=2.5e-4, minibatch_size=args.minibatch_size or settings.batch_size // 4,
                            grad_clip=0.5, total_steps=10**7, seed=0,
                            gpus=1.0 if args.device == "cuda" else 0.0).build_algo()
    t_build = time.perf_counter() - t
    params = sum(p.numel() for p in algo.get_module().parameters())
    sampling: list[float] = []
    learning: list[float] = []
    runner, learners = algo.env_runner_group.local_env_runner, algo.learner_group
    runner.sample = _timed(runner.sample, sampling)  # PPO.training_step calls these two on the instances
    learners.update = _timed(learners.update, learning)
    iterations = []
    for _ in range(args.iterations):
        sampling.clear()
        learning.clear()
        t = time.perf_counter()
        result = algo.train()
        wall = time.perf_counter() - t
        iterations.append({"wall": wall, "sampling": sum(sampling), "learning": sum(learning),
                           "steps": result["env_runners"]["num_env_steps_sampled"],
                           "episodes": result["env_runners"].get("num_episodes", 0)})
    algo.stop()
    print("RESULT " + json.dumps({"import": t_import, "ray_init": t_ray, "build": t_build, "params": params,
                                  "threads": torch.get_num_threads(), "iterations": iterations}), flush=True)


def _steady(res: dict[str, Any], key: str) -> float:
    later = res["iterations"][1:] or res["iterations"]
    return statistics.median(x[key] for x in later)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="ALE/Pong-v5", help="task.env: an ALE game or StatelessCartPole")
    ap.add_argument("--hidden-size", type=int, default=600)
    ap.add_argument("--num-units", type=int, default=6)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="processes per model and thread setting")
    ap.add_argument("--iterations", type=int, default=4, help="timed iterations per process (the first included)")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--rollout-length", type=int, default=128)
    ap.add_argument("--num-epochs", type=int, default=4)
    ap.add_argument("--minibatch-size", type=int, default=0, help="PPO minibatch in env steps (0: a quarter batch)")
    ap.add_argument("--max-seq-len", type=int, default=32)
    ap.add_argument("--threads", default="2", help="torch threads of the training process, a comma list of ints "
                                                   "or 'default' (torch's own: one per core)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the learner's device)")
    ap.add_argument("--omp-wait-policy", choices=["inherit", "ACTIVE", "PASSIVE"], default="inherit",
                    help="OMP_WAIT_POLICY of the measured processes (PASSIVE slowed the RIM policy by ~28%%, "
                         "the LSTM by ~20%% at hidden 600 on Pong; inherit: this shell's)")
    ap.add_argument("--worker", choices=["rims", "lstm"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", default="default", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    settings = [s.strip() for s in args.threads.split(",") if s.strip()]
    runs: dict[tuple[str, str], list[dict]] = {(th, k): [] for th in settings for k in ("rims", "lstm")}
    for r in range(args.rounds):
        for th in settings:
            for kind in (("rims", "lstm") if r % 2 == 0 else ("lstm", "rims")):
                done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", kind,
                                       "--worker-threads", th], capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(f"{kind} worker (threads {th}) failed:\n{done.stderr[-3000:]}")
                runs[th, kind].append(json.loads(next(ln for ln in done.stdout.splitlines()
                                                      if ln.startswith("RESULT "))[7:]))
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min), torch {torch.__version__}, device "
          f"{args.device}, OMP_WAIT_POLICY {env.get('OMP_WAIT_POLICY', 'unset')}, OMP_NUM_THREADS "
          f"{env.get('OMP_NUM_THREADS', 'unset')}")
    batch = args.num_envs * args.rollout_length
    print(f"config: {args.env}, {args.num_envs} envs x {args.rollout_length} steps = {batch}, {args.num_epochs} "
          f"epochs, minibatch {args.minibatch_size or batch // 4}, max_seq_len {args.max_seq_len}, hidden "
          f"{args.hidden_size}, RIM {args.num_units} units / {args.top_k} active; {args.rounds} processes x "
          f"{args.iterations} iterations per model and thread setting")
    print("threads model  params  import  ray.init  build | first: total sampling learning | steady (median): "
          "total sampling learning")
    steady: dict[tuple[str, str], float] = {}
    for (th, kind), rs in runs.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("import", "ray_init", "build")}
        first = {k: statistics.median(x["iterations"][0][k] for x in rs) for k in ("wall", "sampling", "learning")}
        st = {k: statistics.median(_steady(x, k) for x in rs) for k in ("wall", "sampling", "learning")}
        steady[th, kind] = st["wall"]
        print(f"{th:>7s} {kind:5s} {rs[0]['params']:7,d} {med['import']:6.1f}s {med['ray_init']:7.1f}s "
              f"{med['build']:5.1f}s | {first['wall']:7.2f}s {first['sampling']:7.2f}s {first['learning']:7.2f}s | "
              f"{st['wall']:7.2f}s {st['sampling']:7.2f}s {st['learning']:7.2f}s  (torch threads "
              f"{rs[0]['threads']}; episodes per iteration {[x['episodes'] for x in rs[0]['iterations']]})")
    for th in settings:
        ratio = steady[th, "rims"] / steady[th, "lstm"]
        print(f"RATIO rims/lstm steady seconds per iteration, threads {th}: {ratio:.2f}  (env steps/s rims/lstm "
              f"{1 / ratio:.2f}; Pong's target >= 0.8)")
    if "1" in settings:
        for th in (s for s in settings if s != "1"):
            for kind in ("rims", "lstm"):
                print(f"RATIO threads {th} / threads 1, {kind}: {steady[th, kind] / steady['1', kind]:.2f}")


if __name__ == "__main__":
    main()

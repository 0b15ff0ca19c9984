"""PPO throughput on ALE Pong: the RIM policy against RLlib's built-in LSTM of the same hidden size, same config.

Both run CleanRL's Atari PPO settings (8 envs x 128 steps per iteration, 4 epochs of 4 minibatches) on the same
84x84 frames and conv encoder, sampling in the training process (num_env_runners=0). Each measurement is a fresh
process that builds one algorithm, runs one warm-up iteration, then times ``--iterations`` calls of
``Algorithm.train()`` (sampling + learning). Processes alternate RIM, LSTM, LSTM, RIM, ... for ``--rounds`` rounds
(two algorithms in one process slowed whichever ran second: measured 0.74 there against 0.85 in separate
processes), and the medians give the ratio RIM / LSTM of env steps per second (target >= 0.8).

    python bench/ppo_speed.py                                  # CPU, hidden 600 (the paper's 6 x 100)
    python bench/ppo_speed.py --hidden-size 120
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


def worker(args: argparse.Namespace) -> None:
    """One model in this process: prints a JSON line with env steps/s and the time split of each iteration."""
    import ray
    import torch

    from rllib_models.ppo import PPOSettings, build_ppo_config

    torch.set_num_threads(args.threads)
    ray.init(num_cpus=max(2, os.cpu_count() or 2), num_gpus=1 if args.device == "cuda" else 0,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    settings = PPOSettings(env=args.env, num_envs=args.num_envs, rollout_length=args.rollout_length, eval_episodes=0)
    model = ({"kind": "rims", "hidden_size": args.hidden_size, "num_units": args.num_units, "top_k": args.top_k}
             if args.worker == "rims" else {"kind": "lstm", "hidden_size": args.hidden_size})
    algo = build_ppo_config(settings, model, lr=2.5e-4, minibatch_size=settings.batch_size // 4, grad_clip=0.5,
                            total_steps=10**7, seed=0, gpus=1.0 if args.device == "cuda" else 0.0).build_algo()
    params = sum(p.numel() for p in algo.get_module().parameters())
    algo.train()  # warm-up: env resets, allocator, first-call overheads
    rates, sampling, learning = [], [], []
    for _ in range(args.iterations):
        t = time.perf_counter()
        result = algo.train()
        rates.append(result["env_runners"]["num_env_steps_sampled"] / (time.perf_counter() - t))
        sampling.append(result["timers"]["env_runner_sampling_timer"])
        learning.append(result["timers"]["learner_update_timer"])
    algo.stop()
    print("RESULT " + json.dumps({"rate": statistics.median(rates), "sampling": statistics.median(sampling),
                                  "learning": statistics.median(learning), "params": params}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="ALE/Pong-v5")
    ap.add_argument("--hidden-size", type=int, default=600)
    ap.add_argument("--num-units", type=int, default=6)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="processes per model")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per process (after one warm-up)")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--rollout-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the learner's device)")
    ap.add_argument("--omp-wait-policy", choices=["inherit", "ACTIVE", "PASSIVE"], default="inherit",
                    help="OMP_WAIT_POLICY of the measured processes (PASSIVE slowed the RIM policy by ~28%%, "
                         "the LSTM by ~20%% at hidden 600; inherit: this shell's)")
    ap.add_argument("--worker", choices=["rims", "lstm"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    flags = sys.argv[1:]
    runs: dict[str, list[dict]] = {"rims": [], "lstm": []}
    for r in range(args.rounds):
        for kind in (("rims", "lstm") if r % 2 == 0 else ("lstm", "rims")):
            out = subprocess.run([sys.executable, __file__, *flags, "--worker", kind], capture_output=True, text=True,
                                 env=env, check=True).stdout
            runs[kind].append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:]))
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, device {args.device}, {args.threads} torch threads, OMP_WAIT_POLICY "
          f"{env.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"config: {args.env}, {args.num_envs} envs x {args.rollout_length} steps, 4 epochs x 4 minibatches, "
          f"hidden {args.hidden_size}, RIM {args.num_units} units / {args.top_k} active; {args.rounds} processes "
          f"x {args.iterations} iterations per model")
    med = {}
    for kind, rs in runs.items():
        med[kind] = statistics.median(x["rate"] for x in rs)
        print(f"  {kind:5s} {med[kind]:7.1f} env steps/s  (params {rs[0]['params']:,}; per iteration: sampling "
              f"{statistics.median(x['sampling'] for x in rs):.2f} s, learning "
              f"{statistics.median(x['learning'] for x in rs):.2f} s; per process {[round(x['rate']) for x in rs]})")
    print(f"RATIO rims/lstm env steps/s: {med['rims'] / med['lstm']:.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()

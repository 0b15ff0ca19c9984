"""A GPU sweep's throughput: copying_paper.yaml-sized trials packed 1, 4 and 8 to a GPU, RIMs against LSTMs.

Each packed trial is a process that trains the sweep's copying task (blank 50, batch 64, Adam, clipping) with
the trainable's own pieces (sweeps.tasks.build_task, the task's loss) for a fixed number of timed steps after a
warm-up, as a trial with ``resources.gpu`` 1, 0.25 or 0.125 would. Printed per (family, packing): the median
step time of the processes, their summed steps per second, and trials per GPU-hour at copying_paper.yaml's
40,000 steps per trial (evaluation time not counted), then the RIM / LSTM ratio of trials per GPU-hour.

    python bench/gpu_packing.py                        # on CUDA: RIMs 6/4 (hidden 600) and LSTM-600, 1/4/8
    python bench/gpu_packing.py --no-triton            # the RIMs with the torch step
    python bench/gpu_packing.py --device cpu --packs 1,2 --steps 3 --warmup 1   # a smoke run on a CPU

The RIM trials turn the Triton step on as a sweep trial does (rims_core.enable_triton; "on" or "off: why" is
printed); the LSTMs are cuDNN's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

SPEC = "sweeps/specs/copying_paper.yaml"
STEPS_PER_TRIAL = 40_000  # copying_paper.yaml's optim.max_steps


def _trial(kind: str, device: str, steps: int, warmup: int, triton: bool, seed: int, start: Any, out: Any) -> None:
    import torch

    from rims_core import enable_triton
    from sweeps.flat import resolve
    from sweeps.spec import base_config, load_spec
    from sweeps.tasks import build_task

    torch.set_num_threads(1)  # as a sweep trial (sweeps.trial.run_trial)
    flat = resolve({**base_config(load_spec(SPEC)), "seed": seed, "model.kind": kind, "model.hidden_size": 600})
    task = build_task(flat, torch.device(device))
    torch.manual_seed(seed)
    model = task.build_model()
    status = enable_triton(model, device, triton)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        model.train()
        loss, _ = task.loss(model, task.sample_batch(64, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start.wait()  # every packed trial times the same stretch
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out.put((statistics.median(times), sum(times), status))


def measure(kind: str, pack: int, args: argparse.Namespace) -> tuple[float, float, set[str | None]]:
    """(median step s over the packed trials, summed steps per second, Triton statuses) for ``pack`` trials."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(pack), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(kind, args.device, args.steps, args.warmup, args.triton, i, start, out))
             for i in range(pack)]
    for p in procs:
        p.start()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return (statistics.median(r[0] for r in res), sum(args.steps / r[1] for r in res), {r[2] for r in res})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--packs", default="1,4,8", help="trials per GPU, comma-separated")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per trial")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-triton", dest="triton", action="store_false", help="RIMs with the torch step")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
          + f"; copying_paper.yaml sizes (blank 50, batch 64, hidden 600, RIMs 6/4); {args.steps} timed steps")
    print(f"{'family':<8}{'packed':>7}{'step ms':>9}{'steps/s':>9}{'trials/GPU-h':>14}  triton")
    per_hour: dict[tuple[str, int], float] = {}
    for pack in (int(p) for p in args.packs.split(",")):
        for kind in ("rims", "lstm"):
            med, rate, status = measure(kind, pack, args)
            per_hour[kind, pack] = rate * 3600 / STEPS_PER_TRIAL
            print(f"{kind:<8}{pack:>7}{med * 1e3:>9.1f}{rate:>9.1f}{per_hour[kind, pack]:>14.2f}  "
                  f"{', '.join(sorted(str(s) for s in status))}")
        print(f"  RIM / LSTM trials per GPU-hour at {pack} packed: "
              f"{per_hour['rims', pack] / per_hour['lstm', pack]:.2f}")


if __name__ == "__main__":
    main()

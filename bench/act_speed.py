"""One acting step of a recurrent RL policy: RIM against nn.LSTM, measured in one process.

An actor calls its policy's core once per environment step: T = 1, eval mode, no grad, the state carried from
the previous call. Batch = the environments per actor (8..64). The paper's RIM (hidden 600, k_T=6, k_A=4,
communication on) on a 256-feature encoding (a typical Atari encoder output) against nn.LSTM(256, 600). Each
repeat times ``--calls`` consecutive steps per model, the models alternating; medians of the per-step time.

    python bench/act_speed.py                          # CPU, 1 thread
    python bench/act_speed.py --device cuda --triton --graphs   # GPU: also the Triton step and CUDA graphs

Ratios < 1 mean faster than nn.LSTM.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from rims_core import RIM, GraphedRIM

__all__ = ["main"]


def per_step(model: nn.Module, x: torch.Tensor, state, calls: int, device: str) -> float:
    """Seconds per call over ``calls`` consecutive acting steps, each feeding back the last state."""
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(calls):
            _, state = model(x, state)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="8,16,32,64")
    ap.add_argument("--calls", type=int, default=50, help="acting steps per timed repeat")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (an actor runs one)")
    ap.add_argument("--triton", action="store_true", help="also the RIM with its Triton step (CUDA)")
    ap.add_argument("--graphs", action="store_true",
                    help="also each RIM row through GraphedRIM: every step replays a forward-only CUDA graph (CUDA)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else f", {torch.get_num_threads()} threads")
          + f"; T=1, eval, no grad, input 256, hidden 600, k_T=6, k_A=4, {args.calls} calls x {args.repeats}")
    torch.manual_seed(0)
    models = {"nn.LSTM": nn.LSTM(256, 600), "RIM": RIM(256, 600, num_units=6, top_k=4)}
    if args.triton:
        models["RIM (Triton step)"] = RIM(256, 600, num_units=6, top_k=4)
        for c in models["RIM (Triton step)"].cells:
            c.use_triton = True
    for m in models.values():
        m.to(dev).eval()
    if args.graphs:  # the same RIMs (shared weights), each acting step one graph replay
        for k in [k for k in models if k.startswith("RIM")]:
            models[k.replace("RIM", "RIM graph", 1)] = GraphedRIM(models[k]).eval()
    print(f"\n{'batch':>5}  {'model':<26}{'us/step':>10}{'ratio':>8}")
    for B in (int(b) for b in args.batches.split(",")):
        x = torch.randn(1, B, 256, device=dev)
        states = {k: (torch.zeros(1, B, 600, device=dev),) * 2 for k in models}
        times = {k: [] for k in models}
        for k, m in models.items():  # warm-up
            per_step(m, x, states[k], 3, dev)
        for _ in range(args.repeats):
            for k, m in models.items():
                times[k].append(per_step(m, x, states[k], args.calls, dev))
        base = statistics.median(times["nn.LSTM"])
        for k in models:
            t = statistics.median(times[k])
            print(f"{B:>5}  {k:<26}{t * 1e6:>10.1f}{t / base:>8.2f}")
        for k, m in models.items():
            if isinstance(m, GraphedRIM):
                print(f"{'':>5}  {k}: {m.status}, {m.captures} captured")


if __name__ == "__main__":
    main()

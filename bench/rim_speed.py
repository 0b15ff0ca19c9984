"""Speed and activation memory of rims_core.RIM against nn.LSTM, measured in one process.

The paper's configuration: B=64, T=100, input 10, hidden 600, k_T=6, k_A=4, LSTM cells, input value
size 400, communication on (4 heads, key/value 32), dropout 0.1, training mode. Models alternate within
every repeat and the median of each is reported as a ratio to nn.LSTM of the same input size.

    python bench/rim_speed.py                      # CPU, float32
    python bench/rim_speed.py --device cuda --bf16 # GPU: bf16 autocast, against cuDNN nn.LSTM
    python bench/rim_speed.py --compile            # also the torch.compile'd step
    python bench/rim_speed.py --bf16 --plain       # also the plain path (a loop over step, autograd)
    python bench/rim_speed.py --device cuda --triton --cuda-graph  # also the Triton step, eager and graphed
    python bench/rim_speed.py --recompute          # also RIMCell.recompute (keep less, recompute in backward)

Ratios < 1 mean faster (or smaller) than nn.LSTM.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch
from torch import nn

from rims_core import RIM, AutocastSafeLSTM, cpu_autocast_lstm_supported, cuda_graphed, saved_bytes, set_recompute


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def saved_bytes_of(model: nn.Module, x: torch.Tensor, autocast) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one forward."""

    def forward():
        with autocast():
            model(x)

    return saved_bytes(forward)


def measure(models: dict[str, nn.Module], x: torch.Tensor, device: str, repeats: int, autocast) -> dict:
    fwd = {k: [] for k in models}
    fb = {k: [] for k in models}

    def forward(m):
        with torch.no_grad(), autocast():
            m(x)

    def forward_backward(m):
        for p in m.parameters() if isinstance(m, nn.Module) else ():
            p.grad = None
        with autocast():
            out = m(x)[0]
        out.float().sum().backward()

    for m in models.values():  # warm-up (and compilation)
        forward(m)
        forward_backward(m)
    for _ in range(repeats):
        for k, m in models.items():  # alternate the models within each repeat
            fwd[k].append(time_fn(lambda m=m: forward(m), device))
            fb[k].append(time_fn(lambda m=m: forward_backward(m), device))
    mem = {k: saved_bytes_of(m, x, autocast) for k, m in models.items()}
    return {k: (statistics.median(fwd[k]), statistics.median(fb[k]), mem[k]) for k in models}


def report(title: str, res: dict, base: str) -> None:
    b_fwd, b_fb, b_mem = res[base]
    print(f"\n{title}")
    print(f"{'model':<34}{'fwd ms':>9}{'ratio':>8}{'fwd+bwd ms':>12}{'ratio':>8}{'saved MB':>10}{'ratio':>8}")
    for k, (f, fb, mem) in res.items():
        print(f"{k:<34}{f * 1e3:>9.1f}{f / b_fwd:>8.2f}{fb * 1e3:>12.1f}{fb / b_fb:>8.2f}"
              f"{mem / 2**20:>10.1f}{mem / b_mem:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for both models")
    ap.add_argument("--compile", action="store_true", help="also time RIM with its step under torch.compile")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode for --compile, e.g. reduce-overhead")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="also time RIM captured whole (forward and backward) with torch.cuda.make_graphed_callables")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--input-sizes", default="10,600")
    ap.add_argument("--plain", action="store_true",
                    help="also time RIM on the plain path (use_fused False; what autocast took before 2026-12-03)")
    ap.add_argument("--recompute", action="store_true",
                    help="also time RIM with RIMCell.recompute (and the Triton step with it, with --triton)")
    ap.add_argument("--triton", action="store_true",
                    help="also time RIM with its forward step in Triton kernels (rims_core.triton_step; CUDA)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device

    def autocast():
        if args.bf16:
            return torch.autocast(dev, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, device {dev}"
          + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else f", {torch.get_num_threads()} threads")
          + (", bf16 autocast" if args.bf16 else ", float32")
          + f"; B={args.batch}, T={args.steps}, hidden 600, k_T=6, k_A=4, repeats {args.repeats}")
    if args.bf16 and dev == "cpu" and not cpu_autocast_lstm_supported(torch.bfloat16):
        print("note: this CPU has no bf16 LSTM kernel (nn.LSTM under autocast raises); the nn.LSTM row runs in fp32")
    for d_in in (int(s) for s in args.input_sizes.split(",")):
        torch.manual_seed(0)
        # AutocastSafeLSTM is nn.LSTM, except on a CPU without a bf16 LSTM kernel under --bf16 (then fp32, noted)
        models = {"nn.LSTM": AutocastSafeLSTM(d_in, 600).to(dev),
                  "RIM": RIM(d_in, 600, num_units=6, top_k=4).to(dev)}
        if args.compile:
            rc = RIM(d_in, 600, num_units=6, top_k=4).to(dev)
            rc.compile_step(mode=args.compile_mode)
            models[f"RIM (compiled{', ' + args.compile_mode if args.compile_mode else ''})"] = rc
        if args.plain:
            rp = RIM(d_in, 600, num_units=6, top_k=4).to(dev)
            for c in rp.cells:
                c.use_fused = False
            models["RIM (plain path)"] = rp
        if args.triton:
            rt = RIM(d_in, 600, num_units=6, top_k=4).to(dev)
            for c in rt.cells:
                c.use_triton = True
            models["RIM (Triton step)"] = rt
        if args.recompute:
            for name, triton in [("RIM (recompute)", False)] + ([("RIM (Triton step, recompute)", True)]
                                                               if args.triton else []):
                rr = RIM(d_in, 600, num_units=6, top_k=4).to(dev)
                set_recompute(rr)
                for c in rr.cells:
                    c.use_triton = triton
                models[name] = rr
        for m in models.values():
            m.train()
        x = torch.randn(args.steps, args.batch, d_in, device=dev)
        if args.cuda_graph:  # one graph for the whole sequence: removes the per-step launch overhead
            rg = RIM(d_in, 600, num_units=6, top_k=4).to(dev).train()
            models["RIM (CUDA graph)"] = cuda_graphed(rg, x)
            if args.triton:
                rtg = RIM(d_in, 600, num_units=6, top_k=4).to(dev).train()
                for c in rtg.cells:
                    c.use_triton = True
                models["RIM (Triton step, CUDA graph)"] = cuda_graphed(rtg, x)
        report(f"input {d_in}", measure(models, x, dev, args.repeats, autocast), "nn.LSTM")


if __name__ == "__main__":
    main()

"""The ``rims`` command. A thin shell over the libraries; subcommands import what they need lazily."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import torch

    from .demo import DemoConfig, train_copying

    torch.set_num_threads(args.threads)
    cfg = DemoConfig(kind=args.kind, steps=args.steps, blank=args.blank, hidden_size=args.hidden_size,
                     seed=args.seed)
    out = train_copying(cfg)
    first, last = out["ce"][: cfg.log_every], out["ce"][-cfg.log_every:]
    a, b = sum(first) / len(first), sum(last) / len(last)
    print(f"train ce fell from {a:.3f} to {b:.3f}" if b < a else f"train ce did not fall ({a:.3f} -> {b:.3f})")
    return 0 if b < a else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rims", description="Recurrent Independent Mechanisms at scale.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="short RIM training on the copying task; prints the loss falling")
    d.add_argument("--kind", choices=["rims", "lstm", "gru"], default="rims", help="model.kind")
    d.add_argument("--steps", type=int, default=600, help="training steps (batch 64)")
    d.add_argument("--blank", type=int, default=5, help="blank span of the training sequences")
    d.add_argument("--hidden-size", type=int, default=120, help="total hidden size (6 units)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

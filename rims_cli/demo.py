"""``rims demo``: a short training on the copying task that prints the loss falling; the first thing to run.

Not a training loop of its own: a built-in one-trial copying spec (:func:`demo_spec`) run by the local runner
(sweeps.local.run_local) offline, into a temporary folder, so it needs neither Ray nor an MLflow store. The
trial reports every ``LOG_EVERY`` steps; each report's ``train/ce`` is the mean over the steps since the last
one, read back from the trial's spill file. The command exits 0 iff the last report's train ce is below the
first's.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rims_core.config import MODEL_KINDS

from .common import fail

__all__ = ["LOG_EVERY", "DemoResult", "add_demo_parser", "demo_spec", "run_demo"]

LOG_EVERY = 50  # optim.eval_every: steps per report, and per mean of the train ce printed
CHANCE_CE = math.log(8)  # a uniform guess over the 8 symbols (sweeps.tasks.copying.CHANCE_CE; no torch here)


def demo_spec(kind: str = "rims", steps: int = 600, blank: int = 5, hidden_size: int = 120,
              seed: int = 0) -> dict[str, Any]:
    """The demo's spec: copying at a short blank span (learning shows within seconds), evaluated out of
    distribution at blanks 10 and 20; RIMs of 6 units with k_A = 4, Adam 5e-3, batch 64; one seed."""
    model: dict[str, Any] = {"kind": kind, "hidden_size": hidden_size}
    if kind == "rims":
        model |= {"num_units": 6, "top_k": 4}
    return {
        "name": f"demo-{kind}-s{seed}",
        "experiment": "demo",
        "task": {"name": "copying", "blank": blank, "test_blanks": [10, 20], "eval_size": 256},
        "model": model,
        "optim": {"lr": 5e-3, "batch_size": 64, "max_steps": steps, "eval_every": min(LOG_EVERY, max(1, steps)),
                  "grad_clip": 1.0},
        "seeds": [seed],
    }


@dataclass
class DemoResult:
    """What the demo's trial reported: ``reports`` maps each reported step to its metrics (``train/ce``,
    ``val/ce``, ``eval/ce_blank<N>``, ... as logged to MLflow); ``status`` is the trial's outcome."""

    status: str
    reports: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def train_ce(self) -> list[float]:
        """The train ce of each report, in step order (each a mean over LOG_EVERY steps)."""
        return [m["train/ce"] for _, m in sorted(self.reports.items()) if "train/ce" in m]


def run_demo(spec: dict[str, Any], out: str | Path | None = None) -> DemoResult:
    """Run the demo spec through the local runner, offline, in a temporary folder (or ``out``, kept).

    Raises sweeps.spec.SpecError for settings the spec refuses (e.g. ``--hidden-size`` not divisible by 6)."""
    import yaml

    from sweeps.local import run_local
    from sweeps.spec import load_spec
    from sweeps.tracking import read_ops

    loaded = load_spec(spec, preflight=True)
    with tempfile.TemporaryDirectory(prefix="rims-demo-") as tmp:
        where = Path(out or tmp)
        res = run_local(loaded, yaml.safe_dump(spec, sort_keys=False), where, jobs=1)
        status = next((k for k in ("completed", "stopped_early", "failed", "errored") if res.counts[k]), "none")
        reports: dict[int, dict[str, float]] = {}
        for path in sorted((where / "spill").glob("*.jsonl")):  # sweep.jsonl (the parent run) logs no metrics
            for op in read_ops(path):
                if op["op"] == "metrics":
                    reports.setdefault(int(op["step"]), {}).update(op["values"])
    return DemoResult(status, reports)


def _demo(args: argparse.Namespace) -> int:
    from sweeps.spec import SpecError

    if args.threads is not None:
        print("rims demo: --threads is deprecated and ignored (every trial trains on one torch thread); it will be "
              "removed in the next release", file=sys.stderr)
    spec = demo_spec(args.kind, args.steps, args.blank, args.hidden_size, args.seed)
    print(f"copying, blank {args.blank}: {args.kind} hidden {args.hidden_size}; chance ce = ln 8 = {CHANCE_CE:.3f}",
          flush=True)
    try:
        res = run_demo(spec)
    except SpecError as e:
        return fail(str(e))
    for step, m in sorted(res.reports.items()):
        if "train/ce" in m:
            print(f"step {step:5d}  train ce {m['train/ce']:.3f}  acc {m['train/acc']:.3f}  val ce {m['val/ce']:.3f}")
    last = res.reports[max(res.reports)] if res.reports else {}
    for blank in dict.fromkeys([args.blank, *spec["task"]["test_blanks"]]):
        if f"eval/ce_blank{blank}" in last:
            print(f"eval blank {blank:4d}: ce {last[f'eval/ce_blank{blank}']:.3f}  ce_all "
                  f"{last[f'eval/ce_all_blank{blank}']:.3f}  acc {last[f'eval/acc_blank{blank}']:.3f}")
    ce = res.train_ce
    if res.status != "completed" or len(ce) < 2:
        print(f"the demo's trial {res.status}; no train ce to compare", file=sys.stderr)
        return 1
    a, b = ce[0], ce[-1]
    print(f"train ce fell from {a:.3f} to {b:.3f}" if b < a else f"train ce did not fall ({a:.3f} -> {b:.3f})")
    return 0 if b < a else 1


def add_demo_parser(sub: Any) -> None:
    """``rims demo`` under the root parser's subcommands ``sub``."""
    d = sub.add_parser("demo", help="short RIM training on the copying task; prints the loss falling")
    d.add_argument("--kind", choices=list(MODEL_KINDS), default="rims", help="model.kind")
    d.add_argument("--steps", type=int, default=600, help="training steps (batch 64)")
    d.add_argument("--blank", type=int, default=5, help="blank span of the training sequences")
    d.add_argument("--hidden-size", type=int, default=120, help="total hidden size (6 units)")
    d.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default 0)")
    d.add_argument("--threads", type=int, default=None,
                   help="deprecated, ignored: every trial trains on one torch thread (removed in the next release)")
    d.set_defaults(func=_demo)

"""A short RIM training on the copying task: the first thing to run, and the learning check's engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .tasks.copying import CHANCE_CE, CopyingModel, copying_metrics, make_batch

__all__ = ["DemoConfig", "train_copying"]


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run (a small model whose loss falls within 30 s on one CPU thread: `rims demo`)."""

    kind: str = "rims"
    hidden_size: int = 120  # 6 units of 20
    num_units: int = 6
    top_k: int = 4
    blank: int = 5  # short blank span so that learning shows within seconds
    test_blanks: tuple[int, ...] = (10, 20)
    steps: int = 600
    batch_size: int = 64
    lr: float = 5e-3
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    rim_kwargs: dict = field(default_factory=dict)


def train_copying(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict[str, list[float] | dict]:
    """Train on copying; return {"ce": per-step train ce, "eval": {blank: (ce, acc)}}."""
    torch.manual_seed(cfg.seed)
    extra = {"num_units": cfg.num_units, "top_k": cfg.top_k, **cfg.rim_kwargs} if cfg.kind == "rims" else {}
    model = CopyingModel(cfg.kind, cfg.hidden_size, **extra)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[float] = []
    t0 = time.perf_counter()
    log(f"copying, blank {cfg.blank}: {cfg.kind} hidden {cfg.hidden_size}; chance ce = ln 8 = {CHANCE_CE:.3f}")
    for step in range(1, cfg.steps + 1):
        x, y = make_batch(cfg.batch_size, cfg.blank, gen)
        loss, m = copying_metrics(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        history.append(m.ce)
        if step % cfg.log_every == 0 or step == cfg.steps:
            recent = sum(history[-cfg.log_every:]) / len(history[-cfg.log_every:])
            log(f"step {step:5d}  train ce {recent:.3f}  acc {m.acc:.3f}  ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    results = {}
    eval_gen = torch.Generator().manual_seed(10_000)  # fixed evaluation data, whatever the seed
    with torch.no_grad():
        for blank in (cfg.blank, *cfg.test_blanks):
            x, y = make_batch(256, blank, eval_gen)
            _, m = copying_metrics(model(x), y)
            results[blank] = (m.ce, m.acc)
            log(f"eval blank {blank:4d}: ce {m.ce:.3f}  ce_all {m.ce_all:.3f}  acc {m.acc:.3f}")
    return {"ce": history, "eval": results}

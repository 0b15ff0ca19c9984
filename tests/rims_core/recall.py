"""A tiny copy task for the baselines' learning checks: n symbols, a delay, a marker, then recall them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CHANCE = math.log(8)  # cross-entropy of a uniform guess over the 8 symbols


def train_recall(core: nn.Module, hidden: int, steps: int, n: int = 2, blank: int = 3, seed: int = 0) -> list[float]:
    """Train core (batch_first, input 10) + a linear head on copy batches; the recall cross-entropy per step."""
    torch.manual_seed(seed)
    head = nn.Linear(hidden, 10)
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        symbols = torch.randint(1, 9, (32, n), generator=gen)
        x = torch.zeros(32, blank + 2 * n, dtype=torch.long)
        x[:, :n], x[:, n + blank - 1] = symbols, 9
        out, _ = core(F.one_hot(x, 10).float())
        loss = F.cross_entropy(head(out[:, -n:]).reshape(-1, 10), symbols.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

"""The copying task (Hochreiter & Schmidhuber; Arjovsky et al.), as in the RIMs paper.

A sequence of length blank + 20: ten symbols drawn from 1..8, blank - 1 blanks (0), a marker (9), then
ten more blanks during which the model must reproduce the ten symbols. Targets are 0 everywhere but
the last ten positions. Inputs are one-hot over the 10 tokens, so a blank is never the null (zero) input.

Shape legend: B batch, L = blank + 20 sequence length, V = 10 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rims_core import build_recurrent

__all__ = ["CHANCE_CE", "NUM_SYMBOLS", "VOCAB", "CopyingModel", "copying_metrics", "make_batch"]

NUM_SYMBOLS = 10  # symbols to remember
VOCAB = 10  # 0 blank, 1..8 symbols, 9 marker
MARKER = 9
CHANCE_CE = math.log(8)  # cross-entropy of a uniform guess over the 8 symbols, 2.079


def make_batch(batch_size: int, blank: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Tokens x and targets y, each (B, L) int64, L = blank + 20."""
    if blank < 1:
        raise ValueError(f"copying: Expected blank >= 1, got {blank}")
    L = blank + 2 * NUM_SYMBOLS
    symbols = torch.randint(1, 9, (batch_size, NUM_SYMBOLS), generator=generator)
    x = torch.zeros(batch_size, L, dtype=torch.int64)
    x[:, :NUM_SYMBOLS] = symbols
    x[:, NUM_SYMBOLS + blank - 1] = MARKER
    y = torch.zeros(batch_size, L, dtype=torch.int64)
    y[:, -NUM_SYMBOLS:] = symbols
    return x, y


class CopyingModel(nn.Module):
    """One-hot tokens -> recurrent core (RIM, LSTM or GRU by kind) -> logits over the 10 tokens."""

    def __init__(self, kind: str = "rims", hidden_size: int = 600, num_layers: int = 1, **rim_kwargs) -> None:
        super().__init__()
        self.rnn = build_recurrent(kind, VOCAB, hidden_size, num_layers, batch_first=True, **rim_kwargs)
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L) tokens -> logits (B, L, V)."""
        out, _ = self.rnn(F.one_hot(x, VOCAB).float())
        return self.head(out)


@dataclass(frozen=True)
class CopyingMetrics:
    ce: float  # mean cross-entropy over the 10 recall positions (chance: ln 8)
    ce_all: float  # mean over every position, as the official script computes it
    acc: float  # per-symbol accuracy over the recall positions


def copying_metrics(logits: Tensor, y: Tensor) -> tuple[Tensor, CopyingMetrics]:
    """logits (B, L, V), y (B, L) -> (the training loss = ce over recall positions, detached metrics)."""
    ce_pos = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, L)
    ce = ce_pos[:, -NUM_SYMBOLS:].mean()
    with torch.no_grad():
        acc = (logits[:, -NUM_SYMBOLS:].argmax(-1) == y[:, -NUM_SYMBOLS:]).float().mean()
        m = CopyingMetrics(ce=ce.item(), ce_all=ce_pos.mean().item(), acc=acc.item())
    return ce, m

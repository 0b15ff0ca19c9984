"""The copying task (Hochreiter & Schmidhuber; Arjovsky et al.), as in the RIMs paper.

A sequence of length blank + 2n: n symbols drawn from 1..8 (the paper: n = 10, ``task.num_symbols``),
blank - 1 blanks (0), a marker (9), then n more blanks during which the model must reproduce the n symbols.
Targets are 0 everywhere but the last n positions. Inputs are one-hot over the 10 tokens (``task.input:
onehot``), so a blank is never the null (zero) input, or a learned embedding of hidden_size (``embedding``, the
official script's ``Embedding(ntokens, emsize)`` with emsize = nhid), with dropout ``task.dropout`` on the input
and on the core's output, as the official script applies it (0.5 there).

Shape legend: B batch, L = blank + 2n sequence length, V = 10 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rims_core.config import RIM_ONLY_KEYS

from .base import EVAL_SEED, Task, make_core
from .declared import NUM_SYMBOLS, CopyingDeclaration, CopyingSettings

__all__ = [
    "CHANCE_CE",
    "NUM_SYMBOLS",
    "VOCAB",
    "CopyingModel",
    "CopyingSettings",
    "CopyingTask",
    "copying_metrics",
    "make_batch",
]

VOCAB = 10  # 0 blank, 1..8 symbols, 9 marker
MARKER = 9
CHANCE_CE = math.log(8)  # cross-entropy of a uniform guess over the 8 symbols, 2.079


def make_batch(batch_size: int, blank: int, generator: torch.Generator | None = None, *,
               num_symbols: int = NUM_SYMBOLS) -> tuple[Tensor, Tensor]:
    """Tokens x and targets y, each (B, L) int64, L = blank + 2 * num_symbols."""
    if blank < 1:
        raise ValueError(f"copying: Expected blank >= 1, got {blank}")
    if num_symbols < 1:
        raise ValueError(f"copying: Expected num_symbols >= 1, got {num_symbols}")
    n = num_symbols
    L = blank + 2 * n
    symbols = torch.randint(1, 9, (batch_size, n), generator=generator)
    x = torch.zeros(batch_size, L, dtype=torch.int64)
    x[:, :n] = symbols
    x[:, n + blank - 1] = MARKER
    y = torch.zeros(batch_size, L, dtype=torch.int64)
    y[:, -n:] = symbols
    return x, y


class CopyingModel(nn.Module):
    """Tokens -> input (one-hot, or an embedding of hidden_size) -> dropout -> recurrent core (any kind) ->
    dropout -> logits over the 10 tokens.

    input "embedding" is the official script's encoder: ``nn.Embedding`` initialised uniform in [-0.1, 0.1], of
    the core's hidden size. dropout (the official script's 0.5) applies to the core's input and to its output,
    in training only; 0 leaves both untouched.
    """

    def __init__(self, kind: str = "rims", hidden_size: int = 600, num_layers: int = 1, *,
                 input: Literal["onehot", "embedding"] = "onehot", dropout: float = 0.0, **rim_kwargs) -> None:
        super().__init__()
        if input not in ("onehot", "embedding"):
            raise ValueError(f"copying: Expected input 'onehot' or 'embedding', got {input!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"copying: Expected 0 <= dropout < 1, got {dropout}")
        self.input = input
        self.embed = nn.Embedding(VOCAB, hidden_size) if input == "embedding" else None
        if self.embed is not None:
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)  # the official script's init (word-LM style)
        self.drop = nn.Dropout(dropout)
        in_size = hidden_size if self.embed is not None else VOCAB
        self.rnn = make_core({"kind": kind, "hidden_size": hidden_size, "num_layers": num_layers, **rim_kwargs},
                             in_size)
        self.head = nn.Linear(hidden_size, VOCAB)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L) tokens -> logits (B, L, V)."""
        e = self.embed(x) if self.embed is not None else F.one_hot(x, VOCAB).float()
        out, _ = self.rnn(self.drop(e))
        return self.head(self.drop(out))


@dataclass(frozen=True)
class CopyingMetrics:
    ce: float  # mean cross-entropy over the recall positions (chance: ln 8)
    ce_all: float  # mean over every position, as the official script computes it
    acc: float  # per-symbol accuracy over the recall positions


def copying_metrics(logits: Tensor, y: Tensor, num_symbols: int = NUM_SYMBOLS) -> tuple[Tensor, CopyingMetrics]:
    """logits (B, L, V), y (B, L) -> (the training loss = ce over the last num_symbols (recall) positions,
    detached metrics)."""
    n = num_symbols
    ce_pos = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, L)
    ce = ce_pos[:, -n:].mean()
    with torch.no_grad():
        acc = (logits[:, -n:].argmax(-1) == y[:, -n:]).float().mean()
        m = CopyingMetrics(ce=ce.item(), ce_all=ce_pos.mean().item(), acc=acc.item())
    return ce, m


class CopyingTask(CopyingDeclaration, Task):
    """Copying: train at task.blank, evaluate at task.blank (val, and eval) and at every task.test_blanks."""

    def __init__(self, settings: CopyingSettings, model: dict, device: torch.device | str = "cpu") -> None:
        super().__init__(settings, model, device)
        gen = torch.Generator().manual_seed(EVAL_SEED)  # fixed by the task's settings, not the trial's seed
        n, k = settings.eval_size, settings.num_symbols
        self._val = make_batch(n, settings.blank, gen, num_symbols=k)
        self._eval = {b: make_batch(n, b, gen, num_symbols=k)
                      for b in dict.fromkeys([settings.blank, *settings.test_blanks])}

    def build_model(self) -> nn.Module:
        m = self.model_settings
        rim = {k: m[k] for k in RIM_ONLY_KEYS if k in m}  # make_core drops them for baselines
        return CopyingModel(m["kind"], m["hidden_size"], m.get("num_layers", 1), input=self.settings.input,
                            dropout=self.settings.dropout, **rim).to(self.device)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = make_batch(batch_size, self.settings.blank, generator, num_symbols=self.settings.num_symbols)
        return x.to(self.device), y.to(self.device)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        logits = model(x)
        ce, m = copying_metrics(logits, y, self.settings.num_symbols)
        loss = ce if self.settings.loss == "ce" else F.cross_entropy(logits.transpose(1, 2), y)
        return loss, {"ce": m.ce, "ce_all": m.ce_all, "acc": m.acc}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for prefix, cond, (x, y) in [("val", "", self._val)] + [
                ("eval", f"_blank{b}", xy) for b, xy in self._eval.items()]:
            _, m = copying_metrics(model(x.to(self.device)), y.to(self.device), self.settings.num_symbols)
            for name in ("ce", "ce_all", "acc"):
                out[f"{prefix}/{name}{cond}"] = getattr(m, name)
        return out

"""Sequential MNIST with a resolution shift, as in the RIMs paper (Goyal et al., ICLR 2021, Table 2).

One binary pixel per step, row-major; the class is read from the last step's output. Training is at
train_resolution (paper: 14x14, 196 steps); evaluation also at test_resolutions (paper: 16, 19, 24). An
image is rescaled from its native size (28x28 MNIST) to r x r by nearest neighbour, then binarised at half
the format's maximum intensity. For the 28x28 sources that is the official code's rule exactly
(anirudh9119/RIMs, event_based/train_mnist.py: ``F.upsample(x.round(), size=(r, r), mode='nearest')`` on
pixels / 255): source pixel floor(i * 28 / r), on where intensity >= 128 (> 127.5). Pixels are embedded
(nn.Embedding over {0, 1}) so that an off pixel is never the null (zero) input that the RIM's input attention
offers the units.

source="fashion" runs that protocol, loader included, on the real Fashion-MNIST IDX files (Debian's
dataset-fashion-mnist): 28x28, 0..255, 10 clothing classes. It is the Fashion-MNIST stand-in, not MNIST.

source="digits" is an offline stand-in that needs no download: scikit-learn's 8x8 digits (1797 images,
intensities 0..16), nearest neighbour at pixel centres (the rule its results in docs/results.md were measured
with). It is the sklearn 8x8 digits stand-in, not MNIST: its numbers are not the paper's.

Shape legend: N images, S native side (28 or 8), r resolution, B batch, L = r * r steps, E embedding size,
H hidden size, C = 10 classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import EVAL_SEED, Task, make_core
from .declared import SmnistDeclaration, SmnistSettings
from .mnist_files import (
    DIGITS_SPLIT_CAP,
    FASHION_STAND_IN,
    MNIST_FILES,
    MNIST_URLS,
    STAND_IN,
    MnistNotFoundError,
    load_digits_stand_in,
    load_idx,
    load_mnist,
    missing_mnist_message,
)

__all__ = [
    "EMBED_SIZE",
    "FASHION_STAND_IN",
    "MNIST_FILES",
    "MNIST_URLS",
    "NUM_CLASSES",
    "STAND_IN",
    "MnistNotFoundError",
    "SmnistModel",
    "SmnistSettings",
    "SmnistTask",
    "load_digits_stand_in",
    "load_idx",
    "load_mnist",
    "missing_mnist_message",
    "nearest_indices",
    "rescale_binarize",
]

NUM_CLASSES = 10
EMBED_SIZE = 16  # pixel embedding size E
EVAL_BATCH = 500  # evaluation batch: bounds the memory of a forward over up to 1000 x 576 steps


def nearest_indices(size: int, resolution: int, rule: str) -> np.ndarray:
    """(r,) int64 source index of each output pixel along a side of `size`. rule "paper": floor(i * S / r), as
    torch's F.interpolate(mode="nearest") computes it (float32 scale; the official RIMs code's rule); "centres":
    floor((i + 0.5) * S / r), pixel centres, as F.interpolate(mode="nearest-exact") and PIL."""
    i = np.arange(resolution, dtype=np.float32)
    if rule == "paper":
        src = np.floor(i * (np.float32(size) / np.float32(resolution)))
    elif rule == "centres":
        src = np.floor((i + np.float32(0.5)) * (np.float32(size) / np.float32(resolution)))
    else:
        raise ValueError(f"nearest_indices: Expected rule 'paper' or 'centres', got {rule!r}")
    return np.minimum(src.astype(np.int64), size - 1)


def rescale_binarize(images: np.ndarray, resolution: int, max_value: float, rule: str = "paper") -> np.ndarray:
    """images (N, S, S) -> (N, r, r) uint8 in {0, 1}: nearest neighbour (nearest_indices' rule), then on where
    intensity > max_value / 2 (for 0..255: >= 128, the official code's round(x / 255); binarising first or
    last picks the same pixels)."""
    idx = [nearest_indices(s, resolution, rule) for s in images.shape[1:]]
    return (images[:, idx[0]][:, :, idx[1]] > max_value / 2).astype(np.uint8)


class SmnistModel(nn.Module):
    """Pixels (B, L) -> embedding (B, L, E) -> recurrent core (RIM, LSTM or GRU) -> last step -> logits (B, C)."""

    def __init__(self, model: dict[str, Any], embed_size: int = EMBED_SIZE) -> None:
        super().__init__()
        self.embed = nn.Embedding(2, embed_size)  # an off pixel gets a learnt vector, never the null input
        self.rnn = make_core(model, input_size=embed_size)
        self.head = nn.Linear(model["hidden_size"], NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.embed(x))  # (B, L, H)
        return self.head(out[:, -1])


def _metrics(logits: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
    ce = F.cross_entropy(logits, y)
    with torch.no_grad():
        acc = (logits.argmax(-1) == y).float().mean()
    return ce, {"ce": ce.item(), "acc": acc.item()}


class SmnistTask(SmnistDeclaration, Task):
    """Sequential MNIST: train at task.train_resolution; val at it, eval at it and every task.test_resolutions."""

    sources = {"mnist": "MNIST (LeCun et al.), 28x28, intensities 0..255",
               "fashion": f"{FASHION_STAND_IN} (Zalando's Fashion-MNIST, 28x28, intensities 0..255, 10 clothing "
               "classes)",
               "digits": f"{STAND_IN} (8x8, 0..16)"}
    resize_rules = {"mnist": "paper", "fashion": "paper", "digits": "centres"}  # see the module docstring

    def __init__(self, settings: SmnistSettings, model: dict, device: torch.device | str = "cpu") -> None:
        super().__init__(settings, model, device)
        s = settings
        self.data_description = self.sources[s.source]
        # The split is a permutation by EVAL_SEED: it depends on the settings only, never on the trial's seed.
        rng = np.random.default_rng(EVAL_SEED)
        if s.source in ("mnist", "fashion"):  # the same files, loader and protocol
            data, max_value = load_mnist(s.data_dir, s.source), 255.0
            (tr_x, tr_y), (te_x, te_y) = data["train"], data["test"]
            if s.val_size >= len(tr_x) or s.eval_size > len(te_x):
                raise ValueError(f"smnist: Expected val_size < {len(tr_x)} training and eval_size <= {len(te_x)} "
                                 f"test images in {s.data_dir}, got val_size={s.val_size}, eval_size={s.eval_size}")
            perm, test = rng.permutation(len(tr_x)), rng.permutation(len(te_x))[:s.eval_size]
            val, train = perm[:s.val_size], perm[s.val_size:]
        else:
            tr_x, tr_y = te_x, te_y = load_digits_stand_in()
            max_value, perm = 16.0, rng.permutation(len(tr_x))
            n_eval, n_val = min(s.eval_size, DIGITS_SPLIT_CAP), min(s.val_size, DIGITS_SPLIT_CAP)
            test, val, train = perm[:n_eval], perm[n_eval:n_eval + n_val], perm[n_eval + n_val:]
        train = train[:s.train_size]
        self.split_indices = {"train": train, "val": val, "eval": test}  # into the train / test file (IDX)
        self.split_sizes = {k: len(v) for k, v in self.split_indices.items()}

        def seqs(images: np.ndarray, labels: np.ndarray, r: int) -> tuple[Tensor, Tensor]:
            x = rescale_binarize(images, r, max_value, self.resize_rules[s.source])
            x = x.reshape(len(images), r * r)  # (N, L) row-major
            return torch.from_numpy(x).to(self.device), torch.as_tensor(labels, dtype=torch.int64, device=self.device)

        # Each is (x (N, L) uint8 pixels, y (N,) int64 labels), on self.device; eval_data is keyed by resolution.
        r0 = s.train_resolution
        self.train_data = seqs(tr_x[train], tr_y[train], r0)  # uint8 cache: 60000 x 196 bytes for 28x28
        self.val_data = seqs(tr_x[val], tr_y[val], r0)
        self.eval_data = {r: seqs(te_x[test], te_y[test], r) for r in dict.fromkeys([r0, *s.test_resolutions])}

    def build_model(self) -> nn.Module:
        return SmnistModel(self.model_settings).to(self.device)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = self.train_data
        idx = torch.randint(0, len(x), (batch_size,), generator=generator).to(self.device)
        return x[idx].long(), y[idx]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        return _metrics(model(x), y)

    @torch.no_grad()
    def _score(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        ce_sum, correct = 0.0, 0
        for i in range(0, len(x), EVAL_BATCH):
            logits, yb = model(x[i:i + EVAL_BATCH].long()), y[i:i + EVAL_BATCH]
            ce_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(-1) == yb).sum())
        return {"ce": ce_sum / len(x), "acc": correct / len(x)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {f"val/{k}": v for k, v in self._score(model, *self.val_data).items()}
        for r, xy in self.eval_data.items():
            out.update({f"eval/{k}_res{r}": v for k, v in self._score(model, *xy).items()})
        return out

"""Sequential MNIST with a resolution shift, as in the RIMs paper (Goyal et al., ICLR 2021, Table 2).

One binary pixel per step, row-major; the class is read from the last step's output. Training is at
train_resolution (paper: 14x14, 196 steps); evaluation also at test_resolutions (paper: 16, 19, 24). An
image is rescaled from its native size (28x28 MNIST) to r x r by nearest neighbour, then binarised at half
the format's maximum intensity. Pixels are embedded (nn.Embedding over {0, 1}) so that an off pixel is
never the null (zero) input that the RIM's input attention offers the units.

source="digits" is an offline stand-in that needs no download: scikit-learn's 8x8 digits (1797 images,
intensities 0..16) under the same protocol. It is the sklearn 8x8 digits stand-in, not MNIST: its numbers
are not the paper's.

Shape legend: N images, S native side (28 or 8), r resolution, B batch, L = r * r steps, E embedding size,
H hidden size, C = 10 classes.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from .base import EVAL_SEED, Task, TaskSettings, make_core

__all__ = [
    "EMBED_SIZE",
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
    "rescale_binarize",
]

NUM_CLASSES = 10
EMBED_SIZE = 16  # pixel embedding size E
EVAL_BATCH = 500  # evaluation batch: bounds the memory of a forward over up to 1000 x 576 steps
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_URLS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
IDX_MAGIC = {3: 2051, 1: 2049}  # idx3 (images, ubyte, 3 dims), idx1 (labels, ubyte, 1 dim)
STAND_IN = "sklearn 8x8 digits stand-in, not MNIST"
DIGITS_SPLIT_CAP = 1797 // 5  # val and eval each take at most a fifth of the 1797 digits, so >= 1077 train


class MnistNotFoundError(FileNotFoundError):
    """MNIST IDX files are missing; the message names the directory, the files and where to get them."""


def load_idx(path: str | Path) -> np.ndarray:
    """An IDX file (plain or .gz) as a uint8 array: (N, rows, cols) for idx3 images, (N,) for idx1 labels.

    The magic number must match the name (idx3 -> 2051, idx1 -> 2049; either when the name says neither),
    and the file size must equal the header plus the declared dims.
    """
    path = Path(path)
    raw = path.read_bytes()  # a missing file raises FileNotFoundError naming it
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:  # a corrupt or truncated gzip stream
            raise ValueError(f"load_idx: {path}: Expected a gzip stream, got an unreadable one ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"load_idx: {path}: Expected at least a 4-byte header, got {len(raw)} bytes")
    (magic,) = struct.unpack(">I", raw[:4])
    want = [m for d, m in IDX_MAGIC.items() if f"idx{d}" in path.name] or list(IDX_MAGIC.values())
    if magic not in want:
        raise ValueError(f"load_idx: {path}: Expected magic number {' or '.join(map(str, want))}, got {magic}")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"load_idx: {path}: truncated header, Expected {head} bytes, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    size = head + int(np.prod(dims))
    if len(raw) != size:
        what = "truncated" if len(raw) < size else "trailing bytes"
        raise ValueError(f"load_idx: {path}: {what}, Expected {size} bytes for dims {dims}, got {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _find(data_dir: Path, name: str) -> Path | None:
    return next((p for p in (data_dir / name, data_dir / f"{name}.gz") if p.is_file()), None)


def missing_mnist_message(data_dir: str | Path) -> str | None:
    """Why data_dir cannot serve MNIST (which files are missing, where to get them), or None if it can."""
    data_dir = Path(data_dir)
    missing = [n for n in MNIST_FILES if _find(data_dir, n) is None]
    if not missing:
        return None
    return (f"MNIST: missing {missing} in {data_dir}{'' if data_dir.is_dir() else ' (no such directory)'}. "
            f"Expected the four IDX files {list(MNIST_FILES)}, each plain or .gz; download them from "
            f"{MNIST_URLS[0]} or the mirror {MNIST_URLS[1]} (torchvision's MNIST(root, download=True) puts them "
            "in root/MNIST/raw), or use task.source='digits' for the offline stand-in")


def load_mnist(data_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images (N, S, S), labels (N,)), "test": (...)} from the four standard IDX files."""
    data_dir = Path(data_dir)
    paths = {name: _find(data_dir, name) for name in MNIST_FILES}
    message = missing_mnist_message(data_dir)
    if message:
        raise MnistNotFoundError(message)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = paths[f"{prefix}-images-idx3-ubyte"], paths[f"{prefix}-labels-idx1-ubyte"]
        images, labels = load_idx(ip), load_idx(lp)
        if len(images) != len(labels):
            raise ValueError(f"MNIST: Expected as many labels in {lp} as images in {ip} ({len(images)}), "
                             f"got {len(labels)}")
        out[split] = images, labels
    return out


def load_digits_stand_in() -> tuple[np.ndarray, np.ndarray]:
    """The sklearn 8x8 digits stand-in, not MNIST: images (1797, 8, 8) in 0..16, labels (1797,)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


def rescale_binarize(images: np.ndarray, resolution: int, max_value: float) -> np.ndarray:
    """images (N, S, S) -> (N, r, r) uint8 in {0, 1}: nearest neighbour (pixel centres, like PIL and
    F.interpolate's "nearest-exact"), then on where intensity > max_value / 2."""
    idx = [np.minimum(((np.arange(resolution) + 0.5) * s / resolution).astype(np.int64), s - 1)
           for s in images.shape[1:]]
    return (images[:, idx[0]][:, :, idx[1]] > max_value / 2).astype(np.uint8)


class SmnistSettings(TaskSettings):
    """``task.*`` keys of sequential MNIST with a resolution shift."""

    source: Literal["mnist", "digits"] = Field(
        "digits", description=f"'mnist': the IDX files in data_dir; 'digits': the {STAND_IN} (offline)")
    data_dir: str | None = Field(None, description="directory with the four standard MNIST IDX files (plain or "
                                 ".gz); required for source='mnist'")
    train_resolution: int = Field(14, ge=2, description="side of the training images (paper: 14, 196 steps)")
    test_resolutions: list[int] = Field([16, 19, 24], description="sides evaluated out of distribution "
                                        "(paper: 16, 19, 24)")
    val_size: int = Field(1000, ge=1, description="held-out training images in the val set (from the training "
                          f"split; with source='digits' at most {DIGITS_SPLIT_CAP})")
    eval_size: int = Field(1000, ge=1, description="test images evaluated at every resolution (with "
                           f"source='digits' at most {DIGITS_SPLIT_CAP})")
    train_size: int | None = Field(None, ge=1, description="cap on the training images; None: all that remain")

    @field_validator("test_resolutions")
    @classmethod
    def _resolutions(cls, v: list[int]) -> list[int]:
        if not v or any(r < 2 for r in v):
            raise ValueError(f"expected a non-empty list of resolutions >= 2, got {v}")
        return v

    @model_validator(mode="after")
    def _source(self) -> SmnistSettings:
        if self.source == "mnist" and self.data_dir is None:
            raise ValueError(f"source='mnist' needs data_dir: a directory with {list(MNIST_FILES)} "
                             f"(from {MNIST_URLS[0]}), or use source='digits' for the offline stand-in")
        if self.source == "digits" and self.data_dir is not None:
            raise ValueError(f"data_dir applies to source='mnist' only, got data_dir={self.data_dir!r} with "
                             "source='digits'; drop it or set source='mnist'")
        return self


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


class SmnistTask(Task):
    """Sequential MNIST: train at task.train_resolution; val at it, eval at it and every task.test_resolutions."""

    name = "smnist"
    settings_model = SmnistSettings
    objective = ("val/acc", "max")
    metric_docs = {
        "ce": "cross-entropy of the 10-way classification from the last step (chance: ln 10 = 2.303); with "
              f"task.source='digits' on the {STAND_IN}",
        "acc": f"classification accuracy from the last step (chance: 0.1); with task.source='digits' on the {STAND_IN}",
    }
    sources = {"mnist": "MNIST (LeCun et al.), 28x28, intensities 0..255", "digits": f"{STAND_IN} (8x8, 0..16)"}

    def __init__(self, settings: SmnistSettings, model: dict, device: torch.device | str = "cpu") -> None:
        super().__init__(settings, model, device)
        s = settings
        self.data_description = self.sources[s.source]
        # The split is a permutation by EVAL_SEED: it depends on the settings only, never on the trial's seed.
        rng = np.random.default_rng(EVAL_SEED)
        if s.source == "mnist":
            data, max_value = load_mnist(s.data_dir), 255.0
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
        self.split_indices = {"train": train, "val": val, "eval": test}  # into the train / test file (mnist)
        self.split_sizes = {k: len(v) for k, v in self.split_indices.items()}

        def seqs(images: np.ndarray, labels: np.ndarray, r: int) -> tuple[Tensor, Tensor]:
            x = rescale_binarize(images, r, max_value).reshape(len(images), r * r)  # (N, L) row-major
            return torch.from_numpy(x).to(self.device), torch.as_tensor(labels, dtype=torch.int64, device=self.device)

        # Each is (x (N, L) uint8 pixels, y (N,) int64 labels), on self.device; eval_data is keyed by resolution.
        r0 = s.train_resolution
        self.train_data = seqs(tr_x[train], tr_y[train], r0)  # uint8 cache: 60000 x 196 bytes for MNIST
        self.val_data = seqs(tr_x[val], tr_y[val], r0)
        self.eval_data = {r: seqs(te_x[test], te_y[test], r) for r in dict.fromkeys([r0, *s.test_resolutions])}

    @classmethod
    def preflight(cls, settings: SmnistSettings) -> list[tuple[str, str]]:
        """The MNIST files must be where task.data_dir says, whole and well-formed (checked where the sweep runs,
        before any run)."""
        if settings.source != "mnist":
            return []
        message = missing_mnist_message(settings.data_dir)
        if message:
            return [("task.data_dir", message)]
        try:  # a truncated or wrong file is refused here too, not in every trial
            load_mnist(settings.data_dir)
        except (ValueError, OSError, EOFError) as e:
            return [("task.data_dir", f"{e}; replace the file with a fresh copy from {MNIST_URLS[0]}")]
        return []

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

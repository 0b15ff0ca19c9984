"""The MNIST files (the four standard IDX files, plain or .gz), the Fashion-MNIST stand-in (the same four files,
from Debian's dataset-fashion-mnist package) and the offline digits stand-in, read with numpy.

Fashion-MNIST (Zalando's clothing images) has MNIST's format exactly: 60,000 + 10,000 images of 28x28 in 0..255,
10 classes, the same file names; so it runs MNIST's loader and protocol on real files where MNIST cannot be
downloaded. Its numbers are Fashion-MNIST's, not MNIST's (FASHION_STAND_IN labels them).

No torch here: the smnist declaration's preflight reads the files where a sweep runs before anything starts.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..keys import DIGITS_STAND_IN, FASHION_STAND_IN

__all__ = [
    "DIGITS_SPLIT_CAP",
    "FASHION_DIR",
    "FASHION_PACKAGE",
    "FASHION_STAND_IN",
    "MNIST_FILES",
    "MNIST_URLS",
    "STAND_IN",
    "MnistNotFoundError",
    "load_digits_stand_in",
    "load_idx",
    "load_mnist",
    "missing_mnist_message",
]

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_URLS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
IDX_MAGIC = {3: 2051, 1: 2049}  # idx3 (images, ubyte, 3 dims), idx1 (labels, ubyte, 1 dim)
STAND_IN = DIGITS_STAND_IN  # "sklearn 8x8 digits stand-in, not MNIST"
FASHION_PACKAGE = "dataset-fashion-mnist"  # Debian (bookworm and later): the four IDX files, gzipped
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # where that package puts them (dpkg -L dataset-fashion-mnist)
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


_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


def missing_mnist_message(data_dir: str | Path, dataset: str = "mnist") -> str | None:
    """Why data_dir cannot serve MNIST or, with dataset="fashion", Fashion-MNIST (which files are missing, where to
    get them), or None if it can."""
    if dataset not in _NAMES:
        raise ValueError(f"missing_mnist_message: Expected dataset in {sorted(_NAMES)}, got {dataset!r}")
    data_dir = Path(data_dir)
    missing = [n for n in MNIST_FILES if _find(data_dir, n) is None]
    if not missing:
        return None
    head = (f"{_NAMES[dataset]}: missing {missing} in {data_dir}{'' if data_dir.is_dir() else ' (no such directory)'}"
            f". Expected the four IDX files {list(MNIST_FILES)}, each plain or .gz; ")
    if dataset == "fashion":
        return head + (f"install them with `apt-get install {FASHION_PACKAGE}` (as root, on Debian; they go "
                       f"to {FASHION_DIR}, where task.data_dir points by default), or point task.data_dir at a "
                       "directory that holds them (https://github.com/zalandoresearch/fashion-mnist)")
    return head + (f"download them from {MNIST_URLS[0]} or the mirror {MNIST_URLS[1]} (torchvision's "
                   "MNIST(root, download=True) puts them in root/MNIST/raw), or use task.source='fashion' (the "
                   f"{FASHION_STAND_IN}, `apt-get install {FASHION_PACKAGE}`) or 'digits' (the {DIGITS_STAND_IN}, "
                   "offline)")


def load_mnist(data_dir: str | Path, dataset: str = "mnist") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images (N, S, S), labels (N,)), "test": (...)} from the four standard IDX files: MNIST's or,
    with dataset="fashion", Fashion-MNIST's (same names and format; only the error messages differ)."""
    data_dir = Path(data_dir)
    paths = {name: _find(data_dir, name) for name in MNIST_FILES}
    message = missing_mnist_message(data_dir, dataset)
    if message:
        raise MnistNotFoundError(message)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ip, lp = paths[f"{prefix}-images-idx3-ubyte"], paths[f"{prefix}-labels-idx1-ubyte"]
        images, labels = load_idx(ip), load_idx(lp)
        if len(images) != len(labels):
            raise ValueError(f"{_NAMES[dataset]}: Expected as many labels in {lp} as images in {ip} ({len(images)}), "
                             f"got {len(labels)}")
        out[split] = images, labels
    return out


def load_digits_stand_in() -> tuple[np.ndarray, np.ndarray]:
    """The sklearn 8x8 digits stand-in, not MNIST: images (1797, 8, 8) in 0..16, labels (1797,)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)

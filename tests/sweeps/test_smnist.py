"""Sequential MNIST with a resolution shift: the IDX loader (on synthetic files and on the real Fashion-MNIST files),
the paper's resize protocol, the Fashion-MNIST and digits stand-ins and their labels, settings, metrics, learning."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from sweeps.tasks.declared import SmnistDeclaration
from sweeps.tasks.mnist_files import FASHION_DIR, FASHION_PACKAGE
from sweeps.tasks.smnist import (
    FASHION_STAND_IN,
    MNIST_FILES,
    STAND_IN,
    MnistNotFoundError,
    SmnistSettings,
    SmnistTask,
    load_idx,
    load_mnist,
    rescale_binarize,
)

RIM = {"kind": "rims", "hidden_size": 24, "num_units": 3, "top_k": 2, "num_layers": 1}
LSTM = {"kind": "lstm", "hidden_size": 24, "num_layers": 1}


def write_idx(path, arr: np.ndarray, magic: int | None = None) -> None:
    """A standard IDX file: >I magic (2051 for 3 dims, 2049 for 1), >I per dim, then the uint8 data."""
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    raw = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)


def fake_mnist(root, n_train: int = 60, n_test: int = 40, gz: bool = False, n_train_labels: int | None = None):
    """Tiny synthetic MNIST: 28x28 images whose bright square's position encodes the label."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8, 4:20] = 255
        ext = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
        nl = n_train_labels if prefix == "train" and n_train_labels is not None else n
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels[:nl])
    return root


def digits_task(model=RIM, **kw) -> SmnistTask:
    s = {"train_resolution": 6, "test_resolutions": [7, 9], "val_size": 50, "eval_size": 50, **kw}
    return SmnistTask(SmnistSettings(**s), model)


# ---------------------------------------------------------------- IDX loader
@pytest.mark.parametrize("ext", ["", ".gz"])
def test_load_idx_reads_plain_and_gzipped_files(tmp_path, ext):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", images)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels)
    got_i = load_idx(tmp_path / f"train-images-idx3-ubyte{ext}")
    got_l = load_idx(tmp_path / f"train-labels-idx1-ubyte{ext}")
    assert got_i.shape == (5, 28, 28) and got_i.dtype == np.uint8 and np.array_equal(got_i, images)
    assert got_l.shape == (5,) and np.array_equal(got_l, labels)


def test_load_idx_rejects_a_wrong_magic_number(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, np.zeros(4, np.uint8), magic=2051)  # an images magic on a labels file
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*Expected magic number 2049, got 2051"):
        load_idx(path)


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_load_idx_rejects_a_truncated_file(tmp_path, ext):
    raw = struct.pack(">IIII", 2051, 3, 28, 28) + bytes(3 * 28 * 28 - 10)  # 10 bytes short
    path = tmp_path / f"t10k-images-idx3-ubyte{ext}"
    path.write_bytes(gzip.compress(raw) if ext else raw)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated, Expected 2368 bytes.*got 2358"):
        load_idx(path)


def test_load_mnist_rejects_a_label_count_mismatch(tmp_path):
    fake_mnist(tmp_path, n_train=6, n_test=4, n_train_labels=5)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*train-images-idx3-ubyte \(6\), got 5"):
        load_mnist(tmp_path)


def test_missing_mnist_files_raise_with_the_download_hint(tmp_path):
    with pytest.raises(MnistNotFoundError) as e:
        load_mnist(tmp_path / "nowhere")
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "nowhere") in msg and "no such directory" in msg
    assert all(name in msg for name in MNIST_FILES)
    assert "http://yann.lecun.com/exdb/mnist/" in msg and "https://ossci-datasets.s3.amazonaws.com/mnist/" in msg
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(MnistNotFoundError, match=r"missing \['t10k-labels-idx1-ubyte'\]"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_source_on_synthetic_idx_files_builds_and_evaluates(tmp_path, gz):
    fake_mnist(tmp_path, gz=gz)
    s = SmnistSettings(source="mnist", data_dir=str(tmp_path), test_resolutions=[16], val_size=20, eval_size=40)
    task = SmnistTask(s, LSTM)
    assert task.split_sizes == {"train": 40, "val": 20, "eval": 40}
    assert not set(task.split_indices["train"]) & set(task.split_indices["val"])  # both index the train file
    assert task.val_data[0].shape == (20, 196) and task.eval_data[16][0].shape == (40, 256)
    model = task.build_model().eval()
    out = task.evaluate(model)
    assert set(out) == {"val/ce", "val/acc", "eval/ce_res14", "eval/acc_res14", "eval/ce_res16", "eval/acc_res16"}
    with pytest.raises(ValueError, match=r"val_size < 60 training.*got val_size=60"):
        SmnistTask(s.model_copy(update={"val_size": 60}), LSTM)


# ---------------------------------------------------------------- the resize protocol
def official_prep(images: np.ndarray, r: int) -> np.ndarray:
    """The official RIMs code (event_based/train_mnist.py, mnist_prep): ToTensor's x / 255, round (binarise), then
    F.upsample(size=(r, r), mode='nearest'); F.upsample is F.interpolate's old name."""
    x = torch.round(torch.from_numpy(images.copy()).float()[:, None] / 255)
    return F.interpolate(x, size=(r, r), mode="nearest")[:, 0].numpy().astype(np.uint8)


def test_rescale_of_28x28_images_is_the_official_codes_nearest_then_binarise():
    images = np.random.default_rng(2).integers(0, 256, (16, 28, 28)).astype(np.uint8)
    images[:, 0, :4] = [127, 128, 0, 255]  # the threshold: 127 off, 128 on
    for r in (14, 16, 19, 24, 28):
        assert np.array_equal(rescale_binarize(images, r, 255.0), official_prep(images, r)), r
    assert rescale_binarize(images, 28, 255.0)[0, 0, :4].tolist() == [0, 1, 0, 1]
    # 28 -> 14 keeps the even rows and columns (floor(2i)), not the odd ones pixel centres would pick
    assert np.array_equal(rescale_binarize(images, 14, 255.0), rescale_binarize(images[:, ::2, ::2], 14, 255.0))


def test_pixel_centre_rule_of_the_digits_stand_in_is_nearest_exact():
    images = np.random.default_rng(3).integers(0, 17, (4, 8, 8)).astype(np.uint8)
    for r in (8, 10, 12, 16):
        ref = F.interpolate(torch.from_numpy(images).float()[:, None], size=(r, r), mode="nearest-exact")[:, 0]
        got = rescale_binarize(images, r, 16.0, rule="centres")
        assert np.array_equal(got, (ref > 8).numpy().astype(np.uint8)), r
    with pytest.raises(ValueError, match=r"Expected rule 'paper' or 'centres', got 'bilinear'"):
        rescale_binarize(images, 10, 16.0, rule="bilinear")


# ---------------------------------------------------------------- resolution shift on the digits stand-in


def test_digits_sequences_have_resolution_squared_binary_steps():
    task = digits_task()
    for r, (x, y) in task.eval_data.items():
        assert x.shape == (50, r * r) and y.shape == (50,)
        assert set(x.unique().tolist()) == {0, 1}
        assert set(y.tolist()) <= set(range(10))
    assert set(task.eval_data) == {6, 7, 9} and task.val_data[0].shape == (50, 36)
    x, y = task.sample_batch(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 36) and x.dtype == torch.int64 and y.shape == (8,)
    assert STAND_IN in task.data_description and all(STAND_IN in d for d in task.metric_docs.values())


def test_resolutions_rescale_the_image_rather_than_pad_it():
    task = digits_task(train_resolution=8, test_resolutions=[16, 19])
    x8, x16, x19 = (task.eval_data[r][0].reshape(50, r, r) for r in (8, 16, 19))
    assert torch.equal(x16[:, ::2, ::2], x8) and torch.equal(x16[:, 1::2, 1::2], x8)  # each pixel becomes 2x2
    assert x16.sum() == 4 * x8.sum()
    padded = torch.zeros_like(x16)
    padded[:, :8, :8] = x8
    assert not torch.equal(x16, padded)
    assert x19.sum(dim=(1, 2)).float().mean() > 4 * x8.sum(dim=(1, 2)).float().mean()  # ~ (19/8)^2 = 5.6x the ink


def test_val_and_eval_sets_do_not_overlap_training():
    task = digits_task(val_size=1000, eval_size=1000, train_size=500)
    idx = {k: set(v.tolist()) for k, v in task.split_indices.items()}
    assert task.split_sizes == {"train": 500, "val": 359, "eval": 359}  # val / eval capped at a fifth of 1797
    assert not idx["train"] & idx["val"] and not idx["train"] & idx["eval"] and not idx["val"] & idx["eval"]


def test_eval_data_and_batches_are_deterministic():
    torch.manual_seed(0)
    a = digits_task()
    torch.manual_seed(1)  # the global seed (the trial's) must not matter
    b = digits_task()
    assert torch.equal(a.val_data[0], b.val_data[0]) and torch.equal(a.val_data[1], b.val_data[1])
    assert all(torch.equal(a.eval_data[r][0], b.eval_data[r][0]) for r in a.eval_data)
    xa, ya = a.sample_batch(64, torch.Generator().manual_seed(5))
    xb, yb = b.sample_batch(64, torch.Generator().manual_seed(5))
    xc, _ = b.sample_batch(64, torch.Generator().manual_seed(6))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)


# ---------------------------------------------------------------- the Fashion-MNIST stand-in: real IDX files
needs_fashion = pytest.mark.skipif(
    not Path(FASHION_DIR).is_dir(), reason=f"the Fashion-MNIST files are not installed (Debian: apt-get install "
    f"{FASHION_PACKAGE}; .ci/run and `make test` install it); these tests read the real IDX files in {FASHION_DIR}")


@pytest.fixture(scope="module")
def fashion():
    return load_mnist(FASHION_DIR, "fashion")


@needs_fashion
def test_the_idx_loader_reads_the_real_fashion_mnist_files(fashion):
    (tr_x, tr_y), (te_x, te_y) = fashion["train"], fashion["test"]
    assert tr_x.shape == (60000, 28, 28) and te_x.shape == (10000, 28, 28) and tr_x.dtype == te_x.dtype == np.uint8
    assert tr_y.shape == (60000,) and te_y.shape == (10000,)
    assert np.bincount(tr_y).tolist() == [6000] * 10 and np.bincount(te_y).tolist() == [1000] * 10  # balanced
    # the statistics every Fashion-MNIST normalisation uses: mean 0.2860, std 0.3530 of the training pixels / 255
    # (sums in chunks: a float64 copy of the 47M pixels would take 376 MB)
    n = tr_x.size
    s1 = sum(int(c.sum(dtype=np.int64)) for c in np.array_split(tr_x, 20))
    s2 = sum(int((c.astype(np.int64) ** 2).sum()) for c in np.array_split(tr_x, 20))
    assert s1 / n / 255 == pytest.approx(0.2860, abs=5e-5)
    assert math.sqrt(s2 / n - (s1 / n) ** 2) / 255 == pytest.approx(0.3530, abs=5e-5)
    assert (tr_x.min(), tr_x.max()) == (0, 255)
    assert tr_y[0] == 9 and te_y[0] == 9  # both files open on an ankle boot (class 9)


@needs_fashion
def test_fashion_source_runs_the_papers_protocol_on_the_real_files(fashion):
    task = SmnistTask(SmnistSettings(source="fashion", val_size=100, eval_size=100), LSTM)
    assert task.split_sizes == {"train": 59900, "val": 100, "eval": 100}
    assert task.train_data[0].shape == (59900, 14 * 14) and task.val_data[0].shape == (100, 14 * 14)
    assert {r: x.shape for r, (x, _) in task.eval_data.items()} == {14: (100, 196), 16: (100, 256), 19: (100, 361),
                                                                     24: (100, 576)}
    te_x, te_y = fashion["test"]
    idx = task.split_indices["eval"]
    for r, (x, y) in task.eval_data.items():  # each sequence is the official code's prep of that test image
        assert np.array_equal(x.numpy(), official_prep(te_x[idx], r).reshape(100, r * r)), r
        assert np.array_equal(y.numpy(), te_y[idx])
    tr_x, _ = fashion["train"]
    val = task.split_indices["val"]
    assert np.array_equal(task.val_data[0].numpy(), official_prep(tr_x[val], 14).reshape(100, 196))


def test_fashion_runs_are_labelled_as_the_stand_in():
    assert FASHION_STAND_IN == "Fashion-MNIST stand-in, not MNIST"
    assert FASHION_STAND_IN in SmnistTask.sources["fashion"] and "MNIST (LeCun" in SmnistTask.sources["mnist"]
    assert all(FASHION_STAND_IN in d and STAND_IN in d for d in SmnistTask.metric_docs.values())
    assert FASHION_STAND_IN in SmnistSettings.model_fields["source"].description  # the spec docs and --help


def test_the_report_names_the_data_a_sweep_used():
    pa = pytest.importorskip("pyarrow")
    from analysis.sections import metrics_blocks

    def text(sources):
        children = pa.table({"task.source": sources, "val/acc": [0.5] * len(sources),
                             "eval/acc_res16": [0.4] * len(sources)})
        return metrics_blocks("smnist", children, "val/acc")[1].text

    assert text(["fashion", "fashion"]).startswith(f"Data (task.source=fashion): {FASHION_STAND_IN}. ")
    assert f"Data (task.source=digits): {STAND_IN}. " in text(["digits"])
    assert text(["mnist"]).startswith("Data (task.source=mnist): MNIST. ") and "stand-in" not in text(["mnist"])


def test_preflight_refuses_missing_fashion_files_naming_the_apt_package(tmp_path):
    s = SmnistSettings(source="fashion", data_dir=str(tmp_path))  # an empty directory
    [(path, msg)] = SmnistDeclaration.preflight(s)
    assert path == "task.data_dir"
    assert f"apt-get install {FASHION_PACKAGE}" in msg and "Fashion-MNIST" in msg and str(tmp_path) in msg
    assert all(name in msg for name in MNIST_FILES)
    assert "yann.lecun.com" not in msg  # not MNIST's download hint
    with pytest.raises(MnistNotFoundError, match=r"apt-get install dataset-fashion-mnist"):
        SmnistTask(s, LSTM)
    # a damaged file is refused too, and the fix is to reinstall the package
    fake_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    [(path, msg)] = SmnistDeclaration.preflight(s)
    assert "t10k-images-idx3-ubyte.gz" in msg and f"apt-get install --reinstall {FASHION_PACKAGE}" in msg


@needs_fashion
def test_preflight_accepts_the_installed_package():
    assert SmnistDeclaration.preflight(SmnistSettings(source="fashion")) == []


def test_mnist_message_points_to_the_fashion_stand_in(tmp_path):
    with pytest.raises(MnistNotFoundError) as e:
        load_mnist(tmp_path)
    assert "task.source='fashion'" in str(e.value) and f"apt-get install {FASHION_PACKAGE}" in str(e.value)


def test_smoke_runs_evaluate_small_sets():
    task, optim = SmnistDeclaration.smoke({"source": "fashion", "val_size": 1000}, {"max_steps": 1500,
                                                                                     "eval_every": 500})
    assert (task["val_size"], task["eval_size"], task["source"]) == (64, 64, "fashion")
    assert optim["max_steps"] <= 4
    assert SmnistDeclaration.smoke({"val_size": 10}, {"max_steps": 4, "eval_every": 2})[0]["val_size"] == 10


# ---------------------------------------------------------------- settings
def test_settings_reject_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        SmnistSettings(resolution=14)
    with pytest.raises(ValidationError, match="non-empty list of resolutions"):
        SmnistSettings(test_resolutions=[])
    with pytest.raises(ValidationError, match="resolutions >= 2"):
        SmnistSettings(test_resolutions=[16, 1])
    with pytest.raises(ValidationError, match="data_dir"):
        SmnistSettings(source="mnist")
    with pytest.raises(ValidationError, match="data_dir applies to source='mnist' or 'fashion' only"):
        SmnistSettings(data_dir="/tmp")
    s = SmnistSettings()
    assert (s.source, s.train_resolution, s.test_resolutions) == ("digits", 14, [16, 19, 24])
    assert SmnistSettings(source="fashion").data_dir == FASHION_DIR == "/usr/share/datasets/fashion-mnist"
    assert SmnistSettings(source="fashion", data_dir="/elsewhere").data_dir == "/elsewhere"


# ---------------------------------------------------------------- model and metrics
@pytest.mark.parametrize("model", [RIM, LSTM], ids=["rims", "lstm"])
def test_evaluate_reports_the_same_metric_names_for_every_model_kind(model):
    task = digits_task(model)
    net = task.build_model()
    assert net.head.out_features == 10 and net.rnn.hidden_size == 24
    assert net.embed(torch.tensor([0])).abs().sum() > 0  # an off pixel is not the null (zero) input
    loss, m = task.loss(net, task.sample_batch(4, torch.Generator().manual_seed(0)))
    assert loss.requires_grad and set(m) == {"ce", "acc"}
    out = task.evaluate(net.eval())
    names = {"val/ce", "val/acc"} | {f"eval/{m}_res{r}" for r in (6, 7, 9) for m in ("ce", "acc")}
    assert set(out) == names
    assert all(math.isfinite(v) for v in out.values())
    assert all(0.0 <= out[k] <= 1.0 for k in names if "acc" in k)
    assert SmnistTask.objective == ("val/acc", "max") and set(SmnistTask.metric_docs) == {"ce", "acc"}


@pytest.mark.learning
@pytest.mark.slow
def test_rim_learns_digits_at_a_small_resolution():
    """~20 s of CPU (300 Adam steps of 64 sequences of 64 steps). Chance is 0.1 accuracy and ln 10 = 2.30
    ce; seeds 0..2 measured val acc 0.46-0.51, ce 1.38-1.48, so > 0.3 and < 2.0 show that the RIM classifies
    from a pixel sequence, with margin for run-to-run noise. One intra-op thread: at these sizes (B 64,
    H 48) a second thread gains nothing, and on a busy 2-core machine it spin-waits, measured 5-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = _train_small_rim()
    finally:
        torch.set_num_threads(threads)
    assert out["val/acc"] > 0.3 and out["val/ce"] < 2.0, out


def _train_small_rim() -> dict[str, float]:
    torch.manual_seed(0)
    task = SmnistTask(SmnistSettings(train_resolution=8, test_resolutions=[10], val_size=300, eval_size=300),
                      {"kind": "rims", "hidden_size": 48, "num_units": 4, "top_k": 3, "num_layers": 1})
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss, _ = task.loss(model, task.sample_batch(64, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return task.evaluate(model.eval())

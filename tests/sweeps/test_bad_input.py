"""Malformed input to the `rims` CLI, end to end through `rims_cli.main.main`: every row must exit non-zero with a
message on stderr that names the offending field (a dotted spec path or a CLI flag) and says what is allowed,
start no trial and create no MLflow run.

Trials are guarded rather than run: `ray.tune.Tuner`, the local runner's process pool and `subprocess.call`
(`rims sweep submit`) raise `Started` if reached, and so does `ray.init` in rows that must be refused before
Ray starts. Rows that need a cluster (resources, MNIST files, a local store on a multi-node cluster) share one
local Ray; the multi-node row starts a two-node `ray.cluster_utils.Cluster` of its own, last.
"""

from __future__ import annotations

import contextlib
import copy
import re
import sqlite3
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from rims_cli.main import main

pytestmark = pytest.mark.integration

OBJECT_STORE = 100 * 1024**2  # bytes per Ray node: nothing is stored, keep the footprint small

BASE = {
    "name": "bad",
    "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
    "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
    "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 2, "eval_every": 1},
    "space": {"model.kind": {"grid": ["rims", "lstm"]}},
    "max_failures": 0,
}
MNIST = {**BASE, "task": {"name": "smnist", "source": "mnist", "data_dir": "{tmp}/mnist"}, "space": {}}


def with_(path: str, value: Any, base: dict = BASE) -> dict:
    """BASE with one entry (path "a/b/c") set to value."""
    spec = copy.deepcopy(base)
    node = spec
    *parents, leaf = path.split("/")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return spec


RUN = ("sweep", "run", "{spec}", "--mlflow-uri", "{uri}", "--storage-path", "{results}", "--quiet")
LOCAL = ("sweep", "local", "{spec}", "--out", "{results}", "--mlflow-uri", "{uri}")


def write_idx(path: Path, arr: np.ndarray, magic: int | None = None) -> None:
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def mnist_dir(tmp: Path, *, truncate: bool = False, wrong_magic: bool = False) -> None:
    """Four tiny IDX files in tmp/mnist; optionally the train images cut short, or the train labels given the
    images' magic number (2051 where an idx1 file needs 2049)."""
    d = tmp / "mnist"
    d.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(d / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte", np.zeros(n, np.uint8),
                  magic=2051 if wrong_magic and prefix == "train" else None)
    if truncate:
        p = d / "train-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:-100])


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # placeholders: {spec} {uri} {results} {tmp} {address}
    field: str  # regex: the offending field, as a spec path or a CLI flag
    fix: str  # regex: what is allowed, or how to fix it
    spec: dict | str | None = None  # a dict is written as YAML, a str as is; None: no spec file
    ray: str | None = None  # "local": may use the shared local Ray; "cluster": a 2-node cluster
    setup: Callable[[Path], None] | None = None


CASES = [
    # wrong types
    Case("type/model.hidden_size", RUN, r"model\.hidden_size", r"valid integer", with_("model/hidden_size", "big")),
    Case("type/seeds", RUN, r"\bseeds\b", r"positive number of seeds or a list of integer seeds, got 'three'",
         with_("seeds", "three")),
    Case("type/model.comm.enabled", RUN, r"model\.comm\.enabled", r"valid boolean",
         with_("model/comm", {"enabled": "maybe"})),
    Case("type/model.kind", RUN, r"model\.kind", r"'rims', 'lstm', 'gru', 'transformer' or 'rmc'",
         with_("model/kind", "mamba")),
    # unknown keys
    Case("unknown/top", RUN, r"\bcolour\b", r"not permitted", with_("colour", "red")),
    Case("unknown/task", RUN, r"task\.blnk", r"not permitted.*did you mean 'task\.blank'", with_("task/blnk", 3)),
    Case("unknown/model", RUN, r"model\.num_unit\b", r"not permitted.*did you mean 'model\.num_units'",
         with_("model/num_unit", 3)),
    Case("unknown/optim", RUN, r"optim\.learning_rate", r"not permitted", with_("optim/learning_rate", 0.1)),
    # constraints across fields
    Case("top_k>num_units", RUN, r"model\.top_k", r"top_k must be <= num_units", with_("model/top_k", 4)),
    Case("hidden_size%num_units", RUN, r"model\.hidden_size", r"divisible by num_units",
         with_("model/hidden_size", 13)),
    # sizes
    Case("size/hidden_size<0", RUN, r"model\.hidden_size", r"greater than or equal to 1",
         with_("model/hidden_size", -12)),
    Case("size/hidden_size=0", RUN, r"model\.hidden_size", r"greater than or equal to 1",
         with_("model/hidden_size", 0)),
    Case("size/num_units=0", RUN, r"model\.num_units", r"greater than or equal to 1", with_("model/num_units", 0)),
    Case("size/batch_size=0", RUN, r"optim\.batch_size", r"greater than or equal to 1",
         with_("optim/batch_size", 0)),
    Case("size/max_steps<0", RUN, r"optim\.max_steps", r"greater than or equal to 1", with_("optim/max_steps", -1)),
    Case("size/eval_every=0", RUN, r"optim\.eval_every", r"greater than or equal to 1",
         with_("optim/eval_every", 0)),
    Case("size/lr=0", RUN, r"optim\.lr", r"greater than 0", with_("optim/lr", 0)),
    Case("size/seeds=0", RUN, r"\bseeds\b", r"positive number of seeds", with_("seeds", 0)),
    Case("size/task.blank=0", RUN, r"task\.blank", r"greater than or equal to 1", with_("task/blank", 0)),
    Case("size/task.dropout=1", RUN, r"task\.dropout", r"less than 1", with_("task/dropout", 1.0)),
    Case("size/plateau_factor=1", RUN, r"optim\.plateau_factor", r"less than 1", with_("optim/plateau_factor", 1)),
    Case("name/task.input", RUN, r"task\.input", r"'onehot' or 'embedding'", with_("task/input", "embed")),
    Case("name/lr_schedule", RUN, r"optim\.lr_schedule", r"'constant' or 'plateau'",
         with_("optim/lr_schedule", "cosine")),
    Case("rl/lr_schedule", RUN, r"optim\.lr_schedule", r"trained by PPO.*expected 'constant', got 'plateau'",
         with_("optim/lr_schedule", "plateau", {**BASE, "task": {"name": "fetch"}, "model": {"kind": "lstm"},
                                                 "space": {}})),
    Case("type/cuda_graph", RUN, r"resources\.cuda_graph", r"valid boolean", with_("resources/cuda_graph", "maybe")),
    Case("type/recompute", RUN, r"resources\.recompute", r"valid boolean", with_("resources/recompute", "some")),
    Case("name/precision", RUN, r"optim\.precision", r"'fp32' or 'bf16'", with_("optim/precision", "fp16")),
    Case("rl/precision", RUN, r"optim\.precision", r"trained by PPO.*expected 'fp32', got 'bf16'",
         with_("optim/precision", "bf16", {**BASE, "task": {"name": "fetch"}, "model": {"kind": "lstm"},
                                            "space": {}})),
    # search spaces
    Case("space/empty-grid", RUN, r"space\.model\.kind\.grid", r"non-empty list", with_("space/model.kind",
                                                                                         {"grid": []})),
    Case("space/empty-list", RUN, r"\bspace\b", r"non-empty list of spaces", with_("space", [])),
    Case("space/misspelled-key", RUN, r"space\.model\.topk", r"did you mean 'model\.top_k'",
         with_("space/model.topk", {"grid": [1, 2]})),
    # names
    Case("name/task", RUN, r"task\.name", r"expected one of \[.*'copying'.*\]", with_("task/name", "copy")),
    Case("name/search.metric", RUN, r"search\.metric", r"the task reports \[.*'val/ce'.*\]",
         with_("search/metric", "val/loss")),
    Case("name/search.metric-eval", RUN, r"search\.metric", r"use a val/ metric",
         with_("search/metric", "eval/ce_blank6")),
    Case("name/stop.metric", RUN, r"stop\.metric", r"'val/ce'", with_("stop", {"metric": "val/loss", "threshold": 0}),
         ray="local"),  # refused at spec time if at all; may reach a cluster, so it is given one
    Case("name/stop.threshold-missing", RUN, r"stop\.threshold", r"give both or neither",
         with_("stop", {"metric": "val/ce"})),
    Case("name/search.algorithm", RUN, r"search\.algorithm", r"'grid', 'random' or 'optuna'",
         with_("search/algorithm", "bayes")),
    Case("name/scheduler", RUN, r"scheduler\.name", r"'none' or 'asha'", with_("scheduler/name", "pbt")),
    # files
    Case("file/malformed-yaml", RUN, r"spec\.yaml", r"malformed YAML.*line \d+, column \d+", "name: [unclosed\n"),
    Case("file/top-level-list", RUN, r"<spec>", r"expected a mapping at the top level, got list", "- 1\n- 2\n"),
    Case("file/missing-spec", ("sweep", "run", "{tmp}/missing.yaml", "--mlflow-uri", "{uri}", "--storage-path",
                               "{results}"), r"missing\.yaml", r"no such spec file"),
    Case("flag/--resume-nothing", (*RUN, "--resume"), r"--resume", r"no sweep named 'bad' under", BASE),
    Case("submit/bad-spec", ("sweep", "submit", "{spec}", "--address", "http://127.0.0.1:9"), r"optim\.lr",
         r"greater than 0", with_("optim/lr", -1)),
    Case("dashboard/no-study", ("sweep", "dashboard", "{spec}", "--storage-path", "{results}"), r"--storage-path",
         r"no Optuna study of sweep 'bad' under .*search\.algorithm: optuna", BASE),
    # the local runner
    Case("local/optuna", LOCAL, r"search\.algorithm", r"grid and random .*use `rims sweep run`",
         with_("search/algorithm", "optuna")),
    Case("local/asha", LOCAL, r"scheduler\.name", r"without a scheduler; use `rims sweep run`",
         with_("scheduler/name", "asha")),
    Case("local/--jobs=0", (*LOCAL, "--jobs", "0"), r"--jobs", r"Expected a positive number of worker processes",
         BASE),
    Case("local/--jobs<0", (*LOCAL, "--jobs", "-1"), r"--jobs", r"Expected a positive number of worker processes",
         BASE),
    Case("local/--jobs=three", (*LOCAL, "--jobs", "three"), r"--jobs", r"invalid int value: 'three'", BASE),
    Case("local/no-out", ("sweep", "local", "{spec}"), r"--out", r"required", BASE),
    # eval, analyze, tracking
    Case("eval/--set-not-task", ("eval", "0" * 32, "--set", "model.hidden_size=3", "--mlflow-uri", "{uri}"),
         r"--set", r"expected task\.<key>=<value>"),
    Case("eval/--set-no-value", ("eval", "0" * 32, "--set", "task.test_blanks", "--mlflow-uri", "{uri}"),
         r"--set", r"expected task\.<key>=<value>"),
    Case("eval/unknown-run", ("eval", "0123456789abcdef0123456789abcdef", "--mlflow-uri", "{uri}"),
         r"0123456789abcdef0123456789abcdef", r"--mlflow-uri|sqlite:///\S*mlflow\.db"),  # where it looked
    Case("analyze/table-no-export", ("analyze", "table", "{tmp}/export"), r"runs\.parquet",
         r"run `rims analyze export` first", setup=lambda tmp: (tmp / "export").mkdir()),
    Case("analyze/table--stat", ("analyze", "table", "{tmp}", "--stat", "median"), r"--stat",
         r"invalid choice: 'median' \(choose from"),
    Case("tracking/replay-missing", ("tracking", "replay", "{tmp}/spill/nowhere.jsonl", "--mlflow-uri", "{uri}"),
         r"nowhere\.jsonl", r"Expected a spill file or a folder of them"),
    # refused where the sweep runs: after connecting to Ray, before any MLflow run
    Case("cluster/resources.cpu", RUN, r"resources\.cpu", r"largest node has [\d.]+; lower it",
         with_("resources", {"cpu": 64}), ray="local"),
    Case("cluster/mnist-missing-dir", RUN, r"task\.data_dir", r"no such directory.*download them from", MNIST,
         ray="local"),
    Case("cluster/mnist-truncated-idx", RUN, r"task\.data_dir", r"train-images-idx3-ubyte.*(truncated|Expected \d+ "
         r"bytes)", MNIST, ray="local", setup=lambda tmp: mnist_dir(tmp, truncate=True)),
    Case("cluster/mnist-wrong-magic", RUN, r"task\.data_dir", r"train-labels-idx1-ubyte.*Expected magic number 2049",
         MNIST, ray="local", setup=lambda tmp: mnist_dir(tmp, wrong_magic=True)),
    Case("cluster/sqlite-on-2-nodes", (*RUN, "--address", "{address}"), r"--mlflow-uri",
         r"mlflow server .*--mlflow-uri http://", BASE, ray="cluster"),
]


class Started(Exception):
    """Something the bad input should have stopped was reached (a trial, a job, Ray itself)."""


def _refuse(what: str):
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise Started(what)

    return refuse


class _NoTuner:
    """Stands in for ray.tune.Tuner: creating or restoring one means trials were about to start."""

    __init__ = _refuse("a Tune trial")
    restore = classmethod(_refuse("a Tune trial (restore)"))
    can_restore = classmethod(_refuse("a Tune trial (restore)"))


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_module():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def local_ray() -> str:
    import ray

    if not ray.is_initialized():  # shared by consecutive rows: Ray starts once
        ray.init(address="local", num_cpus=2, num_gpus=0, object_store_memory=OBJECT_STORE, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    return ""


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE})
    try:
        c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        c.wait_for_nodes()
        yield c.address
    finally:
        ray.shutdown()
        c.shutdown()


def _format(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**paths)
    if isinstance(value, dict):
        return {k: _format(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, paths) for v in value]
    return value


def _runs(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return con.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.OperationalError:  # no runs table: no run
            return 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_starts_nothing(case, tmp_path, monkeypatch, capsys, request):
    import ray
    import ray.tune

    import sweeps.local

    monkeypatch.setenv("RAY_ADDRESS", "")  # never join a stray cluster
    monkeypatch.chdir(tmp_path)  # defaults (./mlflow.db, ./ray_results) land here too
    monkeypatch.setattr(ray.tune, "Tuner", _NoTuner)
    monkeypatch.setattr(sweeps.local, "ProcessPoolExecutor", _refuse("a local trial"))
    monkeypatch.setattr("subprocess.call", _refuse("`ray job submit`"))
    address = ""
    if case.ray == "local":
        request.getfixturevalue("local_ray")
    elif case.ray == "cluster":
        address = request.getfixturevalue("two_node_cluster")
    else:
        monkeypatch.setattr(ray, "init", _refuse("Ray (ray.init): the input was not refused before connecting"))
    db, results = tmp_path / "mlflow.db", tmp_path / "results"
    paths = {"tmp": str(tmp_path), "spec": str(tmp_path / "spec.yaml"), "uri": f"sqlite:///{db}",
             "results": str(results), "address": address}
    if case.setup:
        case.setup(tmp_path)
    if isinstance(case.spec, dict):
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_format(case.spec, paths)))
    elif isinstance(case.spec, str):
        (tmp_path / "spec.yaml").write_text(case.spec)

    problems: list[str] = []
    code: Any = None
    try:
        code = main([a.format(**paths) for a in case.argv])
    except SystemExit as e:  # argparse: usage error, exit 2
        code = e.code
    except Started as e:
        problems.append(f"not refused: reached {e}")
    except Exception:
        problems.append("raised instead of printing a clear error:\n" + traceback.format_exc(limit=-3))
    err = capsys.readouterr().err

    if not (isinstance(code, int) and code != 0):
        problems.append(f"exit code {code!r}, expected non-zero")
    if not re.search(case.field, err):
        problems.append(f"stderr does not name the field /{case.field}/")
    if not re.search(case.fix, err, re.S):
        problems.append(f"stderr does not say what is allowed /{case.fix}/")
    if n := _runs(db):
        problems.append(f"{n} MLflow runs created in {db}")
    left = sorted(p.name for p in results.iterdir()) if results.exists() else []
    if left:
        problems.append(f"results folder holds {left}")
    assert not problems, "\n".join(problems) + f"\n--- stderr (tail) ---\n{err[-2500:]}"


# one spec, a problem at every stage of the checks: unknown keys (top level and nested), types, ranges, the
# space, search / stop / resources, the constraint across fields, the task's data files on this machine
MANY = {
    "name": "many",
    "task": {"name": "smnist", "source": "mnist", "data_dir": "{tmp}/nowhere", "train_resolutin": 14},
    "model": {"kind": "rims", "hidden_size": 60, "num_units": 6, "top_k": 9, "comm": {"enabld": True}},
    "optim": {"lr": 0, "batch_size": "big"},
    "space": {"model.topk": {"grid": [1, 2]}, "optim.lr": {"loguniform": [0, 1]}},
    "search": {"metric": "val/loss"},
    "stop": {"metric": "val/ce"},
    "resources": {"cpu": 0, "triton": "sometimes"},
    "seeds": "three",
    "colour": "red",
}
EXPECTED = [  # (dotted field, the value given, what is allowed)
    ("task.train_resolutin", "value 14", "did you mean 'task.train_resolution'"),
    ("model.comm.enabld", "value True", "did you mean 'model.comm.enabled'"),
    ("colour", "value 'red'", r"expected one of \[.*'seeds'"),
    ("model.top_k", "top_k=9 > num_units=6", "top_k must be <= num_units"),
    ("optim.lr", "got 0", "greater than 0"),
    ("optim.batch_size", "got 'big'", "valid integer"),
    ("space.model.topk", "'model.topk'", "did you mean 'model.top_k'"),
    ("space.optim.lr.loguniform", r"got \[0, 1\]", "low > 0"),
    ("space.optim.lr", r"got \{'loguniform'", "every space entry must be a grid"),
    ("search.metric", "'val/loss'", r"the task reports \[.*'val/ce'"),
    ("stop", "stop.metric", "give both or neither"),
    ("resources.cpu", "got 0", "greater than 0"),
    ("resources.triton", "got 'sometimes'", "valid boolean"),
    ("seeds", "got 'three'", "positive number of seeds or a list"),
    ("task.data_dir", "nowhere", "no such directory.*download them from"),
]


@pytest.mark.parametrize("argv", [RUN, LOCAL, ("sweep", "validate", "{spec}")], ids=["run", "local", "validate"])
def test_every_problem_of_a_spec_in_one_run(argv, tmp_path, monkeypatch, capsys):
    """Fifteen problems across every stage of the checks come out of one run, each with its field, the value
    given and what is allowed; nothing starts, no MLflow run exists."""
    import ray
    import ray.tune

    import sweeps.local

    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ray.tune, "Tuner", _NoTuner)
    monkeypatch.setattr(sweeps.local, "ProcessPoolExecutor", _refuse("a local trial"))
    monkeypatch.setattr(ray, "init", _refuse("Ray (ray.init): the spec was not refused before connecting"))
    db, results = tmp_path / "mlflow.db", tmp_path / "results"
    paths = {"tmp": str(tmp_path), "spec": str(tmp_path / "spec.yaml"), "uri": f"sqlite:///{db}",
             "results": str(results), "address": ""}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_format(MANY, paths)))
    code = main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    for field, given, allowed in EXPECTED:
        line = next((ln for ln in lines if ln.strip().startswith(field + ":")), None)
        assert line is not None, f"{field} not reported:\n{err}"
        assert re.search(given, line) and re.search(allowed, line), f"{field}: {line}"
    assert len([ln for ln in lines if ln.startswith("  ")]) == len(EXPECTED), err  # each problem once
    assert not db.exists() and not results.exists()

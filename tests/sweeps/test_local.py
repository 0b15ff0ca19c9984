"""The local runner (no Ray): offline spill files that `rims tracking replay` turns into the same parent and
nested runs a Ray sweep logs; the stopping rule, a raising trial, and a rerun that resumes instead of repeating."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from rims_cli.main import main
from sweeps.local import run_local
from sweeps.spec import SpecError, load_spec

from .servers import BIN, wait_until

pytestmark = pytest.mark.integration

RAW = {"name": "loc", "experiment": "loc", "task": {"name": "copying", "blank": 3, "test_blanks": [6],
                                                    "eval_size": 16},
       "model": {"kind": "rims", "hidden_size": 12, "num_units": 3, "top_k": 2},
       "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 6, "eval_every": 2},
       "space": {"model.kind": {"grid": ["rims", "lstm"]}, "task.blank": {"grid": [3, 10**11]}},
       "stop": {"metric": "val/acc", "threshold": 1.0, "mode": "max"}}  # never met: the trials complete


@pytest.mark.slow
def test_offline_sweep_replays_into_the_same_hierarchy_and_resumes(tmp_path):
    spec = load_spec(RAW)
    res = run_local(spec, yaml.safe_dump(RAW), tmp_path / "out", jobs=2)
    # blank 10**11 asks for terabytes when the task builds its data: those two trials raise
    assert res.counts == {"trials": 4, "completed": 2, "stopped_early": 0, "failed": 0, "errored": 2}
    assert all("allocate" in f for f in res.failures)
    spill = tmp_path / "out" / "spill"
    assert sorted(p.name for p in spill.glob("*.jsonl"))[-1] == "sweep.jsonl" and len(list(spill.glob("*.jsonl"))) == 5
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["tracking", "replay", str(spill), "--mlflow-uri", uri]) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("loc").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["sweep/errored"] == 2 and parent[0].data.params["search.algorithm"] == "grid"
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {parent[0].info.run_id} and len(kids) == 4
    assert {r.info.run_name for r in kids} == {"rims blank=3 seed=0", "rims blank=100000000000 seed=0",
                                               "lstm blank=3 seed=0", "lstm blank=100000000000 seed=0"}
    by = {(r.data.params["model.kind"], r.data.params["task.blank"]): r for r in kids}
    for kind in ("rims", "lstm"):
        ok, bad = by[(kind, "3")], by[(kind, str(10**11))]
        assert ok.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(ok.info.run_id, "val/ce")] == [2, 4, 6]
        assert bad.info.status == "FAILED" and "allocate" in bad.data.tags["rims.failure"]
    assert by[("lstm", "3")].data.params.get("model.top_k") is None, "RIM-only keys stay off baselines"
    # a rerun resumes: finished trials are not run again (their spill files do not grow)
    sizes = {p.name: p.stat().st_size for p in spill.glob("*__0000[02].jsonl")}
    again = run_local(spec, yaml.safe_dump(RAW), tmp_path / "out", jobs=1)
    assert again.sweep_id == res.sweep_id and again.counts["completed"] == 2
    assert {p.name: p.stat().st_size for p in spill.glob("*__0000[02].jsonl")} == sizes
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["sweep_id"] == res.sweep_id


@pytest.mark.slow
def test_stopping_rule_and_live_logging(tmp_path):
    raw = {**RAW, "space": {"model.kind": {"grid": ["rims"]}},
           "stop": {"metric": "val/ce", "threshold": 100.0, "mode": "min"}}  # met at the first report
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    res = run_local(load_spec(raw), yaml.safe_dump(raw), tmp_path / "out", mlflow_uri=uri)
    assert res.counts["stopped_early"] == 1
    assert not list((tmp_path / "out").rglob("*.jsonl")), "live logging: no spill file"
    client = MlflowClient(uri)
    (kid,) = client.search_runs([client.get_experiment_by_name("loc").experiment_id],
                                filter_string="tags.`rims.trial_id` != ''")
    assert kid.info.status == "FINISHED" and kid.data.tags["rims.stopped_early"] == "true"
    assert "rims.failure" not in kid.data.tags  # a stop is not a failure
    assert [m.step for m in client.get_metric_history(kid.info.run_id, "val/ce")] == [2]


def test_the_local_runner_refuses_optuna(tmp_path):
    raw = {**RAW, "space": {"model.top_k": {"int": [1, 3]}}, "search": {"algorithm": "optuna"}}
    with pytest.raises(SpecError, match="grid and random"):
        run_local(load_spec(raw), "", tmp_path / "out")


def test_directory_checkpoints_are_replaced_whole(tmp_path):
    """An RL trial's checkpoint is a directory: each report replaces it, and after a kill between the two renames
    the previous one is still found."""
    from sweeps.local import _store_dir, _stored_dir
    from sweeps.trial import CHECKPOINT_FILE

    final = tmp_path / "checkpoint"
    for step in (1, 2):
        src = tmp_path / f"src{step}"
        (src / "algo").mkdir(parents=True)
        (src / CHECKPOINT_FILE).write_text(str(step))
        (src / "algo" / "weights").write_text(str(step))
        _store_dir(src, final)
        assert (final / CHECKPOINT_FILE).read_text() == str(step) and (final / "algo" / "weights").read_text() == \
            str(step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "src1", "src2"], "no temporary left"
    final.rename(tmp_path / "checkpoint.old")  # killed after moving the old one aside, before the new was renamed
    assert _stored_dir(final) == tmp_path / "checkpoint.old"
    assert _stored_dir(tmp_path / "nothing") is None


@pytest.mark.slow
def test_without_tracking_a_spec_runs_and_counts_a_diverged_trial_as_failed(tmp_path, capsys):
    """tracking=False (what `rims demo` runs): no run, no spill file; the outcomes are counted as with tracking,
    a non-finite loss as failed (not errored), and every trial's last report comes back."""
    raw = {**RAW, "optim": {**RAW["optim"], "grad_clip": 1e30},
           "space": {"optim.lr": {"grid": [0.01, 1e30]}}}  # lr 1e30: the RIM's loss is NaN within a step
    res = run_local(load_spec(raw), yaml.safe_dump(raw), tmp_path / "out", tracking=False)
    assert res.counts == {"trials": 2, "completed": 1, "stopped_early": 0, "failed": 1, "errored": 0}
    assert res.failures == ["00001: failed"]
    assert res.results["00000"]["last"]["step"] == 6 and "val/ce" in res.results["00000"]["last"]
    assert res.results["00001"]["last"]["failed"] == 1.0
    assert not (tmp_path / "out" / "spill").exists() and not list(tmp_path.rglob("*.jsonl"))
    assert not list(tmp_path.rglob("mlflow.db")) and res.parent_run_id == ""
    assert "trial 00001 (rims lr=1e+30 seed=0): failed" in capsys.readouterr().out
    with pytest.raises(ValueError, match="tracking=False"):
        run_local(load_spec(raw), "", tmp_path / "other", tracking=False, mlflow_uri=f"sqlite:///{tmp_path}/m.db")


def test_trials_run_seed_major_so_an_interrupted_sweep_stays_balanced(tmp_path, capsys):
    """One worker runs the trials in submission order: every configuration at seed 0, then at seed 1, while the
    trial ids keep the spec's order (configuration-major, seeds adjacent)."""
    raw = {**RAW, "space": {"model.kind": {"grid": ["rims", "lstm"]}}, "seeds": 2,
           "optim": {**RAW["optim"], "max_steps": 2}}
    run_local(load_spec(raw), yaml.safe_dump(raw), tmp_path / "out", jobs=1, tracking=False)
    done = [ln.split()[1:4] for ln in capsys.readouterr().out.splitlines() if ln.startswith("trial ")]
    assert done == [["00000", "(rims", "seed=0):"], ["00002", "(lstm", "seed=0):"],
                    ["00001", "(rims", "seed=1):"], ["00003", "(lstm", "seed=1):"]]


def _stat(pid: int) -> list[str] | None:
    """(state, ppid, ...) of a process from /proc, or None when it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie has ended, only its exit status is left


def _children(pid: int) -> list[int]:
    """Live processes whose parent is pid (Linux /proc)."""
    return [int(d.name) for d in Path("/proc").glob("[0-9]*") if (st := _stat(int(d.name))) and int(st[1]) == pid
            and _alive(int(d.name))]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_killed_driver_takes_its_trial_workers_with_it(tmp_path):
    """SIGKILL to `rims sweep local`: its worker processes end too instead of running on as orphans (which would
    start the queued trials and write into the folders a resuming rerun uses)."""
    raw = {**RAW, "space": {"model.kind": {"grid": ["rims", "lstm"]}},
           "optim": {**RAW["optim"], "max_steps": 10**7, "eval_every": 10**6}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    driver = subprocess.Popen([str(BIN / "rims"), "sweep", "local", str(spec), "--out", str(tmp_path / "out"),
                               "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # both trials started: their folders exist, and the driver has its two workers (plus the resource tracker)
        wait_until(lambda: len(list((tmp_path / "out" / "trials").glob("0000*"))) == 2, "both trials started",
                   alive=driver)
        workers = _children(driver.pid)
        assert len(workers) >= 2
    finally:
        driver.kill()
        driver.wait()
    wait_until(lambda: not any(_alive(w) for w in workers), "the workers of the killed driver to end")

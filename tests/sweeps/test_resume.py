"""`rims sweep run --resume` after the driver is SIGKILLed mid-sweep: every trial finishes, no MLflow run is
duplicated, the parent run is the same, no metric step is logged twice."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.sweeps.servers import GUARD_S, kill, session_pids, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def finished_children(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid "
                               "where t.key = 'mlflow.parentRunId' and r.status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_the_driver_once(driver: subprocess.Popen, db: Path, finished: int) -> int:
    """SIGKILL the driver once `finished` child runs are FINISHED; return how many were by then. Waits until the
    trial processes of its Ray instance, which stop by themselves when their raylet dies with the driver, are
    gone; Ray's two agents take a minute to notice and run no trial code: they are killed then."""
    try:
        wait_until(lambda: finished_children(db) >= finished, f"{finished} finished trial runs", alive=driver)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    wait_until(lambda: not [c for c in session_pids(driver.pid).values() if not c.startswith(agents)],
               "the killed driver's trial processes to exit")
    kill(list(session_pids(driver.pid)))
    return finished_children(db)


def test_resume_after_sigkill_of_the_driver(tmp_path):
    spec = tmp_path / "resume.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "resume", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 60, "eval_every": 10}, "seeds": 2,
        "space": {"model.top_k": {"grid": [1, 2, 3]}}, "max_concurrent": 1}))
    db = tmp_path / "mlflow.db"
    args = [str(BIN / "rims"), "sweep", "run", str(spec), "--storage-path", str(tmp_path / "results"),
            "--mlflow-uri", f"sqlite:///{db}", "--quiet"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    driver = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    # kill early, so that trials the searcher has not generated yet (max_concurrent 1) must be generated on resume
    done_before = kill_the_driver_once(driver, db, finished=1)
    assert 1 <= done_before < 6
    proc = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=GUARD_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "6 trials, 6 completed" in proc.stdout, proc.stdout[-2000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 6 and len({r.data.tags["rims.trial_id"] for r in kids}) == 6
    assert all(r.info.status == "FINISHED" for r in kids)
    for r in kids:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/ce")]
        assert steps == [10, 20, 30, 40, 50, 60], (r.data.tags["rims.trial_id"], steps)
    print(f"\nRELIABILITY driver SIGKILL (grid): {done_before} of 6 runs finished before the kill; after --resume "
          f"6/6 trials completed, {len(kids)} runs, 1 parent, val/ce points expected 36, found "
          f"{sum(len(client.get_metric_history(r.info.run_id, 'val/ce')) for r in kids)}")


def test_optuna_sweep_resumes_after_sigkill_without_repeated_or_lost_suggestions(tmp_path):
    """Optuna (TPE, its study in RDB storage beside the results) x 2 seeds: after the driver's SIGKILL and
    --resume, all num_samples x seeds trials finish, each configuration runs once per seed, and the study holds
    exactly num_samples finished trials whose parameters are those of the MLflow runs."""
    import optuna

    samples, seeds = 4, 2
    spec = tmp_path / "tpe.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tpe", "task": {"name": "copying", "blank": 3, "test_blanks": [6], "eval_size": 16},
        "model": {"kind": "rims", "hidden_size": 12, "num_units": 3},
        "optim": {"lr": 0.01, "batch_size": 8, "max_steps": 60, "eval_every": 10}, "seeds": seeds,
        "space": {"model.top_k": {"int": [1, 3]}, "optim.lr": {"loguniform": [1e-3, 1e-1]}},
        "search": {"algorithm": "optuna", "num_samples": samples}, "max_concurrent": 1}))
    db = tmp_path / "mlflow.db"
    args = [str(BIN / "rims"), "sweep", "run", str(spec), "--storage-path", str(tmp_path / "results"),
            "--mlflow-uri", f"sqlite:///{db}", "--quiet"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    driver = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    done_before = kill_the_driver_once(driver, db, finished=3)
    assert 3 <= done_before < samples * seeds
    proc = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=GUARD_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"{samples * seeds} trials, {samples * seeds} completed" in proc.stdout, proc.stdout[-2000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("tpe").experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
    # a trial that started after Tune's last experiment checkpoint is generated again under a new trial id;
    # its first run is closed as KILLED and names its replacement (tables count FINISHED runs only)
    orphans = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status != "FINISHED"]
    assert all(r.info.status == "KILLED" and r.data.tags["rims.superseded_by"] in {k.info.run_id for k in kids}
               for r in orphans), [(r.info.status, r.data.tags) for r in orphans]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == samples * seeds and len({r.data.tags["rims.trial_id"] for r in kids}) == samples * seeds
    by_config: dict[tuple[str, str], list[str]] = {}
    for r in kids:
        by_config.setdefault((r.data.params["model.top_k"], r.data.params["optim.lr"]), []).append(
            r.data.params["seed"])
    assert len(by_config) == samples, "no suggestion repeated or lost"
    assert all(sorted(s) == ["0", "1"] for s in by_config.values()), "each configuration once per seed"
    study_db = next((tmp_path / "results").glob("tpe*/optuna.db"))
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{study_db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == samples
    assert {(str(t.params["model.top_k"]), str(t.params["optim.lr"])) for t in complete} == set(by_config)
    print(f"\nRELIABILITY driver SIGKILL (optuna): {done_before} of {samples * seeds} runs finished before the kill; "
          f"after --resume {len(kids)} finished runs (+{len(orphans)} interrupted, closed KILLED), "
          f"{len(by_config)} configurations x {seeds} seeds, study trials "
          f"{len(study.trials)} ({len(complete)} complete), 1 parent run")

"""Run a grid or random sweep without Ray: trials in local worker processes, on the CPU or one GPU.

For machines where Ray or a tracking server is not available (a lent GPU box, a compute node that cannot
reach the tracking server). With ``mlflow_uri`` the runs are logged live, as ``rims sweep run`` logs them;
without it the sweep is offline: every tracking operation goes to JSON-lines files under ``OUT/spill``
(``sweep.jsonl`` for the parent run, one file per trial), and ``rims tracking replay OUT/spill --mlflow-uri URI``
creates the same parent and nested runs, with the same names, later. Checkpoints go to
``OUT/trials/<trial_id>/state.pt`` (an RL trial's: the directory ``OUT/trials/<trial_id>/checkpoint``);
running the same command again resumes the unfinished trials.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .flat import config_id, resolve
from .keys import TAG_CONFIG, TAG_RUNNER, TAG_VARYING
from .outcome import COMPLETED, ERRORED, FAILED, STOPPED_EARLY, Outcome, Tally, closing
from .search import SEARCH_ALGORITHMS, search_algorithm
from .space import trial_points, varying_keys
from .spec import SpecError, SweepSpec, smoke_spec, sweep_params
from .tracking import TrialTracker, absolute_tracking_uri, finish_sweep_run, open_sweep_run, run_name, sweep_tags
from .trial import CHECKPOINT_FILE, StopTrial, run_trial

__all__ = ["LocalResult", "run_local"]

RESULT_FILE = "result.json"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHECKPOINT_DIR = "checkpoint"  # an RL trial's checkpoint (a directory), beside the supervised state.pt




@dataclass
class LocalResult:
    sweep_id: str
    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    experiment: str = ""
    experiment_id: str = ""  # with a tracking store (empty offline)
    parent_run_id: str = ""
    previously_done: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> its result, not rerun
    # trial id -> {"trial_id", "status" (its outcome), "error", "last" (its last report's metrics)}, every trial
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _store_dir(src: Path, final: Path) -> None:
    """Replace the directory checkpoint ``final`` with a copy of src (an RL trial's checkpoint is a directory).
    Copied under a temporary name first; the previous one is renamed aside until the new one is in place, so a
    kill at any point leaves a whole checkpoint under final or final.old (_stored_dir finds it)."""
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _stored_dir(final: Path) -> Path | None:
    """The directory checkpoint _store_dir left: final, or final.old after a kill between the two renames."""
    for path in (final, final.with_name(final.name + ".old")):
        if (path / CHECKPOINT_FILE).exists():
            return path
    return None


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the sweep's process ends, however it ends (SIGKILL included).
    Otherwise a killed ``rims sweep local`` leaves its trials running as orphans, which go on to start the
    trials still queued and write into the same trial folders as the rerun that resumes the sweep. Linux only
    (prctl); elsewhere workers outlive a killed driver."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the driver died before the line above took effect
        os._exit(1)


def _trial(config: dict[str, Any], ctx: dict[str, Any], trial_id: str, directory: str,
           stop: tuple[str | None, float | None, str], deadline: float | None,
           progress: str | None = None) -> dict[str, Any]:
    """One trial in a worker process: resumes from directory/state.pt, writes the checkpoint of each report
    there (atomically: copied to a temporary name, then renamed) and the outcome to result.json. It stops at
    the first report where the stopping rule holds or the sweep's time budget (deadline, epoch s) is spent."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    last: dict[str, float] = {}
    metric, threshold, mode = stop

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        last.clear()
        last.update(metrics)
        if progress is not None and progress in metrics:  # one line per report: long trials show they are alive
            print(f"trial {trial_id}: step {int(metrics.get('step', 0))}  {progress}={metrics[progress]:.4g}",
                  flush=True)
        if checkpoint_dir is not None and [p.name for p in checkpoint_dir.iterdir()] == [CHECKPOINT_FILE]:
            shutil.copy2(checkpoint_dir / CHECKPOINT_FILE, out / (CHECKPOINT_FILE + ".tmp"))
            os.replace(out / (CHECKPOINT_FILE + ".tmp"), out / CHECKPOINT_FILE)
        elif checkpoint_dir is not None:
            _store_dir(checkpoint_dir, out / CHECKPOINT_DIR)
        if metrics.get("failed"):  # the trial failed and closed its run: it is over, whatever the rules say
            return
        value = metrics.get(metric) if metric else None
        if value is not None and (value <= threshold if mode == "min" else value >= threshold):
            raise StopTrial
        if deadline is not None and time.time() >= deadline:
            raise StopTrial

    ckpt = out if (out / CHECKPOINT_FILE).exists() else _stored_dir(out / CHECKPOINT_DIR)
    status: Outcome = COMPLETED
    error = None
    try:
        run_trial(config, ctx, trial_id=trial_id, checkpoint_dir=ckpt, report=report)
        if last.get("failed"):
            status = FAILED
    except StopTrial:
        status = STOPPED_EARLY
    except Exception as e:
        status, error = ERRORED, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    result = {"trial_id": trial_id, "status": status, "error": error, "last": last}
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def run_local(spec: SweepSpec, spec_text: str, out: str | Path, *, jobs: int = 1, device: str | None = None,
              mlflow_uri: str | None = None, smoke: bool = False, tracking: bool = True) -> LocalResult:
    """Run every trial of a grid / random spec in up to ``jobs`` processes; resumable (same out).

    Tracking: live to ``mlflow_uri``; without it offline (spill files under ``out/spill``); ``tracking=False``:
    none at all (no run, no spill file: a smoke run such as ``rims demo``)."""
    algorithm = search_algorithm(spec.search.algorithm)
    if not algorithm.local or spec.scheduler.name != "none":
        local = " and ".join(a.name for a in SEARCH_ALGORITHMS.values() if a.local)
        raise SpecError([("search.algorithm" if not algorithm.local else "scheduler.name",
                          f"the local runner runs {local} searches without a scheduler; use "
                          "`rims sweep run` (Ray Tune) for Optuna or ASHA")])
    if mlflow_uri and not tracking:
        raise ValueError(f"run_local: mlflow_uri={mlflow_uri!r} asks for tracking but tracking=False; pass one or "
                         "the other")
    if smoke:
        spec = smoke_spec(spec)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "sweep.json"
    uri = absolute_tracking_uri(mlflow_uri) if mlflow_uri else None
    spill_dir = out / "spill" if tracking else None
    experiment = spec.experiment or spec.name
    if state_file.exists():
        state = json.loads(state_file.read_text())
    else:
        tags = {**sweep_tags(), TAG_RUNNER: "local", TAG_VARYING: ",".join(varying_keys(spec))}
        params = sweep_params(spec, smoke)
        state = {"sweep_id": f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}", "tags": tags, "params": params,
                 "spec": yaml.safe_load(spec_text) if spec_text else None, "experiment": experiment}
        experiment_id, parent = open_sweep_run(uri, experiment, state["sweep_id"], params, tags, spec_text,
                                               spill_dir / "sweep.jsonl" if spill_dir else None)
        if uri:
            state["parent_run_id"], state["experiment_id"] = parent, experiment_id
        state_file.write_text(json.dumps(state, indent=2))
    sweep_id = state["sweep_id"]
    cpus = max(1, (os.cpu_count() or 1) // max(1, jobs)) if not spec.resources.cpu else spec.resources.cpu
    ctx = {"tracking_uri": uri, "experiment_id": state.get("experiment_id", ""), "experiment": experiment,
           "parent_run_id": state.get("parent_run_id", ""), "sweep_id": sweep_id, "seeds": spec.seed_list,
           "tags": state["tags"], "cpus": cpus, "gpus": 1 if device and device.startswith("cuda") else 0,
           "spill_dir": str(spill_dir) if spill_dir else None, "device": device, "triton": spec.resources.triton,
           "cuda_graph": spec.resources.cuda_graph, "recompute": spec.resources.recompute}
    stop = (spec.stop.metric, spec.stop.threshold, spec.stop.mode)
    deadline = time.time() + spec.stop.time_budget_s if spec.stop.time_budget_s else None
    trials = [(f"{i:05d}", p) for i, p in enumerate(trial_points(spec))]
    varying = [k for k in state["tags"].get(TAG_VARYING, "").split(",") if k]
    names = {tid: run_name(resolve(p), varying) if TAG_VARYING in state["tags"] else tid for tid, p in trials}
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for tid, point in trials:
        done = out / "trials" / tid / RESULT_FILE
        if done.exists() and json.loads(done.read_text())["status"] != ERRORED:
            results[tid] = json.loads(done.read_text())
        else:
            todo.append((tid, point))
    # seed-major: all configurations at the first seed, then at the next, so that a sweep interrupted part-way
    # leaves every configuration with the same seeds (trial ids keep the spec's order: resuming is unaffected)
    rank = {s: i for i, s in enumerate(spec.seed_list)}
    todo.sort(key=lambda t: (rank.get(t[1]["seed"], 0), t[0]))
    before = dict(results)
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_trial, point, ctx, tid, str(out / "trials" / tid), stop, deadline,
                               spec.objective[0] if jobs == 1 else None)
                   for tid, point in todo]
        for fut in as_completed(futures):
            res = fut.result()
            results[res["trial_id"]] = res
            print(f"trial {res['trial_id']} ({names[res['trial_id']]}): {res['status']}"
                  + (f" ({res['error']})" if res["error"] else "")
                  + "".join(f"  {k}={v:.4g}" for k, v in res["last"].items() if k == spec.objective[0]), flush=True)
    return _finish(spec, results, ctx, LocalResult(sweep_id, out, experiment=experiment,
                                                   experiment_id=ctx["experiment_id"],
                                                   parent_run_id=ctx["parent_run_id"], previously_done=before))


def _finish(spec: SweepSpec, results: dict[str, dict[str, Any]], ctx: dict[str, Any],
            result: LocalResult) -> LocalResult:
    """Close the runs of trials that did not close their own (stopped, errored), then the parent run."""
    tally = Tally()
    points = {f"{i:05d}": p for i, p in enumerate(trial_points(spec))}
    tracked = ctx["tracking_uri"] is not None or ctx["spill_dir"] is not None
    for tid, res in sorted(results.items()):
        tally.add(tid, res["status"], res["error"])
        close = closing(res["status"], res["error"])
        if close is None or not tracked:
            continue
        flat = resolve(points[tid])
        tracker = TrialTracker(ctx["tracking_uri"], ctx["experiment_id"], ctx["parent_run_id"], ctx["sweep_id"],
                               tid, flat, {**ctx["tags"], TAG_CONFIG: config_id(flat)},
                               experiment=ctx["experiment"], spill_dir=ctx["spill_dir"])
        tags, status = close
        tracker.set_tags(tags)
        tracker.finish(status)
    result.counts, result.failures, result.results = tally.counts, tally.failures, results
    finish_sweep_run(tally.summary, tally.status, uri=ctx["tracking_uri"], experiment=ctx["experiment"],
                     run_id=ctx["parent_run_id"],
                     spill_file=Path(ctx["spill_dir"]) / "sweep.jsonl" if ctx["spill_dir"] else None)
    return result

"""Run a validated spec on Ray Tune, tracked in MLflow.

Order matters: the spec is validated before this module is called; here Ray starts (or is joined), the
cluster is checked against the spec (resources, a local tracking store with remote nodes) before any MLflow
run exists, then the parent run is created and Tune runs the trials.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Repeater
from ray.tune.search.optuna import OptunaSearch
from ray.tune.trainable import wrap_function

from .keys import TAG_CONFIG, TAG_FAILURE, TAG_SEED, TAG_SUPERSEDED_BY, TAG_SWEEP, TAG_TRIAL, TAG_VARYING
from .outcome import ERRORED, FAILED, Tally, closing, tune_outcome
from .progress import SweepProgress, TrialName, trial_dirname
from .search import search_algorithm
from .space import optuna_space, trial_points, varying_keys
from .spec import SpecError, SweepSpec, preflight_errors, smoke_spec, sweep_params
from .tracking import SweepTracker, absolute_tracking_uri, finish_sweep_run, is_local_uri, sweep_tags
from .trainable import train_trial

__all__ = ["SweepResult", "check_cluster", "optuna_storage", "run_sweep", "trial_runs"]

OPTUNA_DB = "optuna.db"


@dataclass
class SweepResult:
    sweep_id: str
    path: Path
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    study: tuple[str, str] | None = None  # Optuna: (storage URL, study name), for optuna-dashboard


def optuna_storage(path: Path) -> str:
    """The storage URL of the Optuna study of the sweep whose results are in path (the study is named after
    the spec): what ``optuna-dashboard`` and ``optuna.load_study`` open."""
    return f"sqlite:///{Path(path).resolve() / OPTUNA_DB}"


def check_cluster(spec: SweepSpec, tracking_uri: str) -> None:
    """Refuse what the connected cluster cannot do, before any trial or MLflow run exists."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    errors = []
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    for res, amount in need.items():
        most = max((n["Resources"].get(res, 0.0) for n in nodes), default=0.0)
        if amount > most:
            errors.append((f"resources.{res.lower()}", f"a trial asks for {amount} {res} but the largest node has "
                                                       f"{most}; lower it or add a node that has it"))
    if len(nodes) > 1 and is_local_uri(tracking_uri):
        errors.append(("--mlflow-uri", f"the cluster has {len(nodes)} nodes but the tracking store {tracking_uri} "
                                       "is local to this machine; start `mlflow server --host <head address> "
                                       "--port 5000 ...` and pass --mlflow-uri http://<head address>:5000"))
    if errors:
        raise SpecError(errors)


def _sweep_dir(storage: Path, name: str, resume: bool) -> Path:
    """The results folder: the newest NAME[-k] when resuming, else a fresh one (never overwrite a sweep)."""
    existing = sorted((p for p in storage.glob(f"{name}*") if (p / "sweep.json").exists()
                       and (p.name == name or p.name[len(name) + 1:].isdigit())), key=lambda p: p.stat().st_mtime)
    if resume:
        if not existing:
            raise SpecError([("--resume", f"no sweep named {name!r} under {storage} to resume")])
        return existing[-1]
    path, k = storage / name, 1
    while path.exists():
        k += 1
        path = storage / f"{name}-{k}"
    return path


def run_sweep(spec: SweepSpec, spec_text: str, *, address: str | None = None, mlflow_uri: str | None = None,
              storage_path: str | Path | None = None, resume: bool = False, smoke: bool = False,
              quiet: bool = False, verbose: bool = False, spec_path: str | Path | None = None,
              preflight: bool = True) -> SweepResult:
    """Run (or resume) a sweep; returns where its results and runs are, with trial counts by status.

    Progress: by default a line when trial statuses change and the table of every trial at the end (see
    SweepProgress); verbose: the table each time, and Ray's and the trials' INFO logs; quiet: nothing.
    preflight: run the task's checks of this machine first (False when load_spec(preflight=True) ran them).
    The git sha and dirty flag are those of the working directory the sweep is submitted from (or, outside a
    repository, of the spec file's), never of a job's copy of it."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's newer output has no columns for our dotted keys
    if smoke:
        spec = smoke_spec(spec)
    if preflight and (errors := preflight_errors(spec)):
        raise SpecError(errors)
    uri = absolute_tracking_uri(mlflow_uri)
    storage = Path(storage_path or "ray_results").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    path = _sweep_dir(storage, spec.name, resume)
    if not ray.is_initialized():
        level = "ERROR" if quiet else "INFO" if verbose else "WARNING"
        # no --address: a new local instance (RAY_ADDRESS, if set, as Ray reads it), never a cluster that some
        # other process happens to run on this machine (plain ray.init() would join it)
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 log_to_driver=not quiet, configure_logging=not quiet, logging_level=level,
                 runtime_env=None if verbose else {"worker_process_setup_hook": "sweeps.progress.quiet_worker_logs"})
    check_cluster(spec, uri)

    metric, mode = spec.objective
    experiment = spec.experiment or spec.name
    sweeper = SweepTracker(uri, experiment)
    if resume:
        state = json.loads((path / "sweep.json").read_text())
        sweep_id, parent = state["sweep_id"], state["parent_run_id"]
    else:
        sweep_id = f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {**sweep_tags(spec_path), TAG_VARYING: ",".join(varying_keys(spec))}
        params = sweep_params(spec, smoke)
        parent = sweeper.start(sweep_id, params, tags, spec_text)
        path.mkdir(parents=True)
        (path / "sweep.json").write_text(json.dumps({"sweep_id": sweep_id, "parent_run_id": parent, "tags": tags,
                                                     "spec": yaml.safe_load(spec_text) if spec_text else None,
                                                     "smoke": smoke}, indent=2))
    tags = json.loads((path / "sweep.json").read_text())["tags"]
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "experiment": experiment,
           "parent_run_id": parent, "sweep_id": sweep_id, "seeds": spec.seed_list, "tags": tags,
           "cpus": spec.resources.cpu, "gpus": spec.resources.gpu, "spill_dir": str(path / "tracking_spill"),
           "triton": spec.resources.triton, "cuda_graph": spec.resources.cuda_graph,
           "recompute": spec.resources.recompute}
    trainable = tune.with_resources(_exiting(wrap_function(tune.with_parameters(train_trial, ctx=ctx))),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    grid_like = search_algorithm(spec.search.algorithm).expanded  # else a searcher suggests (Optuna)
    run_config = tune.RunConfig(
        name=path.name, storage_path=str(storage), verbose=0 if quiet else 1,
        progress_reporter=None if quiet else SweepProgress(varying_keys(spec), grid_like, metric, mode, verbose),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    if resume and tune.Tuner.can_restore(str(path)):
        # the same param_space: trials the searcher had not generated yet when the driver died need it
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=_param_space(spec))
    else:
        tuner = _new_tuner(spec, trainable, run_config, metric, mode, path)
    grid = tuner.fit()
    result = SweepResult(sweep_id, path, parent, uri, sweeper.experiment_id,
                         study=None if grid_like else (optuna_storage(path), spec.name))
    return _finish(spec, grid, sweeper, result, experiment)


def _exiting(base: type) -> type:
    """The trainable, ending its actor itself when Tune stops it.

    Tune stops a trial's actor (at the end of the sweep, or when it leaves the cache of reused actors) by calling
    its stop() and then removing its placement group, whereupon the raylet SIGTERMs the process. stop() returns
    at once while the trial's thread may still be closing its MLflow run (a trial stopped early leaves through
    an exception at its last report), and a SIGTERM that lands while Python code runs ends the worker with a
    "SystemExit: 1" traceback in the driver's output. Here stop() waits for the trial's thread (its tracking
    operations are sent or spilled, not cut off) and then exits the actor as Ray's own __ray_terminate__ does:
    the process is gone, cleanly, before its placement group is removed."""

    class SweepTrial(base):
        def cleanup(self) -> None:
            from ray.train._internal.session import get_session

            thread = getattr(get_session(), "training_thread", None)
            super().cleanup()  # tells the trial's thread to stop at its next report, returns at once
            if thread is not None and thread.is_alive():
                thread.join(timeout=float(os.environ.get("RIMS_TRIAL_STOP_TIMEOUT_S", 120)))

        def stop(self) -> None:
            super().stop()
            ray.actor.exit_actor()

    SweepTrial.__name__ = SweepTrial.__qualname__ = base.__name__  # Tune names trials and folders after it
    return SweepTrial


def _new_tuner(spec: SweepSpec, trainable: Any, run_config: tune.RunConfig, metric: str, mode: str,
               path: Path) -> tune.Tuner:
    expanded = search_algorithm(spec.search.algorithm).expanded
    if not expanded:  # Optuna, the one searcher: suggests configurations as results arrive
        storage = optuna.storages.RDBStorage(optuna_storage(path))
        searcher = OptunaSearch(space=optuna_space(spec), metric=metric, mode=mode, storage=storage,
                                study_name=spec.name, seed=spec.search.seed)
        seeds = len(spec.seed_list)
        search_alg = Repeater(searcher, repeat=seeds, set_index=True)
        if spec.max_concurrent:
            search_alg = ConcurrencyLimiter(search_alg, max_concurrent=spec.max_concurrent)
        param_space = _param_space(spec)
        num_samples = spec.search.num_samples * seeds
    else:
        param_space = _param_space(spec)
        # the generator limits itself: Tune ignores max_concurrent_trials for a SearchGenerator (it warns)
        search_alg = BasicVariantGenerator(max_concurrent=spec.max_concurrent or 0)
        num_samples = 1  # one pass over the grid of trials
    scheduler = None
    if spec.scheduler.name == "asha":
        scheduler = ASHAScheduler(metric=metric, mode=mode, time_attr="training_iteration",
                                  max_t=spec.task_cls.reports(spec.task_settings(), spec.optim.model_dump()),
                                  grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                  max_concurrent_trials=None if expanded else (spec.max_concurrent or None),
                                  reuse_actors=True,
                                  time_budget_s=spec.stop.time_budget_s,
                                  trial_name_creator=TrialName(varying_keys(spec), spec.seed_list),
                                  trial_dirname_creator=trial_dirname)
    if spec.stop.metric is not None:
        run_config.stop = ThresholdStopper(spec.stop.metric, spec.stop.threshold, spec.stop.mode)
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


class ThresholdStopper(tune.Stopper):
    """Stop a trial once ``metric`` reaches ``threshold`` (<= for min, >= for max); picklable for resume."""

    def __init__(self, metric: str, threshold: float, mode: str) -> None:
        self.metric, self.threshold, self.mode = metric, threshold, mode

    def __call__(self, trial_id: str, result: dict) -> bool:
        value = result.get(self.metric)
        if value is None:
            return False
        return value <= self.threshold if self.mode == "min" else value >= self.threshold

    def stop_all(self) -> bool:
        return False


def _param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's param_space. Optuna suggests into an empty one. For grid / random every trial is one flat config
    from our expansion, given to Tune as one grid over whole configs under the key ``trial`` (the trainable
    unwraps it): Tune's own resolution never sees our dotted keys, which keeps a restored sweep able to
    generate the trials it had not started (points_to_evaluate over dotted keys failed there)."""
    if not search_algorithm(spec.search.algorithm).expanded:
        return {}
    return {"trial": tune.grid_search(trial_points(spec))}


def _finish(spec: SweepSpec, grid: Any, sweeper: SweepTracker, result: SweepResult, experiment: str
            ) -> SweepResult:
    """Close every trial's MLflow run by its Tune outcome and the sweep's parent run with a summary."""
    client = sweeper.client
    tally = Tally()
    runs = trial_runs(client, result.experiment_id, result.sweep_id)
    for res in grid:
        trial_id = res.metrics.get("trial_id") if res.metrics else None
        run = runs.get(trial_id)
        outcome = tune_outcome(res.error, res.metrics, spec.optim.max_steps)
        reason = None
        if outcome == ERRORED:
            # the trial's own account (its run's failure tag) first; else the error's last line, which names the
            # exception (the first is Ray's "ray::ImplicitFunc.train() (pid=...)" header)
            lines = [ln for ln in str(res.error).splitlines() if ln.strip()]
            reason = (run.data.tags.get(TAG_FAILURE) if run else None) or (lines[-1] if lines else repr(res.error))
        elif outcome == FAILED:  # the trial closed its run, tagged with the reason
            reason = run.data.tags.get(TAG_FAILURE, "failed") if run else "failed"
        tally.add(trial_id, outcome, reason[:300] if outcome == ERRORED else reason)
        close = closing(outcome, reason)
        if run and close:
            tags, status = close
            # errored: only a run the trial left open is closed (a trial that raised closed its own, tagged);
            # stopped early (by the scheduler): its last report stands, marked as such
            if outcome != ERRORED or run.info.status == "RUNNING":
                for k, v in tags.items():
                    client.set_tag(run.info.run_id, k, v)
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status)
    _close_orphans(client, runs, {res.metrics.get("trial_id") for res in grid if res.metrics})
    result.counts, result.failures = tally.counts, tally.failures
    finish_sweep_run(tally.summary, tally.status, uri=result.tracking_uri, experiment=experiment,
                     run_id=result.parent_run_id, spill_file=None)
    return result


def trial_runs(client: Any, experiment_id: str, sweep_id: str) -> dict[str, Any]:
    """The sweep's trial runs by trial id. The parent run carries the sweep's tag too, but no trial id: it is
    never one of them (it is still RUNNING while the trials are closed, and must not be taken for an orphan)."""
    runs = client.search_runs([experiment_id], max_results=10000, filter_string=(
        f"tags.`{TAG_SWEEP}` = '{sweep_id}' and tags.`{TAG_TRIAL}` != ''"))
    return {r.data.tags[TAG_TRIAL]: r for r in runs if r.data.tags.get(TAG_TRIAL)}


def _close_orphans(client: Any, runs: dict[str, Any], known: set[str]) -> None:
    """Runs left RUNNING by trials Tune no longer knows: the driver died after the trial started and before
    Tune's next experiment checkpoint, so the restored searcher generated that configuration and seed again
    under a new trial id. The orphan is closed as KILLED (tables count FINISHED runs only) and points to the
    run that replaced it."""
    for trial_id, run in runs.items():
        if trial_id in known or run.info.status != "RUNNING":
            continue
        twin = next((r for t, r in runs.items() if t in known and r.data.tags.get(TAG_CONFIG) ==
                     run.data.tags.get(TAG_CONFIG) and r.data.tags.get(TAG_SEED) ==
                     run.data.tags.get(TAG_SEED)), None)
        client.set_tag(run.info.run_id, TAG_FAILURE, "interrupted with the driver; "
                       + (f"restarted as trial {twin.data.tags[TAG_TRIAL]} (run {twin.info.run_id})"
                          if twin else "not restarted"))
        if twin:
            client.set_tag(run.info.run_id, TAG_SUPERSEDED_BY, twin.info.run_id)
        client.set_terminated(run.info.run_id, "KILLED")

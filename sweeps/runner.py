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

from .space import optuna_space, trial_points
from .spec import SpecError, SweepSpec, smoke_spec, sweep_params
from .tracking import SweepTracker, absolute_tracking_uri, is_local_uri, sweep_tags
from .trainable import train_trial

__all__ = ["SweepResult", "check_cluster", "run_sweep"]


@dataclass
class SweepResult:
    sweep_id: str
    path: Path
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


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
    errors += spec.task_cls.preflight(spec.task_settings())
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
              quiet: bool = False, spec_path: str | Path | None = None) -> SweepResult:
    """Run (or resume) a sweep; returns where its results and runs are, with trial counts by status.

    The git sha and dirty flag are those of the working directory the sweep is submitted from (or, outside a
    repository, of the spec file's), never of a job's copy of it."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if smoke:
        spec = smoke_spec(spec)
    uri = absolute_tracking_uri(mlflow_uri)
    storage = Path(storage_path or "ray_results").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    path = _sweep_dir(storage, spec.name, resume)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
                 configure_logging=not quiet, logging_level="ERROR" if quiet else "INFO")
    check_cluster(spec, uri)

    metric, mode = spec.objective
    experiment = spec.experiment or spec.name
    sweeper = SweepTracker(uri, experiment)
    if resume:
        state = json.loads((path / "sweep.json").read_text())
        sweep_id, parent = state["sweep_id"], state["parent_run_id"]
    else:
        sweep_id = f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = sweep_tags(spec_path)
        params = sweep_params(spec, smoke)
        parent = sweeper.start(sweep_id, params, tags, spec_text)
        path.mkdir(parents=True)
        (path / "sweep.json").write_text(json.dumps({"sweep_id": sweep_id, "parent_run_id": parent, "tags": tags,
                                                     "spec": yaml.safe_load(spec_text) if spec_text else None,
                                                     "smoke": smoke}, indent=2))
    tags = json.loads((path / "sweep.json").read_text())["tags"]
    ctx = {"tracking_uri": uri, "experiment_id": sweeper.experiment_id, "experiment": experiment,
           "parent_run_id": parent, "sweep_id": sweep_id, "seeds": spec.seed_list, "tags": tags,
           "cpus": spec.resources.cpu, "gpus": spec.resources.gpu, "spill_dir": str(path / "tracking_spill")}
    trainable = tune.with_resources(tune.with_parameters(train_trial, ctx=ctx),
                                    {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    run_config = tune.RunConfig(
        name=path.name, storage_path=str(storage), verbose=0 if quiet else 1,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
    if resume and tune.Tuner.can_restore(str(path)):
        # the same param_space: trials the searcher had not generated yet when the driver died need it
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=_param_space(spec))
    else:
        tuner = _new_tuner(spec, trainable, run_config, metric, mode, path)
    grid = tuner.fit()
    return _finish(spec, grid, sweeper, SweepResult(sweep_id, path, parent, uri, sweeper.experiment_id))


def _new_tuner(spec: SweepSpec, trainable: Any, run_config: tune.RunConfig, metric: str, mode: str,
               path: Path) -> tune.Tuner:
    if spec.search.algorithm == "optuna":
        storage = optuna.storages.RDBStorage(f"sqlite:///{path / 'optuna.db'}")
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
                                  max_concurrent_trials=(spec.max_concurrent or None) if spec.search.algorithm
                                  == "optuna" else None, reuse_actors=True,
                                  time_budget_s=spec.stop.time_budget_s)
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
    if spec.search.algorithm == "optuna":
        return {}
    return {"trial": tune.grid_search(trial_points(spec))}


def _finish(spec: SweepSpec, grid: Any, sweeper: SweepTracker, result: SweepResult) -> SweepResult:
    """Close every trial's MLflow run by its Tune outcome and the sweep's parent run with a summary."""
    client = sweeper.client
    counts = {"trials": 0, "completed": 0, "stopped_early": 0, "failed": 0, "errored": 0}
    runs = {r.data.tags.get("rims.trial_id"): r for r in client.search_runs(
        [result.experiment_id], filter_string=f"tags.`rims.sweep_id` = '{result.sweep_id}'", max_results=10000)}
    for res in grid:
        counts["trials"] += 1
        trial_id = res.metrics.get("trial_id") if res.metrics else None
        run = runs.get(trial_id)
        if res.error is not None:
            counts["errored"] += 1
            # the trial's own account (its run's failure tag) first; else the error's last line, which names the
            # exception (the first is Ray's "ray::ImplicitFunc.train() (pid=...)" header)
            lines = [ln for ln in str(res.error).splitlines() if ln.strip()]
            reason = (run.data.tags.get("rims.failure") if run else None) or (lines[-1] if lines else repr(res.error))
            result.failures.append(f"{trial_id}: {reason[:300]}")
            if run and run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, "rims.failure", reason[:500])
                client.set_terminated(run.info.run_id, "FAILED")
        elif res.metrics and res.metrics.get("failed"):
            counts["failed"] += 1
            reason = run.data.tags.get("rims.failure", "failed") if run else "failed"
            result.failures.append(f"{trial_id}: {reason}")
        elif res.metrics and res.metrics.get("step", 0) < spec.optim.max_steps:
            counts["stopped_early"] += 1  # by the scheduler: its last report stands, marked as such
            if run:
                client.set_tag(run.info.run_id, "rims.stopped_early", "true")
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, "FINISHED")
        else:
            counts["completed"] += 1
    _close_orphans(client, runs, {res.metrics.get("trial_id") for res in grid if res.metrics})
    result.counts = counts
    sweeper.finish(result.parent_run_id, {"counts": counts, "failures": result.failures},
                   "FAILED" if counts["trials"] and counts["errored"] == counts["trials"] else "FINISHED")
    return result


def _close_orphans(client: Any, runs: dict[str, Any], known: set[str]) -> None:
    """Runs left RUNNING by trials Tune no longer knows: the driver died after the trial started and before
    Tune's next experiment checkpoint, so the restored searcher generated that configuration and seed again
    under a new trial id. The orphan is closed as KILLED (tables count FINISHED runs only) and points to the
    run that replaced it."""
    for trial_id, run in runs.items():
        if trial_id in known or run.info.status != "RUNNING":
            continue
        twin = next((r for t, r in runs.items() if t in known and r.data.tags.get("rims.config_id") ==
                     run.data.tags.get("rims.config_id") and r.data.tags.get("rims.seed") ==
                     run.data.tags.get("rims.seed")), None)
        client.set_tag(run.info.run_id, "rims.failure", "interrupted with the driver; "
                       + (f"restarted as trial {twin.data.tags['rims.trial_id']} (run {twin.info.run_id})"
                          if twin else "not restarted"))
        if twin:
            client.set_tag(run.info.run_id, "rims.superseded_by", twin.info.run_id)
        client.set_terminated(run.info.run_id, "KILLED")

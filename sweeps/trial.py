"""The trial: a pure function of its resolved config and its checkpoint (no Ray here: see trainable.py for
Tune's wrapper, local.py for the runner without Ray).

Builds task and model from the flat config, trains with Adam and gradient clipping (and optim.lr_schedule),
evaluates every ``optim.eval_every`` steps, then writes a checkpoint (model, optimiser, schedule, RNG states,
step; written atomically), logs the report to MLflow in one batch and hands it to Tune. Restarted from a
checkpoint it continues the same run: same batches, same dropout masks, the same MLflow run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rims_core import RIM, GraphedRIM, count_parameters, enable_triton, install_graphs, macs_per_step, set_recompute
from rims_core.errors import NonFiniteLossError

from .flat import config_id, nest, resolve
from .keys import TAG_CONFIG, TAG_CUDA_GRAPH, TAG_DEVICE, TAG_FAILURE, TAG_NODE, TAG_TRITON
from .outcome import STOPPED_EARLY, closing, failed_report
from .tasks import build_task
from .tasks.base import RLTask, recurrent_core
from .tracking import NullTracker, TrialTracker

__all__ = ["CHECKPOINT_FILE", "StopTrial", "load_checkpoint", "run_trial", "save_checkpoint"]

CHECKPOINT_FILE = "state.pt"


class StopTrial(BaseException):
    """Raised by a report callback when a stopping rule ends the trial (the local runner's stop rule and time
    budget). run_trial closes the run FINISHED, tagged rims.stopped_early=true, and lets it propagate; a
    BaseException, so that no handler of errors takes the stop for a failure."""


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Atomic: written to a temporary name, flushed to disk, then renamed over the final name; a write that
    fails (disk full) or is killed leaves the previous checkpoint in place, and only the final name is read."""
    final, tmp = directory / CHECKPOINT_FILE, directory / (CHECKPOINT_FILE + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)  # the rename itself survives a crash
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The checkpoint at directory/state.pt (tensors and plain types only: weights_only). Only the final name is
    ever read; a torn file there (it cannot come from save_checkpoint) is refused with its path."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]  # an empty file's EOFError has no message
        raise ValueError(f"checkpoint {path} is unreadable ({why}); it was not written "
                         "by save_checkpoint or was damaged after it") from None


def run_trial(config: dict[str, Any], ctx: dict[str, Any], *, trial_id: str, checkpoint_dir: Path | None,
              report: Callable[[dict[str, float], Path | None], None]) -> None:
    """Train one trial from its config (and its last checkpoint, if any), reporting every eval_every steps.

    ctx: tracking_uri, experiment_id, experiment, parent_run_id, sweep_id, seeds, tags, cpus, gpus, spill_dir,
    device, triton (resources.triton; default true), cuda_graph (resources.cuda_graph; default false), recompute
    (resources.recompute; default false).
    tracking_uri None: offline (operations to the spill file) when spill_dir is given, else off.
    report(metrics, checkpoint_dir) is called with a directory that holds the checkpoint of that report.

    Outcomes (sweeps.outcome): returns after its last report, the run FINISHED; StopTrial raised by ``report``
    (a stopping rule) closes the run FINISHED, tagged rims.stopped_early=true, and propagates; a non-finite loss
    (supervised, or NonFiniteLossError from an RL algorithm) ends it FAILED with the reason in rims.failure and a
    last report ``{"failed": 1, "step": ...}``, and it returns: a sure failure, which a retry would only repeat
    (same seed, same batches); any other exception also closes the run FAILED, and is raised (Tune may retry it).
    """
    flat = dict(config.get("trial", config))  # grid / random: the whole flat config under "trial"
    if "__trial_index__" in flat:  # Optuna + Repeater: the repeat index picks the seed
        flat["seed"] = ctx["seeds"][flat["__trial_index__"]]
    flat = resolve(flat)
    seed = int(flat["seed"])
    # one torch thread per trial, whatever its cpus (Ray sets OMP threads, not torch's pool): with 2 threads a
    # step collapses whenever a core is busy (RIM hidden 600: 14x slower); scale out with trials instead
    torch.set_num_threads(1)
    device = torch.device(ctx.get("device") or (
        "cuda" if torch.cuda.is_available() and ctx.get("gpus", 0) > 0 else "cpu"))

    tracker = NullTracker() if ctx.get("tracking_uri") is None and not ctx.get("spill_dir") else TrialTracker(
        ctx.get("tracking_uri"), ctx.get("experiment_id", ""), ctx.get("parent_run_id", ""), ctx["sweep_id"],
        trial_id, flat, {**ctx.get("tags", {}), TAG_CONFIG: config_id(flat), TAG_DEVICE: str(device)},
        experiment=ctx.get("experiment"), spill_dir=ctx.get("spill_dir"))
    ray = sys.modules.get("ray")  # under Tune: the node the trial runs on
    node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"
    tracker.set_tags({TAG_NODE: node})  # where the trial (last) ran: a restart elsewhere updates it
    reported = {"step": 0}

    def report_step(metrics: dict[str, float], directory: Path | None) -> None:
        reported["step"] = int(metrics.get("step", reported["step"]))
        report(metrics, directory)

    try:
        _setup_and_train(flat, seed, device, checkpoint_dir, tracker, report_step, ctx.get("triton", True),
                         ctx.get("cuda_graph", False), ctx.get("recompute", False))
    except NonFiniteLossError as e:  # a sure failure: the run says why, and the failed report ends the trial
        tracker.set_tags({TAG_FAILURE: str(e)[:500]})
        tracker.finish("FAILED")
        # the error's step when it carries one (else the last report's): where training stopped
        report(failed_report(int(e.step if e.step is not None else reported["step"])), None)
    except Exception as e:  # the run says why (Tune may still retry it: a retry reopens the same run)
        tracker.set_tags({TAG_FAILURE: f"{type(e).__name__}: {e}"[:500]})
        tracker.finish("FAILED")
        raise
    except StopTrial:  # its last report stands: closed now, not when the sweep ends (which may never come)
        tags, status = closing(STOPPED_EARLY)
        tracker.set_tags(tags)
        tracker.finish(status)
        raise
    except BaseException:
        tracker.close()  # stopped: what was logged but not yet sent is kept, not lost
        raise


def _setup_and_train(flat: dict[str, Any], seed: int, device: torch.device, checkpoint_dir: Path | None,
                     tracker: Any, report: Callable[[dict[str, float], Path | None], None],
                     triton: bool = True, cuda_graph: bool = False, recompute: bool = False) -> None:
    task = build_task(flat, device)
    optim = nest(flat, "optim")
    if isinstance(task, RLTask):  # trained by its RL algorithm; checkpoints are directories (state.pt + its own)
        task.train(optim, seed, checkpoint_dir, tracker.log, report, save_checkpoint, load_checkpoint,
                   triton=triton, cuda_graph=cuda_graph, recompute=recompute, set_tags=tracker.set_tags)
        tracker.finish("FINISHED")
        return
    torch.manual_seed(seed)
    model = task.build_model()
    set_recompute(model, recompute)  # resources.recompute: the RIM cells keep less for backward (no other model)
    # the Triton step on CUDA, after its check against the torch step (the check leaves the RNG state as it was)
    status = enable_triton(model, device, triton)
    if status is not None:
        tracker.set_tags({TAG_TRITON: status})
    graphs = _graphs(model, device) if cuda_graph else None
    opt = torch.optim.Adam(model.parameters(), lr=optim["lr"])
    schedule = _lr_schedule(opt, optim, task.objective[1])
    gen = torch.Generator().manual_seed(seed)
    step = 0
    if checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if schedule is not None and "lr_schedule" in state:
            schedule.load_state_dict(state["lr_schedule"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
    if step == 0:
        tracker.log({"model/num_params": count_parameters(model),
                     "model/macs_per_step": macs_per_step(recurrent_core(model))}, 0)
    _train(task, model, opt, schedule, gen, step, optim, tracker, report, _precision(optim, device, graphs is None),
           graphs)


def _lr_schedule(opt: torch.optim.Optimizer, optim: dict[str, Any],
                 mode: str) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """optim.lr_schedule 'plateau': ReduceLROnPlateau on the task's objective, stepped once per evaluation (its
    patience counts evaluations); 'constant' (or a config from before the setting existed): None."""
    if optim.get("lr_schedule", "constant") == "constant":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=optim["plateau_factor"],
                                                      patience=optim["plateau_patience"])


#: what captures the graphs of resources.cuda_graph on a CPU device: None (the default) installs none there.
#: Tests set a stand-in for torch.cuda.make_graphed_callables (tests/sweeps/test_trial_graphs.py).
CPU_GRAPH_CAPTURE: Callable[..., Any] | None = None
#: the same for the evaluations' graphs (no grad): a stand-in for rims_core.graphs.cuda_graph_inference
CPU_INFERENCE_CAPTURE: Callable[..., Any] | None = None


def _graphs(model: torch.nn.Module, device: torch.device) -> GraphedRIM | None:
    """resources.cuda_graph: whole-sequence graphs for the model's RIM core on CUDA, for its training steps and
    its evaluations (None: no RIM core, or CPU)."""
    core = recurrent_core(model)
    if not isinstance(core, RIM) or (device.type != "cuda" and CPU_GRAPH_CAPTURE is None):
        return None
    cpu = device.type != "cuda"
    return install_graphs(core, capture=CPU_GRAPH_CAPTURE if cpu else None,
                          capture_inference=CPU_INFERENCE_CAPTURE if cpu else None)


def _precision(optim: dict[str, Any], device: torch.device,
               cache: bool = True) -> Callable[[], contextlib.AbstractContextManager]:
    """optim.precision as a context factory: 'bf16' autocasts to bfloat16 on the device (cache False: without
    autocast's weight cache, which CUDA graphs refuse); 'fp32' (or a config from before the setting existed)
    changes nothing."""
    if optim.get("precision", "fp32") == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def _train(task: Any, model: torch.nn.Module, opt: torch.optim.Optimizer,
           schedule: torch.optim.lr_scheduler.ReduceLROnPlateau | None, gen: torch.Generator, step: int,
           optim: dict[str, Any], tracker: Any, report: Callable[[dict[str, float], Path | None], None],
           precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
           graphs: GraphedRIM | None = None) -> None:
    max_steps, every = optim["max_steps"], optim["eval_every"]
    sums: dict[str, float] = {}
    n, t0 = 0, time.perf_counter()
    batch = None
    graph_tag = None  # the rims.cuda_graph tag last set (a failed capture says why)
    while step < max_steps:
        model.train()
        batch = task.sample_batch(optim["batch_size"], gen)
        with precision():  # the forward only: backward outside autocast, as torch recommends
            loss, train_m = task.loss(model, batch)
        step += 1
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {step}", step=step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
        opt.step()
        for k, v in train_m.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        if step % every == 0 or step == max_steps:
            elapsed = time.perf_counter() - t0
            model.eval()
            with torch.no_grad(), precision():
                metrics = {f"train/{k}": v / n for k, v in sums.items()}
                metrics.update(task.evaluate(model))
                metrics.update(task.selection_stats(model, batch))
            metrics["sys/steps_per_s"] = n / elapsed
            if graphs is not None and graphs.summary != graph_tag:  # how the graphs fared so far, when it changed
                graph_tag = graphs.summary
                tracker.set_tags({TAG_CUDA_GRAPH: graph_tag})
            metrics["train/lr"] = opt.param_groups[0]["lr"]  # the rate these steps trained with
            metrics["step"] = step
            if schedule is not None:  # after logging the rate used: the drop applies to the next steps
                schedule.step(metrics[task.objective[0]])
            with tempfile.TemporaryDirectory() as d:
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                         "torch_rng": torch.get_rng_state(), "step": step}
                if schedule is not None:
                    state["lr_schedule"] = schedule.state_dict()
                save_checkpoint(Path(d), state)
                tracker.log(metrics, step)
                if step == max_steps:
                    tracker.artifact(Path(d) / CHECKPOINT_FILE)
                report({**metrics, "failed": 0.0}, Path(d))
            sums, n, t0 = {}, 0, time.perf_counter()
    tracker.finish("FINISHED")

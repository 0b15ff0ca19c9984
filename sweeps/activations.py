"""Which RIM units a finished trial's model activates, step by step, as numpy arrays for analysis' unit figures.

analysis draws the figures (analysis/units.py) from arrays and never loads a model: the CLI passes
:func:`unit_activations` to ``analysis.report.build_report`` (``unit_activations=functools.partial(
unit_activations, tracking_uri=uri)``), as rllib_models' train_ppo gets its save and load functions.

Legend: N sequences, T steps, K units, S = layers x directions of the RIM core.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from rims_core.rim import RIM

from .evaluate import load_trial
from .tasks.copying import make_batch

__all__ = ["trace_activity", "unit_activations"]


def trace_activity(model: nn.Module, inputs: Tensor, layer: int = 0) -> np.ndarray:
    """Run model(inputs) once (eval mode, no grad) with a trace hook on its RIM core ``model.rnn`` and return
    which unit was active at each step: (N, T, K) bool, for ``layer`` (an index into the trace's S = layers x
    directions; 0 is the first layer's forward direction). Several core calls in one forward are joined in time.
    The model's training mode is restored afterwards.
    """
    core = getattr(model, "rnn", None)
    if not isinstance(core, RIM):
        raise ValueError(f"unit activity needs a RIM recurrent core at model.rnn, got {type(core).__name__}")
    seen: list[Tensor] = []
    handle = core.register_trace_hook(lambda _m, tr: seen.append(tr.active.detach().cpu()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise RuntimeError("unit activity: the model's forward did not call model.rnn")
    active = torch.cat(seen, dim=1) if len(seen) > 1 else seen[0]  # (S, T, N, K)
    if active.dim() == 3:  # unbatched input: (S, T, K)
        active = active.unsqueeze(2)
    if not 0 <= layer < active.shape[0]:
        raise ValueError(f"unit activity: layer {layer} out of range; the trace has {active.shape[0]} "
                         "(layers x directions)")
    return active[layer].permute(1, 0, 2).contiguous().numpy()  # (N, T, K)


def unit_activations(run_id: str, n: int, *, tracking_uri: str, seed: int = 0,
                     layer: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished copying trial's unit activity on ``n`` fixed sequences at its training blank span.

    Loads the run's trained model (``sweeps.evaluate.load_trial``: config.json and the final checkpoint from
    MLflow), draws n sequences with ``make_batch`` (generator seeded with ``seed``; the trial's task.blank and
    task.num_symbols) and traces them. Returns (tokens (N, T) int64: the input token of each step, active
    (N, T, K) bool: :func:`trace_activity` of ``layer``), or None when the run's model has no RIM core (a
    baseline). tracking_uri: an absolute tracking URI (sweeps.tracking.absolute_tracking_uri).

    Raises ValueError when the run cannot be loaded (unknown run, no final checkpoint) or is not a copying trial
    (only copying's inputs are token sequences).
    """
    if n < 1:
        raise ValueError(f"unit_activations: n is the number of sequences, expected n >= 1, got {n}")
    try:
        task, model, _ = load_trial(run_id, tracking_uri)
    except ValueError as e:
        raise ValueError(f"unit_activations: {e}") from None
    if not isinstance(getattr(model, "rnn", None), RIM):
        return None
    if task.name != "copying":
        raise ValueError(f"unit_activations: run {run_id} is a {task.name!r} trial; unit activations are traced on "
                         "copying trials only (their inputs are token sequences)")
    x, _ = make_batch(n, task.settings.blank, torch.Generator().manual_seed(seed),
                      num_symbols=task.settings.num_symbols)  # (N, T)
    return x.numpy(), trace_activity(model, x, layer)

"""Which RIM units are active when, and for which input symbol: figures drawn from arrays (no model, no torch).

The arrays come from a caller-given provider (``sweeps.activations.unit_activations`` runs a trained trial's model
with the RIM's trace hook); the report takes that provider as an argument, so analysis never loads a model.

Legend: N sequences, T steps, K units, V distinct input symbols.
- active (N, T, K) bool: whether unit k was active (selected) at step t of sequence n;
- tokens (N, T) int: the input token of each step (copying: 1-8 symbols, 0 blank, 9 the marker).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .canvas import PlotFiles, new_figure, save

__all__ = ["MAX_EXAMPLES", "activation_by_symbol", "activation_heatmap", "symbol_frequency"]

MAX_EXAMPLES = 4  # panels of the activation heatmap


def _check(active: Any, tokens: Any | None, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """active as (N, T, K) bool and tokens as (N, T) int64 (or None), or ValueError naming the shapes."""
    act = np.asarray(active)
    if act.ndim != 3:
        raise ValueError(f"{what}: active must be (N, T, K) (sequences, steps, units), got shape {act.shape}")
    act = act.astype(bool)
    if tokens is None:
        return act, None
    tok = np.asarray(tokens)
    if tok.shape != act.shape[:2]:
        raise ValueError(f"{what}: tokens must be (N, T) = {act.shape[:2]} like active, got {tok.shape}")
    return act, tok.astype(np.int64)


def activation_heatmap(active: Any, out_dir: str | Path, name: str = "unit_activation", tokens: Any | None = None
                       ) -> PlotFiles:
    """Which unit is active at each step (units x steps, dark = active) for the first (up to 4) sequences of
    ``active`` (N, T, K), one panel per sequence; the input token of each step (``tokens`` (N, T)) labels the x
    axis when given. The title gives the number of units active per step (top_k) of K.

    Writes ``<out_dir>/<name>.png/.svg``. ``data["active"]``: the (n, K, T) bool matrices drawn.
    """
    act, tok = _check(active, tokens, "activation_heatmap")
    act = act[:MAX_EXAMPLES]
    tok = tok[:MAX_EXAMPLES] if tok is not None else None
    drawn = np.ascontiguousarray(act.transpose(0, 2, 1))  # (n, K, T)
    n, K, L = drawn.shape
    top_k = int(act.sum(axis=-1).max()) if act.size else 0  # top-k selection: the same count at every step
    fig = new_figure(min(max(6.0, 0.14 * L + 2), 24.0), 0.9 + n * (0.8 + 0.25 * K))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        ax.imshow(drawn[i].astype(np.float64), aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
        ax.set_yticks(range(K))
        ax.set_ylabel("unit")
        ax.set_title(f"example {i}", fontsize="small", loc="left")
        every = max(1, math.ceil(L / 60))
        ticks = list(range(0, L, every))
        ax.set_xticks(ticks)
        if tok is not None:
            ax.set_xticklabels([str(int(tok[i, t])) for t in ticks], fontsize="x-small")
        else:
            ax.tick_params(axis="x", labelsize="x-small")
    axes[-1].set_xlabel("input token per step" if tok is not None else "step")
    fig.suptitle(f"active units (top_k={top_k} of {K})")
    return save(fig, out_dir, name, {"active": drawn})


def symbol_frequency(active: Any, tokens: Any) -> tuple[list[int], np.ndarray, np.ndarray]:
    """active (N, T, K) bool, tokens (N, T) -> (symbols seen, sorted; freq (K, V): the fraction of the steps
    with input symbol v at which unit k was active; count (V,): steps per symbol)."""
    act, tok = _check(active, tokens, "symbol_frequency")
    flat = act.reshape(-1, act.shape[2]).astype(np.float64)  # (N*T, K)
    tok = tok.reshape(-1)
    symbols = sorted(int(s) for s in np.unique(tok))
    freq = np.stack([flat[tok == s].mean(axis=0) for s in symbols], axis=1)
    count = np.asarray([(tok == s).sum() for s in symbols])
    return symbols, freq, count


def activation_by_symbol(active: Any, tokens: Any, out_dir: str | Path, name: str = "activation_by_symbol"
                         ) -> PlotFiles:
    """How often each unit is active when the input symbol is v (units x symbols heatmap over every sequence of
    ``active`` (N, T, K); tokens (N, T) give each step's symbol): does a unit fire for particular inputs? Each
    column sums to top_k under top-k selection.

    Writes ``<out_dir>/<name>.png/.svg``. ``data``: {"symbols", "frequency" (K, V), "count" (V,)}.
    """
    symbols, freq, count = symbol_frequency(active, tokens)
    K, V = freq.shape
    fig = new_figure(max(4.0, 0.6 * V + 2.5), max(3.0, 0.45 * K + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(freq, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1)
    if K * V <= 400:
        for k in range(K):
            for j in range(V):
                ax.text(j, k, f"{freq[k, j]:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if freq[k, j] < 0.5 else "black")
    ax.set_xticks(range(V))
    ax.set_xticklabels([str(s) for s in symbols])
    ax.set_yticks(range(K))
    ax.set_xlabel("input symbol")
    ax.set_ylabel("unit")
    ax.set_title("P(unit active | input symbol)")
    fig.colorbar(im, ax=ax, label="activation frequency")
    return save(fig, out_dir, name, {"symbols": symbols, "frequency": freq, "count": count})

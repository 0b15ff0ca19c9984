"""Figures from the exported tables (see analysis/schema.py) and from unit-activity arrays.

Every plotting function writes ``<out_dir>/<name>.png`` and ``<out_dir>/<name>.svg`` and returns a
:class:`PlotFiles`: the list of the two paths, which also carries the figure (``.figure``) and the numbers
drawn (``.data``) for checks and further use. Figures are built on matplotlib's Agg canvas directly (no
pyplot, no global figure state, no display needed).

- :func:`learning_curves`: a metric's history, mean over seeds per group with a 95% t-interval band.
- :func:`ood_curves`: ``eval/<metric>_<condition>`` against the condition's number (blank200 -> 200).
- :func:`activation_heatmap`, :func:`activation_by_symbol`: which RIM units are active, per step and per
  input symbol, from (N, T, K) active masks (``sweeps.activations.unit_activations`` traces a trained model).
- :func:`param_importance`: Optuna's fANOVA importance of the params for an objective.

The code lives in canvas.py (files, labels), curves.py, units.py and importance.py, re-exported here.
"""

from __future__ import annotations

from .canvas import PlotFiles
from .curves import MAX_POINTS, downsample_minmax, eval_conditions, learning_curves, ood_curves, parse_condition
from .importance import param_importance
from .units import activation_by_symbol, activation_heatmap, symbol_frequency

__all__ = [
    "MAX_POINTS",
    "PlotFiles",
    "activation_by_symbol",
    "activation_heatmap",
    "downsample_minmax",
    "eval_conditions",
    "learning_curves",
    "ood_curves",
    "param_importance",
    "parse_condition",
    "symbol_frequency",
]

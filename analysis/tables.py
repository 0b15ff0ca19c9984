"""Ablation tables from the exported runs table (runs.parquet; layout in schema.py): mean and CI over seeds.

- :func:`ablation_table`: one row per configuration (runs that differ only in ``seed``), one column per metric,
  ``mean ± CI half-width`` with n, a last row with each column's chance level where the task defines one
  (analysis.metrics); Markdown, LaTeX (booktabs) and CSV.
- :func:`paper_table`: the RIMs paper's Table 1 layout (model, k_T, k_A, h, train CE, test CE) from a copying sweep.
- :func:`paired_comparisons`: every configuration against a baseline: difference of means, permutation p
  (paired by seed where the two share seeds), effect size.

What the n supports (stats.MIN_N = 3): a cell with fewer values gives its mean and n, no interval; a column marks
a best group only where every group has >= 3 values and the best group's interval is clear of every other's and
of chance (:func:`best_supported`); a comparison prints p only where p < 0.05 is attainable and an effect size
only with >= 3 values a side.

Only child runs (``parent_run_id`` not null: trials, not sweep parents) whose status is FINISHED count; the others
are excluded and counted in a note. Runs stopped early by a scheduler are FINISHED and included by default (their
last report stands), flagged in a note.

The code lives in small modules, re-exported here: selection.py (which runs and columns), ablation.py (building
the table), rendering.py (Cell, AblationTable and its Markdown/LaTeX/CSV renderers), paper.py (Table 1 layout),
comparisons.py (against a baseline).
"""

from __future__ import annotations

from .ablation import ablation_table, best_supported, per_run_table
from .comparisons import Comparison, ComparisonTable, paired_comparisons
from .paper import paper_table
from .rendering import AblationTable, Cell
from .selection import CORE_KEYS, metric_direction

__all__ = [
    "CORE_KEYS",
    "AblationTable",
    "Cell",
    "Comparison",
    "ComparisonTable",
    "ablation_table",
    "best_supported",
    "metric_direction",
    "paired_comparisons",
    "paper_table",
    "per_run_table",
]

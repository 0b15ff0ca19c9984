"""The RIMs paper's Table 1 layout (model, k_T, k_A, h, train CE, test CE) from a copying sweep."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal

import pyarrow as pa

from .ablation import build_ablation
from .rendering import AblationTable
from .selection import CI, CORE_KEYS, Stat, select_finished, table_layout

__all__ = ["paper_table"]

_KIND_ORDER = {"rims": 0, "lstm": 1, "gru": 2, "transformer": 3, "rmc": 4}
_KIND_LABELS = {"rims": "RIMs", "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer", "rmc": "RMC"}


def paper_table(runs: pa.Table, which: Literal["ce", "ce_all"] = "ce", stat: Stat = "final", ci: CI = "t",
                level: float = 0.95, include_stopped_early: bool = True) -> AblationTable:
    """The RIMs paper's Table 1 from a copying sweep: model (RIMs / LSTM / GRU), k_T (model.num_units), k_A
    (model.top_k; blank for baselines), h (model.hidden_size), n, then train CE at the training blank
    (``eval/<which>_blank<task.blank>``, else ``val/<which>``) and test CE at every other evaluated blank.

    which: "ce" = mean cross-entropy over the recall positions (task.num_symbols, 10 by default; what the model is
    trained on); "ce_all" = over every position, the official script's definition (the one the paper's numbers
    use). Rows: RIMs first
    (k_T, then k_A descending), then LSTM, GRU by h.
    """
    if which not in ("ce", "ce_all"):
        raise ValueError(f"which: expected 'ce' or 'ce_all', got {which!r}")
    layout = table_layout(runs)
    for r in ("model.kind", "model.hidden_size"):
        if r not in runs.column_names:
            raise ValueError(f"paper_table: expected column {r!r}; param columns in the table: {layout.params}")
    sel, notes = select_finished(runs, include_stopped_early)
    if "task.name" in sel.column_names:
        names = {n for n in sel["task.name"].to_pylist() if n is not None}
        if names - {"copying"}:
            raise ValueError(f"paper_table: expected runs of the copying task, got task.name {sorted(names)}")
    for r in CORE_KEYS:
        if r not in sel.column_names:  # a baselines-only sweep has no RIM columns
            sel = sel.append_column(r, pa.nulls(sel.num_rows, pa.int64()))
    blanks = sorted({b for b in sel["task.blank"].to_pylist() if b is not None}) if "task.blank" in sel.column_names \
        else []
    if len(blanks) > 1:
        raise ValueError(f"paper_table: runs trained at several blank spans {blanks}; filter the table to one")
    train = f"eval/{which}_blank{blanks[0]}" if blanks else None
    if train not in layout.metrics:
        train = f"val/{which}"
        if train not in layout.metrics:
            raise ValueError(f"paper_table: no train metric (eval/{which}_blank<task.blank> or val/{which}); metrics "
                             f"in the table: {layout.metrics}")
    pat = re.compile(rf"^eval/{which}_blank(\d+)$")
    tests = sorted((int(mt.group(1)), m) for m in layout.metrics if (mt := pat.match(m))
                    and (not blanks or int(mt.group(1)) != blanks[0]))
    name = "CE" if which == "ce" else "CE_all"
    at = f" ({blanks[0]})" if blanks else ""
    labels = {train: f"train {name}{at}", **{m: f"test {name} ({b})" for b, m in tests}}
    notes.append("CE: mean cross-entropy over the recall positions" if which == "ce" else
                 "CE_all: mean cross-entropy over every position (the official RIMs script's definition)")
    tab = build_ablation(sel, list(CORE_KEYS), [train, *(m for _, m in tests)], stat, ci, level, notes, 10_000, 0)
    order = sorted(range(len(tab.keys)), key=lambda i: (
        _KIND_ORDER.get(tab.keys[i][0], len(_KIND_ORDER)), str(tab.keys[i][0]), -(tab.keys[i][1] or 0),
        -(tab.keys[i][2] or 0),
        tab.keys[i][3] or 0))
    pos = {old: new for new, old in enumerate(order)}
    return replace(
        tab, keys=[tab.keys[i] for i in order], n=[tab.n[i] for i in order], seeds=[tab.seeds[i] for i in order],
        cells={m: [c[i] for i in order] for m, c in tab.cells.items()},
        best={m: sorted(pos[i] for i in b) for m, b in tab.best.items()},
        row_labels={"model.kind": "model", "model.num_units": "k_T", "model.top_k": "k_A", "model.hidden_size": "h"},
        metric_labels=labels, value_labels={"model.kind": _KIND_LABELS}, missing="")

"""analysis.tables on a fixed synthetic runs table (the layout of runs.parquet, schema.py)."""

from __future__ import annotations

import csv
import io
import math
import re
import statistics

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats as sps

from analysis.tables import (
    CORE_KEYS,
    ablation_table,
    metric_direction,
    paired_comparisons,
    paper_table,
    per_run_table,
)

T975 = {2: 4.302652729911275, 3: 3.182446305284263, 1: 12.706204736174698}  # t_{0.975, df}

# (kind, num_units, top_k) -> per seed (eval/ce_blank200, eval/acc_blank200); best ce: rims 6/4, best acc: rims 6/2
GROUPS = {
    ("rims", 6, 4): [(0.1, 0.5), (0.2, 0.6), (0.3, 0.7)],
    ("rims", 6, 2): [(1.0, 0.9), (1.2, 0.8), (1.1, 0.85)],
    ("lstm", None, None): [(2.0, 0.2), (2.3, 0.3), (2.1, 0.25)],
}


def _run(i, kind, nu, k, seed, ce, acc, *, status="FINISHED", parent="parent0", early=None):
    r = {"run_id": f"r{i}", "experiment_id": "1", "parent_run_id": parent, "run_name": f"trial{i}", "status": status,
         "start_time": None, "end_time": None,
         "model.kind": kind, "model.num_units": nu, "model.top_k": k, "model.hidden_size": 600, "optim.lr": 1e-3,
         "seed": seed, "task.name": "copying", "task.blank": 50, "task.test_blanks": "[200]",
         "rims.config_id": f"{kind}{nu}{k}", "rims.stopped_early": early}
    metrics = {"eval/ce_blank200": ce, "eval/ce_blank50": ce / 10, "eval/ce_all_blank200": ce / 2,
               "eval/ce_all_blank50": ce / 20, "eval/acc_blank200": acc, "val/ce": ce / 10, "train/ce": ce / 10,
               "model/num_params": 1000.0}
    for key, v in metrics.items():  # the history's min and max: min 0.1 below, max 0.05 above the final value
        r[key], r[f"{key}.min"], r[f"{key}.max"] = v, v - 0.1, v + 0.05
    return r


def make_runs(groups=GROUPS, seeds=None, extra=True) -> pa.Table:
    rows, i = [], 0
    for (kind, nu, k), vals in groups.items():
        for s, (ce, acc) in enumerate(vals):
            rows.append(_run(i, kind, nu, k, (seeds or {}).get((kind, nu, k), range(100))[s], ce, acc))
            i += 1
    if extra:
        rows.append(_run(i, "rims", 6, 4, 3, 50.0, 0.0, status="FAILED"))  # would wreck rims 6/4's means
        rows.append(_run(i + 1, "rims", 6, 4, None, 99.0, 1.0, parent=None))  # the sweep's parent run
        rows.append(_run(i + 2, "lstm", None, None, 3, 2.2, 0.25, early="true"))  # lstm's 4th seed, stopped early
    return pa.Table.from_pylist(rows)


def _half(values):
    return T975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def _index(tab, key):
    return tab.keys.index(key)


def test_defaults_pick_varying_model_columns_and_eval_plus_objective():
    tab = ablation_table(make_runs())
    assert tab.rows == ["model.kind", "model.num_units", "model.top_k"]  # hidden_size, lr, task.* are constant
    assert tab.metrics == ["eval/acc_blank200", "eval/ce_all_blank200", "eval/ce_all_blank50", "eval/ce_blank200",
                           "eval/ce_blank50", "val/ce"]
    assert tab.keys == [("lstm", None, None), ("rims", 6, 2), ("rims", 6, 4)]
    assert tab.n == [4, 3, 3] and tab.seeds[0] == [0, 1, 2, 3]


def test_numbers_equal_hand_computed_means_and_half_widths():
    tab = ablation_table(make_runs())
    for key, vals in GROUPS.items():
        ce = [v[0] for v in vals] + ([2.2] if key[0] == "lstm" else [])  # the stopped-early run counts by default
        cell = tab.cells["eval/ce_blank200"][_index(tab, key)]
        assert cell.mean == pytest.approx(statistics.mean(ce), rel=1e-12)
        assert cell.half_width == pytest.approx(_half(ce), rel=1e-9)
        assert cell.n == len(ce)
    assert tab.cells["eval/ce_blank200"][0].mean == pytest.approx(2.15)
    assert tab.columns["eval/ce_blank200"] == "eval/ce_blank200"


def test_best_is_marked_only_where_the_intervals_support_it():
    tab = ablation_table(make_runs())
    # ce of rims 6/4: [-0.05, 0.45], clear of rims 6/2 [0.85, 1.35], the LSTM and chance (ln 8): marked
    assert tab.best["eval/ce_blank200"] == [_index(tab, ("rims", 6, 4))]
    # acc of rims 6/2 has the highest mean, 0.85 [0.73, 0.97], but rims 6/4 reaches 0.85 [0.35, 0.85]: not marked
    assert tab.best["eval/acc_blank200"] == []
    assert tab.directions["eval/acc_blank200"] == "max" and tab.directions["val/ce"] == "min"
    assert metric_direction("eval/ce_all_blank200") == "min" and metric_direction("eval/acc_res24") == "max"
    assert metric_direction("val/rollout_bce") == "min" and metric_direction("model/num_params") is None
    assert metric_direction("eval/success_rate_novel4") == "max" and metric_direction("eval/episode_len_mean") is None
    md = tab.to_markdown()
    assert "**0.200 ± 0.248**" in md  # ce of rims 6/4: sd 0.1, 3 seeds
    assert "| 0.850 ± 0.124 |" in md and "| 0.600 ± 0.248 |" in md  # acc: neither bold
    assert any(s.startswith("no best marked (intervals overlap): ") and "eval/acc_blank200" in s for s in tab.notes)
    assert "bold: the best mean of a column, only where every group has >= 3 values" in tab.header()


def test_no_best_for_groups_at_chance():
    # every group's recall CE above chance (ln 8 = 2.079): the lowest is still no "best", however clear of the rest
    groups = {("rims", 6, 4): [(2.20, 0.1), (2.21, 0.1), (2.22, 0.1)],
              ("lstm", None, None): [(4.0, 0.1), (4.1, 0.1), (4.2, 0.1)]}
    tab = ablation_table(make_runs(groups, extra=False), metrics=["eval/ce_blank200", "eval/acc_blank200"])
    assert tab.chance["eval/ce_blank200"] == pytest.approx(math.log(8))
    assert tab.chance["eval/acc_blank200"] == pytest.approx(1 / 8)
    assert tab.best == {"eval/ce_blank200": [], "eval/acc_blank200": []}
    assert "no best marked (not clear of chance): eval/ce_blank200" in tab.notes
    assert "**" not in tab.to_markdown()
    # ce_all's chance level depends on the length: 10 ln 8 / (200 + 20) at blank 200, task.blank for val/
    tab = ablation_table(make_runs(groups, extra=False), metrics=["eval/ce_all_blank200", "eval/ce_all_blank50"])
    assert tab.chance["eval/ce_all_blank200"] == pytest.approx(10 * math.log(8) / 220)
    assert tab.chance["eval/ce_all_blank50"] == pytest.approx(10 * math.log(8) / 70)


def test_fewer_than_three_values_give_the_mean_and_no_interval():
    groups = {("rims", 6, 4): [(2.0797, 0.5), (2.0797, 0.6)], ("lstm", None, None): [(2.5, 0.2), (2.9, 0.3)]}
    for ci in ("t", "bootstrap"):
        tab = ablation_table(make_runs(groups, extra=False), metrics=["eval/ce_blank200"], ci=ci)
        cell = tab.cells["eval/ce_blank200"][_index(tab, ("rims", 6, 4))]
        assert cell.n == 2 and cell.mean == pytest.approx(2.0797) and math.isnan(cell.low) and math.isnan(cell.high)
        md = tab.to_markdown()
        # no cell has an interval: the header says so once, the cells give the means
        assert md.startswith("mean over seeds (no intervals: no cell has 3 or more values)")
        assert "| rims | 6 | 4 | 2 | 2.080 |" in md and "±" not in md
        assert "| chance level |  |  |  | 2.079 |" in md  # ln 8, the level to read recall CE against
        assert tab.best["eval/ce_blank200"] == [] and "**" not in md
        assert tab.warnings == ["n=2: too few seeds for an interval, a test or an effect size (needs n >= 3): "
                                "every group (2)"]
        row = next(r for r in csv.DictReader(io.StringIO(tab.to_csv())) if r["model.kind"] == "rims")
        assert row["eval/ce_blank200.low"] in ("", "nan") and row["eval/ce_blank200.n"] == "2"


def test_a_condition_evaluated_for_some_runs_only():
    # `rims eval RUN --set task.test_blanks=400` on one run: eval/ce_blank400 exists for that run only
    runs = make_runs(extra=False).to_pylist()
    runs[0].update({"eval/ce_blank400": 9.417, "eval/ce_blank400.min": 9.417, "eval/ce_blank400.max": 9.417})
    tab = ablation_table(pa.Table.from_pylist(runs), metrics=["eval/ce_blank200", "eval/ce_blank400"])
    i = _index(tab, (runs[0]["model.kind"], runs[0]["model.num_units"], runs[0]["model.top_k"]))
    assert tab.n[i] == 3 and tab.cells["eval/ce_blank400"][i].n == 1
    md = tab.to_markdown()
    assert "9.417 (n=1, no CI)" in md and "**9.417" not in md  # a single value is never "best"
    assert tab.best["eval/ce_blank400"] == []
    assert not any("n=0" in w or "no runs" in w for w in tab.warnings), tab.warnings  # the groups have 3 runs each
    assert any("eval/ce_blank400 (1 of 9 runs)" in s for s in tab.notes)
    assert tab.best["eval/ce_blank200"] == [_index(tab, ("rims", 6, 4))]  # the complete column is unaffected


def test_failed_parent_and_stopped_early_runs():
    tab = ablation_table(make_runs())
    assert sum(tab.n) == 10  # 9 + the stopped-early run; not the failed one, not the parent
    assert "note: excluded 1 child run not FINISHED (FAILED: 1)" in tab.lines()
    assert any("1 run stopped early" in s for s in tab.notes)
    without = ablation_table(make_runs(), include_stopped_early=False)
    assert without.n == [3, 3, 3]
    assert without.cells["eval/ce_blank200"][0].mean == pytest.approx(statistics.mean([2.0, 2.3, 2.1]))
    assert any("excluded 1 run stopped early" in s for s in without.notes)


def test_markdown_latex_csv_outputs():
    tab = ablation_table(make_runs(), metrics=["eval/ce_blank200", "eval/acc_blank200"])
    md = tab.to_markdown()
    assert md.startswith("mean ± 95% t-interval half-width over seeds; final value of each metric")
    assert "| model.kind | model.num_units | model.top_k | n | eval/ce_blank200 | eval/acc_blank200 |" in md
    assert "| lstm | - | - | 4 | 2.150 ± 0.205 | 0.250 ± 0.065 |" in md
    tex = tab.to_latex()
    for s in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lllrcc}", r"model.num\_units",
              r"\textbf{0.200 $\pm$ 0.248}", r"95\% t-interval", r"\caption{"):
        assert s in tex
    assert "±" not in tex
    rows = list(csv.DictReader(io.StringIO(tab.to_csv())))
    assert [r["model.kind"] for r in rows] == ["lstm", "rims", "rims"]
    assert rows[0]["model.top_k"] == "" and rows[2]["model.top_k"] == "4"
    r64 = rows[2]
    assert float(r64["eval/ce_blank200.mean"]) == pytest.approx(0.2)
    assert float(r64["eval/ce_blank200.high"]) - 0.2 == pytest.approx(_half([0.1, 0.2, 0.3]))
    assert r64["eval/ce_blank200.n"] == "3" and r64["eval/ce_blank200.best"] == "true"
    assert set(rows[0]) >= {"n", "eval/acc_blank200.low", "eval/acc_blank200.mean", "eval/acc_blank200.best"}


def test_warning_when_a_group_has_two_seeds():
    groups = {**GROUPS, ("rims", 6, 2): GROUPS[("rims", 6, 2)][:2]}
    tab = ablation_table(make_runs(groups), metrics=["eval/ce_blank200"])
    assert tab.warnings == ["n=2: too few seeds for an interval, a test or an effect size (needs n >= 3): "
                            "1 of 3 groups (model.kind=rims, model.num_units=6, model.top_k=2)"]
    md = tab.to_markdown()
    assert "- warning: n=2: too few seeds for an interval" in md
    assert "warning" not in tab.to_markdown(notes=False)
    cell = tab.cells["eval/ce_blank200"][_index(tab, ("rims", 6, 2))]
    assert cell.mean == pytest.approx(1.1) and math.isnan(cell.half_width)  # values 1.0, 1.2: no interval
    assert "| 1.100 (n=2, no CI) |" in md
    assert tab.best["eval/ce_blank200"] == []  # not every group has 3 values
    assert "warning" not in ablation_table(make_runs(), metrics=["eval/ce_blank200"]).to_markdown()


def test_stat_picks_min_max_best_columns():
    runs = make_runs()
    best = ablation_table(runs, metrics=["eval/ce_blank200", "eval/acc_blank200"], stat="best")
    assert best.columns == {"eval/ce_blank200": "eval/ce_blank200.min", "eval/acc_blank200": "eval/acc_blank200.max"}
    assert best.cells["eval/ce_blank200"][_index(best, ("rims", 6, 4))].mean == pytest.approx(0.1)  # 0.2 - 0.1
    assert best.cells["eval/acc_blank200"][_index(best, ("rims", 6, 2))].mean == pytest.approx(0.9)  # 0.85 + 0.05
    assert "eval/ce_blank200 (best)" in best.to_markdown()
    mx = ablation_table(runs, metrics=["eval/ce_blank200"], stat="max")
    assert mx.columns["eval/ce_blank200"] == "eval/ce_blank200.max"
    assert mx.cells["eval/ce_blank200"][0].mean == pytest.approx(2.2)
    with pytest.raises(ValueError, match="minimised or maximised"):
        ablation_table(runs, metrics=["model/num_params"], stat="best")


def test_bootstrap_ci_is_deterministic_and_stated():
    a = ablation_table(make_runs(), metrics=["eval/ce_blank200"], ci="bootstrap", n_boot=2000, seed=1)
    assert a.cells == ablation_table(make_runs(), metrics=["eval/ce_blank200"], ci="bootstrap", n_boot=2000,
                                     seed=1).cells
    c = a.cells["eval/ce_blank200"][2]
    assert 0.1 <= c.low <= c.mean <= c.high <= 0.3  # a percentile bootstrap stays inside the observed range
    md = a.to_markdown()
    assert "mean [95% percentile-bootstrap interval]" in md
    assert f"{c.mean:.3f} [{c.low:.3f}, {c.high:.3f}]" in md  # both ends: a bootstrap interval is not symmetric


def test_log_ci_stays_positive_for_skewed_cross_entropies():
    # three skewed CE values like the copying table's RIMs 6/4 (val CE 0.010, 0.036, 0.008): a t interval runs
    # below 0, the log interval does not, and is centred on the geometric mean
    skewed = {("rims", 6, 4): [(0.010, 0.9), (0.036, 0.9), (0.008, 0.9)], **dict(list(GROUPS.items())[1:])}
    runs = make_runs(skewed, extra=False)
    t = ablation_table(runs, metrics=["eval/ce_blank200"], ci="t")
    lg = ablation_table(runs, metrics=["eval/ce_blank200"], ci="log")
    i = _index(lg, ("rims", 6, 4))
    assert t.cells["eval/ce_blank200"][i].low < 0
    c = lg.cells["eval/ce_blank200"][i]
    logs = [math.log(v) for v in (0.010, 0.036, 0.008)]
    centre, half = statistics.mean(logs), _half(logs)
    assert c.mean == pytest.approx(math.exp(centre)) and c.mean < statistics.mean([0.010, 0.036, 0.008])
    assert (c.low, c.high) == pytest.approx((math.exp(centre - half), math.exp(centre + half)))
    assert 0 < c.low < c.mean < c.high
    md = lg.to_markdown()
    assert "geometric mean [95% t-interval of the mean log value, mapped back]" in md
    assert f"{c.mean:.3f} [{c.low:.3f}, {c.high:.3f}]" in md


def test_log_ci_refuses_a_metric_that_can_be_zero():
    zero = {("rims", 6, 4): [(0.1, 0.0), (0.2, 0.5), (0.3, 0.6)]}
    with pytest.raises(ValueError, match="method 'log' needs positive values"):
        ablation_table(make_runs(zero, extra=False), metrics=["eval/acc_blank200"], ci="log")


def test_explicit_rows_that_pool_configurations_say_so():
    tab = ablation_table(make_runs(), rows=["model.kind"], metrics=["eval/ce_blank200"])
    assert tab.keys == [("lstm",), ("rims",)] and tab.n == [4, 6]
    assert any("rows pool runs that differ in model.top_k" in s for s in tab.notes)


def test_paper_table_layout():
    tab = paper_table(make_runs())
    md = tab.to_markdown()
    assert "| model | k_T | k_A | h | n | train CE (50) | test CE (200) |" in md
    lines = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in lines] == ["| RIMs", "| RIMs", "| LSTM", "| chance level"]
    assert lines[3] == f"| chance level |  |  |  |  | {math.log(8):.3f} | {math.log(8):.3f} |"
    assert lines[0].startswith("| RIMs | 6 | 4 | 600 | 3 |") and lines[1].startswith("| RIMs | 6 | 2 | 600 | 3 |")
    assert lines[2].startswith("| LSTM |  |  | 600 | 4 |")  # k_T, k_A blank for the baseline
    assert tab.metrics == ["eval/ce_blank50", "eval/ce_blank200"]
    assert tab.cells["eval/ce_blank50"][0].mean == pytest.approx(0.02)
    assert any("CE: mean cross-entropy over the recall positions" in s for s in tab.notes)
    assert paper_table(make_runs(), which="ce_all").metrics == ["eval/ce_all_blank50", "eval/ce_all_blank200"]
    fallback = paper_table(make_runs().drop_columns(["eval/ce_blank50", "eval/ce_blank50.min", "eval/ce_blank50.max"]))
    assert fallback.metrics == ["val/ce", "eval/ce_blank200"]
    assert fallback.metric_labels["val/ce"] == "train CE (50)"


def test_unknown_names_list_what_exists():
    runs = make_runs()
    with pytest.raises(ValueError, match="unknown metric 'eval/nope'") as e:
        ablation_table(runs, metrics=["eval/nope"])
    assert "eval/ce_blank200" in str(e.value) and "val/ce" in str(e.value)
    with pytest.raises(ValueError, match=re.escape("pass the metric 'val/ce' and stat='min'")):
        ablation_table(runs, metrics=["val/ce.min"])
    with pytest.raises(ValueError, match=re.escape("unknown row key 'model.units'")) as e:
        ablation_table(runs, rows=["model.units"])
    assert "model.num_units" in str(e.value) and "eval/ce_blank200" not in str(e.value)


def test_empty_selection_errors():
    runs = make_runs()
    failed = runs.set_column(runs.schema.get_field_index("status"), "status", pa.array(["FAILED"] * runs.num_rows))
    with pytest.raises(ValueError, match="no finished child runs"):
        ablation_table(failed)
    only_parent = runs.filter(pa.compute.is_null(runs["parent_run_id"]))
    with pytest.raises(ValueError, match="no finished child runs"):
        ablation_table(only_parent)


def test_paired_comparisons_paired_by_seed():
    comp = paired_comparisons(make_runs(), {"model.kind": "lstm"}, "eval/ce_blank200")
    assert comp.baseline_key == ("lstm", None, None)
    by = {c.key: c for c in comp.comparisons}
    c = by[("rims", 6, 4)]
    d = np.array([0.1, 0.2, 0.3]) - np.array([2.0, 2.3, 2.1])  # shared seeds 0, 1, 2 (seed 3 only in lstm)
    assert c.paired and c.exact and c.n == 3 and c.n_baseline == 4
    assert c.diff == pytest.approx(d.mean())
    assert c.effect == pytest.approx(d.mean() / d.std(ddof=1)) and c.effect_name == "d_z"
    assert c.p == pytest.approx(0.25)  # every difference negative: 2 / 2^3
    assert c.warning is None
    md = comp.to_markdown()
    assert "paired by seed, exact" in md and "baseline: model.kind=lstm" in md
    assert any("cannot reach p < 0.05" in s and "their p is not shown" in s for s in comp.notes)
    # 3 pairs: p can never go below 0.25, so it is not printed; the effect size (3 pairs) is
    assert not c.p_supported and c.effect_supported
    row = next(ln for ln in md.splitlines() if ln.startswith("| rims | 6 | 4 |"))
    assert "n/a: min p 0.25" in row and f"d_z = {c.effect:.3g}" in row


def test_paired_comparisons_unpaired_when_seeds_differ_and_warns():
    groups = {**GROUPS, ("rims", 6, 2): GROUPS[("rims", 6, 2)][:2]}
    runs = make_runs(groups, seeds={("rims", 6, 2): [10, 11]}, extra=False)
    comp = paired_comparisons(runs, {"model.kind": "lstm"}, "eval/ce_blank200")
    c = {c.key: c for c in comp.comparisons}[("rims", 6, 2)]
    a, b = np.array([1.0, 1.2]), np.array([2.0, 2.3, 2.1])
    ref = sps.permutation_test((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
                               permutation_type="independent", n_resamples=np.inf, vectorized=True)
    assert not c.paired and c.effect_name == "g" and c.n == 2
    assert c.p == pytest.approx(ref.pvalue) and c.diff == pytest.approx(a.mean() - b.mean())
    assert c.warning == "n=2: too few seeds for an interval, a test or an effect size (needs n >= 3)"
    md = comp.to_markdown()
    assert "unpaired, exact" in md
    assert ("- warning: n=2: too few seeds for an interval, a test or an effect size (needs n >= 3): 1 of 2 "
            "comparisons (model.kind=rims, model.num_units=6, model.top_k=2)") in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| rims | 6 | 2 |"))
    assert "n/a: n=2" in row and "g = " not in row  # Hedges' g from 2 values is not printed


def test_comparison_warnings_are_listed_once_with_a_count():
    # every group with 2 seeds: one warning line for all comparisons, not one per comparison
    groups = {k: v[:2] for k, v in GROUPS.items()}
    comp = paired_comparisons(make_runs(groups, extra=False), {"model.kind": "lstm"}, "eval/ce_blank200")
    md = comp.to_markdown()
    assert md.count("- warning:") == 1
    assert "n=2: too few seeds for an interval, a test or an effect size (needs n >= 3): all 2 comparisons" in md
    assert md.count("n/a: min p 0.5") == 2 and "d_z =" not in md


def test_paired_comparisons_baseline_must_pick_one_group():
    with pytest.raises(ValueError, match=re.escape("matches: model.kind=rims, model.num_units=6, model.top_k=2; ")):
        paired_comparisons(make_runs(), {"model.kind": "rims"}, "eval/ce_blank200")
    with pytest.raises(ValueError, match="matches: none"):
        paired_comparisons(make_runs(), {"model.kind": "gru"}, "eval/ce_blank200")
    with pytest.raises(ValueError, match=re.escape("unknown row key 'model.kin'")):
        paired_comparisons(make_runs(), {"model.kin": "lstm"}, "eval/ce_blank200")


def test_default_metrics_end_with_each_task_objective():
    """The objective comes from sweeps.keys.TASK_KEYS (the tasks' own, checked in test_metrics.py): a copying table
    without eval/* metrics defaults to val/ce, an smnist one to val/acc, not to the other val/* metrics."""
    for task, objective in (("copying", "val/ce"), ("smnist", "val/acc")):
        rows = [{"run_id": f"r{s}", "parent_run_id": "p", "status": "FINISHED", "model.kind": "lstm", "seed": s,
                 "task.name": task, **{f"val/{m}{x}": 1.0 + s for m in ("ce", "acc") for x in ("", ".min", ".max")}}
                for s in range(3)]
        assert ablation_table(pa.Table.from_pylist(rows)).metrics == [objective]


def test_the_paper_layout_groups_by_the_core_keys():
    tab = paper_table(make_runs())
    assert tuple(tab.rows) == CORE_KEYS == ("model.kind", "model.num_units", "model.top_k", "model.hidden_size")


def test_one_group_has_no_best():
    runs = make_runs()
    tab = ablation_table(runs.filter(pa.compute.equal(runs["model.kind"], "lstm")), metrics=["val/ce"])
    assert tab.rows == [] and tab.keys == [()] and tab.best == {"val/ce": []}
    assert "in 1 group;" not in tab.header() and "4 finished child runs in 1 group" in tab.header()
    assert "**" not in tab.to_markdown()


def test_rim_only_keys_constant_among_rims_are_not_default_rows():
    import pyarrow as pa

    from analysis.tables import ablation_table

    rows = []
    for kind, top_k in (("rims", 2), ("rims", 4), ("lstm", None)):
        for seed in range(3):
            rows.append({"run_id": f"{kind}{top_k}{seed}", "parent_run_id": "p", "status": "FINISHED",
                         "model.kind": kind, "model.top_k": top_k, "model.cell": "lstm" if kind == "rims" else None,
                         "model.comm.heads": 4 if kind == "rims" else None, "seed": seed,
                         "eval/ce_blank200": 1.0 + seed, "eval/ce_blank200.min": 1.0 + seed,
                         "eval/ce_blank200.max": 2.0 + seed})
    table = ablation_table(pa.Table.from_pylist(rows))
    assert table.rows == ["model.kind", "model.top_k"]  # model.cell / comm.heads: null for LSTM, constant for RIMs


def test_per_run_table_holds_the_values_behind_the_means():
    runs = make_runs()
    per = per_run_table(runs, metrics=["eval/ce_blank200"])
    agg = ablation_table(runs, metrics=["eval/ce_blank200"])
    assert per.column_names == ["run_id", "model.kind", "model.num_units", "model.top_k", "seed", "eval/ce_blank200"]
    assert per.num_rows == 10, "finished child runs only: not the FAILED run, not the parent"
    for key, cell in zip(agg.keys, agg.cells["eval/ce_blank200"], strict=True):
        vals = [r["eval/ce_blank200"] for r in per.to_pylist()
                if (r["model.kind"], r["model.num_units"], r["model.top_k"]) == key]
        assert cell.mean == pytest.approx(statistics.mean(vals))
    best = per_run_table(runs, metrics=["eval/ce_blank200"], stat="best")
    assert best["eval/ce_blank200"].to_pylist() == pytest.approx([v - 0.1 for v in per["eval/ce_blank200"].to_pylist()])


def test_accuracy_intervals_are_clipped_to_zero_one_and_say_so():
    groups = {("rims", 6, 4): [(0.1, 0.75), (0.2, 0.95), (0.3, 1.0)], ("lstm", None, None): [(2.0, 0.2), (2.3, 0.3),
                                                                                               (2.1, 0.25)]}
    tab = ablation_table(make_runs(groups, extra=False), metrics=["eval/ce_blank200", "eval/acc_blank200"])
    acc = tab.cells["eval/acc_blank200"]
    half = T975[2] * statistics.stdev([0.75, 0.95, 1.0]) / math.sqrt(3)
    assert acc[1].mean == pytest.approx(0.9) and acc[1].low == pytest.approx(0.9 - half) and acc[1].high == 1.0
    assert acc[0].high - acc[0].mean == pytest.approx(acc[0].mean - acc[0].low)  # the lstm's: inside, untouched
    md = tab.to_markdown()
    assert f"| rims | 6 | 4 | 3 | **0.200 ± 0.248** | **0.900 [{0.9 - half:.3f}, 1.000]** |" in md  # no ±: clipped
    assert "| lstm | - | - | 3 | 2.133 ± 0.379 | 0.250 ± 0.124 |" in md
    assert "intervals that leave [0, 1] clipped to it, shown as [low, high] (eval/acc_blank200)" in tab.header()
    percent = {k: [(ce, 100 * a) for ce, a in v] for k, v in groups.items()}  # an accuracy logged in percent
    tab = ablation_table(make_runs(percent, extra=False), metrics=["eval/acc_blank200"])
    assert tab.cells["eval/acc_blank200"][1].high > 100 and "clipped" not in tab.header()
    assert ablation_table(make_runs(extra=False), metrics=["eval/acc_blank200"]).header().startswith(
        "mean ± 95% t-interval half-width over seeds; final value")  # nothing to clip: no note

"""Plots from synthetic exported tables (the analysis/schema.py layout) and from unit-activity arrays (the
tracing of real models that produces them: tests/sweeps/test_activations.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.collections import PolyCollection

from analysis.plots import (
    activation_by_symbol,
    activation_heatmap,
    downsample_minmax,
    eval_conditions,
    learning_curves,
    ood_curves,
    param_importance,
    parse_condition,
    symbol_frequency,
)

UNITS = (4, 6, 8)  # the three groups
SEEDS = (0, 1, 2)
BLANKS = (50, 100, 200)
LONG_UNITS = 4  # this group's val/ce histories are 5,000 steps long
SPIKE_RUN, SPIKE_STEP = "r-4-0", 2345


def _eval_value(units: int, blank: int, seed: int) -> float:
    return units / 10 + blank / 100 + 0.01 * seed


def make_tables() -> tuple[pa.Table, pa.Table]:
    """runs (a parent and 3 groups x 3 seeds) and metrics (val/ce, train/ce) like the export writes them."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows, hist = [], {"run_id": [], "key": [], "step": [], "value": [], "timestamp": []}
    rows.append({"run_id": "parent", "parent_run_id": None, "status": "FINISHED", "model.num_units": None,
                 "seed": None})
    for u in UNITS:
        for s in SEEDS:
            rid = f"r-{u}-{s}"
            steps = np.arange(1, 5001) if u == LONG_UNITS else np.arange(10, 510, 10)
            values = 1.0 / u + 0.1 * s + 1.0 / np.sqrt(steps)
            if rid == SPIKE_RUN:
                values[steps == SPIKE_STEP] += 5.0
            for key, vals in (("val/ce", values), ("train/ce", values + 0.05)):
                hist["run_id"] += [rid] * len(steps)
                hist["key"] += [key] * len(steps)
                hist["step"] += steps.tolist()
                hist["value"] += vals.tolist()
                hist["timestamp"] += [t0] * len(steps)
            row = {"run_id": rid, "parent_run_id": "parent", "status": "FINISHED", "model.num_units": u,
                   "seed": s, "val/ce": float(values[-1]), "val/ce.min": float(values.min()),
                   "val/ce.max": float(values.max())}
            for b in BLANKS:
                row[f"eval/ce_blank{b}"] = _eval_value(u, b, s)
                row[f"eval/ce_blank{b}.min"] = row[f"eval/ce_blank{b}.max"] = row[f"eval/ce_blank{b}"]
                row[f"eval/acc_blank{b}"] = 0.5
            row["eval/ce_all_blank200"] = 9.0  # ce_all's, not ce's
            rows.append(row)
    n = len(rows)
    cols = {
        "run_id": pa.array([r["run_id"] for r in rows]),
        "experiment_id": pa.array(["1"] * n),
        "parent_run_id": pa.array([r["parent_run_id"] for r in rows], pa.string()),
        "run_name": pa.array([r["run_id"] for r in rows]),
        "status": pa.array([r["status"] for r in rows]),
        "start_time": pa.array([t0] * n, pa.timestamp("ms", tz="UTC")),
        "end_time": pa.array([t0] * n, pa.timestamp("ms", tz="UTC")),
        "model.kind": pa.array(["rims"] * n),
        "model.num_units": pa.array([r["model.num_units"] for r in rows], pa.int64()),
        "seed": pa.array([r["seed"] for r in rows], pa.int64()),
        "rims.config_id": pa.array([f"c{r['model.num_units']}" for r in rows]),
    }
    metric_cols = sorted({k for r in rows for k in r if "/" in k})
    for k in metric_cols:
        cols[k] = pa.array([r.get(k) for r in rows], pa.float64())
    metrics = pa.table({
        "run_id": pa.array(hist["run_id"]), "key": pa.array(hist["key"]),
        "step": pa.array(hist["step"], pa.int64()), "value": pa.array(hist["value"], pa.float64()),
        "timestamp": pa.array(hist["timestamp"], pa.timestamp("ms", tz="UTC"))})
    return pa.table(cols), metrics


@pytest.fixture(scope="module")
def tables():
    return make_tables()


def _written(files):
    assert [p.suffix for p in files] == [".png", ".svg"]
    for p in files:
        assert p.exists() and p.stat().st_size > 0
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in files[1].read_bytes()[:2000]


# ------------------------------------------------------------------------------------------ learning curves
def test_downsampling_keeps_the_spikes_and_caps_the_points():
    rng = np.random.default_rng(0)
    steps = np.arange(5000)
    values = rng.normal(size=5000)
    values[1234], values[4321] = 50.0, -40.0  # spikes
    s, v = downsample_minmax(steps, values, max_points=500)
    assert len(s) <= 500 and len(s) >= 400
    assert v.max() == 50.0 and v.min() == -40.0
    assert {1234, 4321, 0, 4999} <= set(s.tolist())
    assert np.all(np.diff(s) > 0)
    np.testing.assert_array_equal(v, values[s])  # points of the history, at their own steps
    short_s, _ = downsample_minmax(steps[:100], values[:100])
    np.testing.assert_array_equal(short_s, steps[:100])
    with pytest.raises(ValueError, match="max_points"):
        downsample_minmax(steps, values, max_points=2)


def test_learning_curves_draw_the_seed_mean_with_a_ci_band(tmp_path, tables):
    runs, metrics = tables
    files = learning_curves(metrics, runs, "val/ce", ["model.num_units"], tmp_path)
    _written(files)
    assert files[0].name == "learning_curves_val_ce.png"
    ax = files.figure.axes[0]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 3  # one band per group of 3 seeds
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        f"model.num_units={u} (n=3)" for u in UNITS]
    g6 = files.data["groups"]["model.num_units=6"]
    i = int(np.searchsorted(g6["steps"], 200))
    assert g6["steps"][i] == 200
    expect = np.mean([1 / 6 + 0.1 * s + 1 / math.sqrt(200) for s in SEEDS])
    assert g6["mean"][i] == pytest.approx(expect)
    sd = np.std([0.1 * s for s in SEEDS], ddof=1)
    assert g6["half_width"][i] == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    g4 = files.data["groups"]["model.num_units=4"]  # 5,000-step runs: downsampled, the spike kept
    assert 100 < len(g4["steps"]) <= 3 * 500
    assert g4["steps"][0] == 1 and g4["steps"][-1] == 5000
    i = int(np.searchsorted(g4["steps"], SPIKE_STEP))
    assert g4["steps"][i] == SPIKE_STEP and g4["mean"][i] == g4["mean"].max() > 5 / 3
    assert len(ax.get_lines()[0].get_xdata()) == len(g4["steps"])  # the drawn line is the downsampled one


def test_learning_curves_have_no_band_for_single_runs_and_name_unknown_keys(tmp_path, tables):
    runs, metrics = tables
    files = learning_curves(metrics, runs, "train/ce", ["model.num_units", "seed"], tmp_path, name="single")
    ax = files.figure.axes[0]
    assert len(ax.get_lines()) == 9
    assert not any(isinstance(c, PolyCollection) for c in ax.collections)
    assert (tmp_path / "single.svg").exists()
    with pytest.raises(ValueError, match=r"'val/nope'.*train/ce.*val/ce"):
        learning_curves(metrics, runs, "val/nope", ["model.num_units"], tmp_path)
    with pytest.raises(ValueError, match=r"model\.hidden.*model\.num_units"):
        learning_curves(metrics, runs, "val/ce", ["model.hidden"], tmp_path)


def test_learning_curves_keep_the_latest_value_of_a_repeated_step(tmp_path):
    t = [datetime(2025, 1, 1, 0, 0, s, tzinfo=UTC) for s in range(3)]
    metrics = pa.table({"run_id": ["a", "a", "a"], "key": ["val/ce"] * 3, "step": pa.array([2, 1, 1], pa.int64()),
                        "value": [3.0, 1.0, 2.0], "timestamp": pa.array([t[0], t[1], t[2]],
                                                                         pa.timestamp("ms", tz="UTC"))})
    runs = pa.table({"run_id": ["a"], "seed": pa.array([0], pa.int64())})
    files = learning_curves(metrics, runs, "val/ce", [], tmp_path)
    g = files.data["groups"]["all runs"]
    np.testing.assert_array_equal(g["steps"], [1, 2])
    np.testing.assert_array_equal(g["mean"], [2.0, 3.0])


# ------------------------------------------------------------------------------------------ OOD curves
def test_conditions_parse_to_their_numbers():
    assert parse_condition("blank200") == ("blank", 200)
    assert parse_condition("res24") == ("res", 24)
    assert parse_condition("balls6") == ("balls", 6)
    assert parse_condition("curtain3") == ("curtain", 3)
    with pytest.raises(ValueError, match="blank"):
        parse_condition("blank")
    cols = ["eval/ce_blank50", "eval/ce_blank200", "eval/ce_blank200.min", "eval/ce_all_blank200",
            "eval/rollout_bce_balls6", "val/ce"]
    assert eval_conditions(cols, "ce") == {"eval/ce_blank50": ("blank", 50), "eval/ce_blank200": ("blank", 200)}
    assert eval_conditions(cols, "rollout_bce") == {"eval/rollout_bce_balls6": ("balls", 6)}


def test_ood_curves_plot_the_condition_numbers_with_error_bars(tmp_path, tables):
    runs, _ = tables
    files = ood_curves(runs, "ce", ["model.num_units"], tmp_path)
    _written(files)
    assert files[0].name == "ood_ce.png"
    ax = files.figure.axes[0]
    for u in UNITS:
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == f"model.num_units={u}"]
        np.testing.assert_array_equal(line.get_xdata(), BLANKS)
        np.testing.assert_allclose(line.get_ydata(), [np.mean([_eval_value(u, b, s) for s in SEEDS]) for b in BLANKS])
    assert len(ax.containers) == 3  # error bars: 3 seeds per point
    line = files.data["lines"]["model.num_units=8"]
    assert line["columns"] == [f"eval/ce_blank{b}" for b in BLANKS]
    assert np.all(line["n"] == 3) and np.all(line["half_width"] > 0)


def test_ood_curves_name_the_available_eval_metrics(tmp_path, tables):
    runs, _ = tables
    with pytest.raises(ValueError, match=r"\['acc', 'ce', 'ce_all'\]"):
        ood_curves(runs, "bce", ["model.num_units"], tmp_path)
    with pytest.raises(ValueError, match=r"model\.nope"):
        ood_curves(runs, "ce", ["model.nope"], tmp_path)


# ------------------------------------------------------------------------------------------ unit activity
N, T, K, TOP_K = 6, 15, 3, 2
MARKER = 9


@pytest.fixture(scope="module")
def activity():
    """tokens (N, T) like copying's (symbols 1-8, blanks 0, one marker per sequence) and active (N, T, K) with
    exactly TOP_K units per step, unit 0 active at every marker."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 9, (N, T))
    tokens[:, 7] = MARKER
    active = np.zeros((N, T, K), dtype=bool)
    for n in range(N):
        for t in range(T):
            units = [0, 1] if tokens[n, t] == MARKER else rng.choice(K, TOP_K, replace=False)
            active[n, t, units] = True
    return tokens, active


def test_activation_heatmap_draws_the_first_four_sequences(tmp_path, activity):
    tokens, active = activity
    files = activation_heatmap(active, tmp_path, tokens=tokens)
    _written(files)
    assert files[0].name == "unit_activation.png"
    drawn = files.data["active"]
    assert drawn.shape == (4, K, T)  # units x steps, the first 4 sequences
    np.testing.assert_array_equal(drawn, active[:4].transpose(0, 2, 1))
    axes = files.figure.axes
    assert len(axes) == 4
    for i, ax in enumerate(axes):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), active[i].T.astype(float))
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(v) for v in tokens[i]]
    assert files.figure._suptitle.get_text() == f"active units (top_k={TOP_K} of {K})"
    plain = activation_heatmap(active[:2], tmp_path, name="plain")
    assert len(plain.figure.axes) == 2 and plain.figure.axes[-1].get_xlabel() == "step"


def test_activation_by_symbol_gives_per_unit_frequencies(tmp_path, activity):
    tokens, active = activity
    files = activation_by_symbol(active, tokens, tmp_path)
    _written(files)
    d = files.data
    assert d["symbols"] == sorted(set(tokens.flatten().tolist()))
    freq = d["frequency"]
    assert freq.shape == (K, len(d["symbols"]))
    np.testing.assert_allclose(freq.sum(axis=0), TOP_K)  # top_k active units at every step
    j = d["symbols"].index(MARKER)  # once per sequence, always units 0 and 1
    np.testing.assert_array_equal(freq[:, j], [1.0, 1.0, 0.0])
    assert d["count"][j] == N
    v = d["symbols"].index(int(tokens[0, 0]))
    np.testing.assert_allclose(freq[:, v], active[tokens == tokens[0, 0]].mean(axis=0))
    np.testing.assert_array_equal(np.asarray(files.figure.axes[0].images[0].get_array()), freq)
    s, f, _ = symbol_frequency(active, tokens)
    assert s == d["symbols"] and np.array_equal(f, freq)


def test_activation_plots_name_the_shapes_they_expect(tmp_path, activity):
    tokens, active = activity
    with pytest.raises(ValueError, match=r"tokens must be \(N, T\) = \(6, 15\) like active, got \(6, 3\)"):
        activation_by_symbol(active, tokens[:, :3], tmp_path)
    with pytest.raises(ValueError, match=r"active must be \(N, T, K\).*got shape \(15, 3\)"):
        activation_heatmap(active[0], tmp_path)


# ------------------------------------------------------------------------------------------ param importance
def importance_runs(n: int = 30) -> pa.Table:
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -1, n)
    units = rng.choice([2, 4, 6, 8], n)
    objective = (np.log10(lr) + 2.5) ** 2 + 0.01 * rng.normal(size=n)  # lr matters; units do not
    return pa.table({
        "run_id": [f"r{i}" for i in range(n + 2)],
        "parent_run_id": pa.array([None] + ["p"] * (n + 1), pa.string()),  # a parent run first
        "status": ["FINISHED"] * (n + 1) + ["FAILED"],
        "model.kind": ["rims"] * (n + 2),
        "model.num_units": pa.array([4, *units.tolist(), 4], pa.int64()),
        "optim.lr": pa.array([0.01, *lr.tolist(), 0.01], pa.float64()),
        "seed": pa.array(list(range(n + 2)), pa.int64()),
        "rims.config_id": ["c"] * (n + 2),
        "val/ce": pa.array([None, *objective.tolist(), -100.0], pa.float64()),
        "val/ce.min": pa.array([None, *objective.tolist(), -100.0], pa.float64()),
        "val/ce.max": pa.array([None, *objective.tolist(), -100.0], pa.float64()),
    })


def test_param_importance_ranks_the_param_the_objective_depends_on(tmp_path):
    runs = importance_runs()
    with pytest.warns(UserWarning, match=r"single value.*model\.kind"):
        files, imp = param_importance(runs, "val/ce", None, "minimize", tmp_path)
    _written(files)
    assert files[0].name == "param_importance_val_ce.png"
    assert set(imp) == {"optim.lr", "model.num_units"}  # not seed, tags or metrics; model.kind is constant
    assert imp["optim.lr"] > 0.8 > imp["model.num_units"]
    assert files.data["n_runs"] == 30  # the parent and the failed run are left out
    assert sum(imp.values()) == pytest.approx(1.0)
    _, imp2 = param_importance(runs, "val/ce", ["model.num_units", "optim.lr"], "maximize", tmp_path)
    assert imp2["optim.lr"] > imp2["model.num_units"]


def test_param_importance_refuses_constant_params_and_unknown_columns(tmp_path):
    runs = importance_runs(6)
    with pytest.raises(ValueError, match="no param takes two"):
        param_importance(runs, "val/ce", ["model.kind"], "minimize", tmp_path)
    with pytest.raises(ValueError, match=r"'val/nope'.*val/ce"):
        param_importance(runs, "val/nope", None, "minimize", tmp_path)
    with pytest.raises(ValueError, match="direction"):
        param_importance(runs, "val/ce", None, "min", tmp_path)


def test_param_importance_refuses_a_constant_objective(tmp_path):
    """Every run at the same value (e.g. every smoke PPO run losing Pong 0-21): fANOVA would divide by a zero
    variance; the report gets a ValueError it shows as text instead of crashing."""
    runs = importance_runs(6)
    const = pa.array([None, *[-21.0] * 6, -100.0], pa.float64())
    runs = runs.set_column(runs.column_names.index("val/ce"), "val/ce", const)
    with pytest.raises(ValueError, match=r"val/ce is -21.0 in all 6 runs"):
        param_importance(runs, "val/ce", None, "minimize", tmp_path)


def test_accuracy_bands_and_error_bars_stay_in_zero_one(tmp_path):
    accs = (0.75, 0.95, 1.0)  # three seeds near 1: their t interval runs above 1
    runs = pa.table({"run_id": [f"r{s}" for s in SEEDS], "model.num_units": [6] * 3,
                     "eval/acc_blank20": list(accs), "eval/acc_blank40": [0.2, 0.3, 0.25]})
    metrics = pa.table({"run_id": [f"r{s}" for s in SEEDS for _ in range(2)], "key": ["val/acc"] * 6,
                        "step": [10, 20] * 3, "value": [a for a in accs for _ in range(2)]})
    half = 4.302653 * np.std(accs, ddof=1) / math.sqrt(3)  # t(0.975, 2)
    g = learning_curves(metrics, runs, "val/acc", ["model.num_units"], tmp_path).data["groups"]["model.num_units=6"]
    np.testing.assert_allclose(g["low"], 0.9 - half, rtol=1e-5)
    np.testing.assert_array_equal(g["high"], [1.0, 1.0])  # clipped; the half-width is kept as computed
    assert g["half_width"][0] == pytest.approx(half, rel=1e-5) and 0.9 + half > 1.0
    files = ood_curves(runs, "acc", ["model.num_units"], tmp_path)
    line = files.data["lines"]["model.num_units=6"]
    assert line["high"][0] == 1.0 and line["low"][0] == pytest.approx(0.9 - half, rel=1e-5)
    assert line["high"][1] == pytest.approx(0.25 + line["half_width"][1])  # inside [0, 1]: untouched
    (bars,) = files.figure.axes[0].containers
    top = bars.lines[2][0].get_segments()[0][:, 1].max()  # the first error bar's upper end
    assert top == pytest.approx(1.0)
    ce = runs.rename_columns(["run_id", "model.num_units", "eval/ce_blank20", "eval/ce_blank40"])
    assert ood_curves(ce, "ce", ["model.num_units"], tmp_path).data["lines"]["model.num_units=6"]["high"][0] > 1.0

"""Fetch among distractors (docs/results.md): the committed CSVs, the tables and the figures built from them.

    # from an export of the sweep (rims analyze export --experiment fetch_distractors --out DIR): write the CSVs
    python docs/results/fetch_results.py --export DIR
    # from the committed CSVs: print the tables, draw docs/figures/fetch_*.png
    python docs/results/fetch_results.py

fetch_runs.csv: one row per finished trial run: model.kind, seed, step and the final val/ and eval/ metrics.
fetch_histories.csv: every report of every run: run_id, model.kind, seed, key, step, value, for the val/ and
eval/ metrics and train/episode_return_mean (the histories behind every curve and claim in results.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from analysis.conditions import condition_rows, condition_scores, poi_rows
from analysis.selection import metric_bounds

HERE = Path(__file__).parent
RUNS, HISTORIES = HERE / "fetch_runs.csv", HERE / "fetch_histories.csv"
FIGURES = HERE.parent / "figures"
TRAIN = "distractors2"
EVAL_EVERY = 51_200  # fetch_distractors.yaml's optim.eval_every


def write_csvs(export: Path) -> None:
    runs = pq.read_table(export / "runs.parquet")
    runs = runs.filter(pc.and_(pc.invert(pc.is_null(runs["parent_run_id"])), pc.equal(runs["status"], "FINISHED")))
    metrics = sorted(c for c in runs.column_names
                     if c.startswith(("val/", "eval/")) and not c.endswith((".min", ".max")))
    keep = ["run_id", "model.kind", "seed", "step", *metrics]
    pcsv.write_csv(runs.select(keep).sort_by([("model.kind", "ascending"), ("seed", "ascending")]), RUNS)
    hist = pq.read_table(export / "metrics.parquet")
    wanted = pc.or_(pc.starts_with(hist["key"], "val/"), pc.or_(pc.starts_with(hist["key"], "eval/"),
                                                                pc.equal(hist["key"], "train/episode_return_mean")))
    hist = hist.filter(pc.and_(wanted, pc.is_in(hist["run_id"], runs["run_id"])))
    kind = dict(zip(runs["run_id"].to_pylist(), runs["model.kind"].to_pylist(), strict=True))
    seed = dict(zip(runs["run_id"].to_pylist(), runs["seed"].to_pylist(), strict=True))
    ids = hist["run_id"].to_pylist()
    out = pa.table({"run_id": ids, "model.kind": [kind[i] for i in ids], "seed": [seed[i] for i in ids],
                    "key": hist["key"], "step": hist["step"], "value": hist["value"]})
    pcsv.write_csv(out.sort_by([("model.kind", "ascending"), ("seed", "ascending"), ("key", "ascending"),
                                ("step", "ascending")]), HISTORIES)
    print(f"wrote {RUNS} ({runs.num_rows} runs) and {HISTORIES} ({out.num_rows} points)")


def tables(runs: pa.Table) -> str:
    lines = []
    for base in ("success_rate", "episode_return_mean"):
        scores = condition_scores(runs, base)
        bounds = metric_bounds(base, np.concatenate([v for g in scores.values() for v in g.values()]))
        t_ci = "95% t CI, clipped to [0, 1]" if bounds else "95% t CI"
        lines += [f"### {base}", "", f"| condition | model.kind | runs | mean | {t_ci} | IQM | IQM 95% CI |",
                  "|---|---|---:|---:|---|---:|---|"]
        for r in condition_rows(scores, bounds):
            lines.append(f"| {r.condition} | {r.group} | {r.n} | {r.mean:.3f} | [{r.low:.3f}, {r.high:.3f}] | "
                         f"{r.iqm:.3f} | [{r.iqm_low:.3f}, {r.iqm_high:.3f}] |")
        tests = [c for c in scores if c != TRAIN]
        lines += ["", "| condition(s) | P(RIMs > LSTM) | 95% CI |", "|---|---:|---|"]
        for p in poi_rows(scores, "rims", "lstm", pooled=tests):
            lines.append(f"| {', '.join(p.conditions)} | {p.poi:.2f} | [{p.low:.2f}, {p.high:.2f}] |")
        lines.append("")
    lines += gaps(runs)
    return "\n".join(lines)


def gaps(runs: pa.Table) -> list[str]:
    """The generalisation gap of each run: its success in a test condition minus its success in the training
    condition on the same rooms; per family the mean with its 95% t interval, and RIMs against LSTM
    (difference of means, two-sided permutation p over the family labels, Hedges' g)."""
    from analysis.stats import mean_ci, permutation_test

    scores = condition_scores(runs, "success_rate")
    lines = ["### gap: success in the condition - success in distractors2 (same rooms), per run", "",
             "| condition | RIMs gap [95% t CI] | LSTM gap [95% t CI] | RIMs - LSTM | p (permutation) | g |",
             "|---|---|---|---:|---:|---:|"]
    for cond in (c for c in scores if c != TRAIN):
        d = {k: scores[cond][k] - scores[TRAIN][k] for k in ("rims", "lstm")}
        cells = [f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" for m, lo, hi in (mean_ci(d[k]) for k in ("rims", "lstm"))]
        test = permutation_test(d["rims"], d["lstm"])
        lines.append(f"| {cond} | {cells[0]} | {cells[1]} | {test.diff:+.3f} | {test.p:.2f} | {test.effect:+.2f} |")
    return [*lines, ""]


def figures(runs: pa.Table, hist: pa.Table) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    colors = {"rims": "tab:blue", "lstm": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "val/success_rate", "val/success_rate (training condition)"),
                           (axes[1], "eval/success_rate_novel4", "eval/success_rate_novel4")):
        for kind, color in colors.items():
            sel = hist.filter(pc.and_(pc.equal(hist["key"], key), pc.equal(hist["model.kind"], kind)))
            curves = {}
            for rid, step, value in zip(sel["run_id"].to_pylist(), sel["step"].to_pylist(), sel["value"].to_pylist(),
                                        strict=True):
                # reports come at whole PPO iterations, a few env steps past each multiple of eval_every
                curves.setdefault(rid, {})[round(step / EVAL_EVERY) * EVAL_EVERY / 1000] = value
            steps = sorted({s for c in curves.values() for s in c})
            mat = np.array([[c.get(s, np.nan) for s in steps] for c in curves.values()])
            for row in mat:
                ax.plot(steps, row, color=color, alpha=0.25, lw=0.8)
            ax.plot(steps, np.nanmean(mat, axis=0), color=color, lw=2, label=f"{kind} (mean of {len(mat)} seeds)")
        ax.axhline(0.32 if key.startswith("val") else 0.19, color="grey", ls=":", lw=1,
                   label="uniformly random policy")
        ax.set(title=title, xlabel="env steps (thousands)", ylabel="success rate", ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(FIGURES / "fetch_curves.png", dpi=110)
    scores = condition_scores(runs, "success_rate")
    fig, ax = plt.subplots(figsize=(7, 3.4))
    conds = list(scores)
    for j, (kind, color) in enumerate(colors.items()):
        rows = {r.condition: r for r in condition_rows(scores, (0, 1)) if r.group == kind}
        x = np.arange(len(conds)) + (j - 0.5) * 0.25
        ax.errorbar(x, [rows[c].mean for c in conds], yerr=[[rows[c].mean - rows[c].low for c in conds],
                                                             [rows[c].high - rows[c].mean for c in conds]],
                    fmt="o", color=color, capsize=3, label=f"{kind}: mean, 95% t interval (clipped to [0, 1])")
        for i, c in enumerate(conds):
            ax.scatter(np.full(scores[c][kind].size, x[i]) + 0.07, scores[c][kind], s=8, color=color, alpha=0.4)
    ax.set_xticks(range(len(conds)), conds)
    ax.set(ylabel="final success rate", ylim=(0, 1), title="Fetch: success by condition (200 fixed rooms each)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "fetch_conditions.png", dpi=110)
    print(f"wrote {FIGURES / 'fetch_curves.png'} and {FIGURES / 'fetch_conditions.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, help="an export folder (runs.parquet, metrics.parquet): write the CSVs")
    args = ap.parse_args()
    if args.export:
        write_csvs(args.export)
    runs, hist = pcsv.read_csv(RUNS), pcsv.read_csv(HISTORIES)
    runs = runs.append_column("status", pa.array(["FINISHED"] * runs.num_rows))
    print(tables(runs))
    figures(runs, hist)


if __name__ == "__main__":
    main()

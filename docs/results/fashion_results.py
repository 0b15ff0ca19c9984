"""Sequential Fashion-MNIST at a resolution shift (docs/results.md): the committed CSVs, the tables and the figure.

    # after `rims tracking replay OUT/spill --mlflow-uri URI` and
    # `rims analyze export --experiment fashion_ood --mlflow-uri URI --out DIR`: write the CSVs
    python docs/results/fashion_results.py --export DIR
    # from the committed CSVs: print the tables, draw docs/figures/fashion_ood.png
    python docs/results/fashion_results.py

fashion_runs.csv: one row per trial run: model.kind, model.hidden_size, model.num_units, model.top_k, seed,
status, step and the final val/ and eval/ metrics (fashion_ood.yaml's and fashion_ood_ablations.yaml's runs).
fashion_histories.csv: every report of every run: run_id, key, step, value for the val/ and eval/ metrics and
train/ce (the histories behind every claim in results.md).

The data are the Fashion-MNIST stand-in, not MNIST: the paper's sequential-MNIST protocol on Fashion-MNIST's
28x28 images (28 -> 14 for training; 16, 19, 24 for testing).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from analysis.stats import mean_ci, paired_permutation_test

HERE = Path(__file__).parent
RUNS, HISTORIES = HERE / "fashion_runs.csv", HERE / "fashion_histories.csv"
FIGURES = HERE.parent / "figures"
TRAIN, TESTS = 14, (16, 19, 24)
CHANCE = 0.1


def write_csvs(export: Path) -> None:
    runs = pq.read_table(export / "runs.parquet")
    runs = runs.filter(pc.invert(pc.is_null(runs["parent_run_id"])))
    metrics = sorted(c for c in runs.column_names
                     if c.startswith(("val/", "eval/")) and not c.endswith((".min", ".max")))
    keep = ["run_id", "model.kind", "model.hidden_size", "model.num_units", "model.top_k", "seed", "status",
            "step", *metrics]
    runs = runs.select(keep).sort_by([("model.kind", "ascending"), ("seed", "ascending")])
    pcsv.write_csv(runs, RUNS)
    hist = pq.read_table(export / "metrics.parquet")
    wanted = pc.or_(pc.starts_with(hist["key"], "val/"), pc.or_(pc.starts_with(hist["key"], "eval/"),
                                                                pc.equal(hist["key"], "train/ce")))
    hist = hist.filter(pc.and_(wanted, pc.is_in(hist["run_id"], runs["run_id"]))).select(
        ["run_id", "key", "step", "value"])
    pcsv.write_csv(hist.sort_by([("run_id", "ascending"), ("key", "ascending"), ("step", "ascending")]), HISTORIES)
    print(f"wrote {RUNS} ({runs.num_rows} runs) and {HISTORIES} ({hist.num_rows} points)")


def row_label(r: dict) -> str:
    """The table row of a run: 'rims 6/4' (k_T/k_A) or 'lstm 120' (hidden size)."""
    if r["model.kind"] == "rims":
        return f"rims {r['model.num_units']}/{r['model.top_k']}"
    return f"{r['model.kind']} {r['model.hidden_size']}"


# the table's order: the main pair first (fashion_ood.yaml), then the seed's other rows
ORDER = ("rims 6/4", "lstm 120", "rims 6/6", "rims 6/5", "lstm 60")
MAIN, BASELINE = "rims 6/4", "lstm 120"


def _by_row(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r["status"] == "FINISHED":
            out.setdefault(row_label(r), []).append(r)
    rank = {k: i for i, k in enumerate(ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


def _paired(a_runs: list[dict], b_runs: list[dict], res: tuple[int, ...]) -> list[str]:
    a, b = {r["seed"]: r for r in a_runs}, {r["seed"]: r for r in b_runs}
    seeds = sorted(set(a) & set(b))
    lines = []
    for x in res:
        t = paired_permutation_test([a[s][f"eval/acc_res{x}"] for s in seeds],
                                    [b[s][f"eval/acc_res{x}"] for s in seeds])
        lines.append(f"| {x}x{x} | {len(seeds)} | {t.diff:+.3f} | {t.p:.3f} | {t.effect:+.2f} |")
    return lines


def tables(runs: list[dict]) -> str:
    by = _by_row(runs)
    res = (TRAIN, *TESTS)
    lines = ["### accuracy, mean [95% t interval, clipped to [0, 1]] over seeds (chance 0.10)", "",
             "| model | h | runs | val (14) | " + " | ".join(f"{r}x{r}" for r in res) + " |",
             "|---|---:|---:|---|" + "---|" * len(res)]
    for row, rs in by.items():
        cells = [mean_ci([r[f"eval/acc_res{x}"] for r in rs], bounds=(0, 1)) for x in res]
        val = mean_ci([r["val/acc"] for r in rs], bounds=(0, 1))
        lines.append(f"| {row} | {rs[0]['model.hidden_size']} | {len(rs)} | {_fmt(val)} | "
                     + " | ".join(_fmt(c) for c in cells) + " |")
    lines += ["", "### accuracy relative to the training resolution (eval at r / eval at 14), per run, mean [95% t]",
              "", "| model | " + " | ".join(f"{r}x{r}" for r in TESTS) + " |", "|---|" + "---|" * len(TESTS)]
    for row, rs in by.items():
        cells = [mean_ci([r[f"eval/acc_res{x}"] / r[f"eval/acc_res{TRAIN}"] for r in rs]) for x in TESTS]
        lines.append(f"| {row} | " + " | ".join(_fmt(c) for c in cells) + " |")
    # paired by seed (the same data order and initial draw per seed), exact sign-flip permutation test
    pairs = [(MAIN, BASELINE)] + [(row, MAIN) for row in by if row not in (MAIN, BASELINE)]
    for a, b in pairs:
        if a in by and b in by:
            lines += ["", f"### {a} - {b}, paired by seed (exact sign-flip permutation test)", "",
                      "| resolution | pairs | mean difference | p | d_z |", "|---|---:|---:|---:|---:|"]
            lines += _paired(by[a], by[b], res)
    lines += ["", "### per run", "", "| model | seed | step | val | " + " | ".join(f"{r}x{r}" for r in res) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(res)]
    for row, rs in by.items():
        for r in rs:
            lines.append(f"| {row} | {r['seed']} | {r['step']:,} | {r['val/acc']:.3f} | "
                         + " | ".join(f"{r[f'eval/acc_res{x}']:.3f}" for x in res) + " |")
    return "\n".join([*lines, ""])


def _fmt(c: tuple[float, float, float]) -> str:
    m, lo, hi = c
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else f"{m:.3f}"


def figure(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    res = (TRAIN, *TESTS)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colors = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for (row, rs), color in zip(_by_row(runs).items(), colors, strict=False):
        mat = np.array([[r[f"eval/acc_res{x}"] for x in res] for r in rs])
        for line in mat:
            ax.plot(res, line, color=color, alpha=0.3, lw=0.8)
        ax.plot(res, mat.mean(axis=0), color=color, lw=2, marker="o", label=f"{row} (mean of {len(rs)} seeds)")
    ax.axhline(CHANCE, color="grey", ls=":", lw=1, label="chance")
    ax.set(xticks=res, xlabel="test resolution (trained at 14x14)", ylabel="accuracy", ylim=(0, 1),
           title="Sequential Fashion-MNIST (stand-in, not MNIST)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "fashion_ood.png", dpi=110)
    print(f"wrote {FIGURES / 'fashion_ood.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, help="an export folder (runs.parquet, metrics.parquet): write the CSVs")
    args = ap.parse_args()
    if args.export:
        write_csvs(args.export)
    runs = pcsv.read_csv(RUNS).to_pylist()
    print(tables(runs))
    figure(runs)


if __name__ == "__main__":
    main()

"""Copying scaled to 2 CPU cores (docs/results.md): the committed CSVs, the tables and the figure built from them.

    # after `rims tracking replay OUT/spill --mlflow-uri URI` for each sweep, and
    # `rims analyze export --experiment E --mlflow-uri URI --out DIR_E` for E in copying_blank20 (the blank-20
    # sanity runs) and copying_blank10 (the blank-10 sanity run, the table, the ablations): write the CSVs
    python docs/results/copying_scaled_results.py --export DIR_copying_blank20 DIR_copying_blank10
    # a sweep run in parts (e.g. by seed, one spec per part, across machines): merge each part's export into the
    # committed CSVs, which keep every (sweep, family, seed) the export does not hold
    python docs/results/copying_scaled_results.py --export DIR_part --merge
    # from the committed CSVs: print the tables, draw docs/figures/copying_scaled.png
    python docs/results/copying_scaled_results.py

copying_scaled_runs.csv: one row per trial run of those sweeps: its sweep, family, settings, seed, status, last
step and final val/ and eval/ metrics.
copying_scaled_histories.csv: every report of every run: run_id, key, step, value for val/ce, val/acc, train/ce
and every eval/ce_blank<N> and eval/acc_blank<N> (the histories behind every curve and claim in results.md).

The comparison rule: out of distribution, families are compared only over the runs that reached the training
length (val/ce <= 0.01, the sweeps' stop rule, at a report within the step cap).

Runs the local runner's stopping rule ended before commit "local runner: a trial ended by the stopping rule
closes its run FINISHED" were closed FAILED with rims.failure "_Stop: " (a bug, not a failure: their last report
is the one that met the rule); the CSV records them as FINISHED, as the runner now does.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from analysis.stats import mean_ci, paired_permutation_test, permutation_test

HERE = Path(__file__).parent
RUNS, HISTORIES = HERE / "copying_scaled_runs.csv", HERE / "copying_scaled_histories.csv"
FIGURES = HERE.parent / "figures"
TRAIN, TESTS = 10, (20, 40, 80)  # the table's blank spans (copying_blank10.yaml)
TABLE_SWEEPS = ("copying_blank10", "copying_blank10_ablations", "copying_blank10_more")
RULE = 0.01  # val/ce at which a trial stops: it reached the training length
CHANCE = math.log(8)
SETTINGS = ["model.kind", "model.hidden_size", "model.top_k", "model.selection", "model.comm.enabled",
            "task.blank", "task.input", "task.dropout", "task.loss", "optim.lr"]


def family(row: dict) -> str:
    """'RIMs 6/4' (num_units 6, top_k 4; with a selection rule or communication off when not the default),
    'LSTM-300', 'Transformer-300', ...; ' one-hot' where task.input is one-hot."""
    kind, h = row["model.kind"], row["model.hidden_size"]
    onehot = " one-hot" if row.get("task.input") == "onehot" else ""  # the table's pipeline is the embedding
    if kind != "rims":
        return {"lstm": "LSTM", "gru": "GRU", "transformer": "Transformer", "rmc": "RMC"}[kind] + f"-{h}{onehot}"
    name = f"RIMs {row.get('model.num_units') or 6}/{row['model.top_k']}"
    if row.get("model.selection") not in (None, "", "topk"):
        name += f" {row['model.selection']}"
    if str(row.get("model.comm.enabled")).lower() == "false":
        name += " comm off"
    return name + onehot


def _merge(new: pa.Table, old: pa.Table, keep: list[bool]) -> pa.Table:
    """new's rows, then old's rows where keep: old's columns cast to new's types where both have them."""
    old = old.filter(pa.array(keep))
    for name in set(old.column_names) & set(new.column_names):
        i = old.column_names.index(name)
        old = old.set_column(i, name, old[name].cast(new.schema.field(name).type))
    merged = pa.concat_tables([new, old], promote_options="permissive")
    order = [c for c in old.column_names if c in merged.column_names]  # the committed column order, then new ones
    return merged.select(order + [c for c in merged.column_names if c not in order])


def write_csvs(exports: list[Path], merge: bool = False) -> None:
    runs = pa.concat_tables([pq.read_table(e / "runs.parquet") for e in exports], promote_options="permissive")
    runs = runs.filter(pc.invert(pc.is_null(runs["parent_run_id"])))
    if "rims.failure" in runs.column_names:  # stopped by the rule before the runner's fix (module docstring)
        stopped = pc.fill_null(pc.starts_with(runs["rims.failure"], "_Stop"), False)
        runs = runs.set_column(runs.column_names.index("status"), "status",
                               pc.if_else(stopped, "FINISHED", runs["status"]))
    metrics = sorted(c for c in runs.column_names
                     if c.startswith(("val/", "eval/")) and not c.endswith((".min", ".max")) and "ce_all" not in c)
    cols = [c for c in ["model.num_units", *SETTINGS] if c in runs.column_names]
    metrics = [m for m in metrics if m in runs.column_names]
    keep = ["run_id", "rims.sweep_id", *cols, "seed", "status", "step", *metrics]
    runs = runs.select(keep).rename_columns(["run_id", "sweep", *cols, "seed", "status", "step", *metrics])
    sweep = [s.rsplit("-", 2)[0] for s in runs["sweep"].to_pylist()]  # the spec's name, without the start time
    runs = runs.set_column(1, "sweep", pa.array(sweep))
    fam = [family(r) for r in runs.to_pylist()]
    runs = runs.add_column(2, "family", pa.array(fam))
    hist = pa.concat_tables([pq.read_table(e / "metrics.parquet") for e in exports])
    key = hist["key"]
    wanted = pc.or_(pc.is_in(key, pa.array(["val/ce", "val/acc", "train/ce"])),
                    pc.or_(pc.starts_with(key, "eval/ce_blank"), pc.starts_with(key, "eval/acc_blank")))
    hist = hist.filter(pc.and_(wanted, pc.is_in(hist["run_id"], runs["run_id"]))).select(
        ["run_id", "key", "step", "value"])
    if merge:  # the committed runs these exports do not hold (a sweep run in parts, by seed) stay, with histories
        empty_is_null = pcsv.ConvertOptions(strings_can_be_null=True)  # as the exports' missing settings
        old_runs = pcsv.read_csv(RUNS, convert_options=empty_is_null)
        old_hist = pcsv.read_csv(HISTORIES, convert_options=empty_is_null)
        new_keys = set(zip(runs["sweep"].to_pylist(), runs["family"].to_pylist(), runs["seed"].to_pylist(),
                           strict=True))
        keep = [k not in new_keys for k in zip(old_runs["sweep"].to_pylist(), old_runs["family"].to_pylist(),
                                               old_runs["seed"].to_pylist(), strict=True)]
        kept_ids = pa.array([r for r, k in zip(old_runs["run_id"].to_pylist(), keep, strict=True) if k])
        print(f"kept {sum(keep)} committed runs not in the exports")
        runs = _merge(runs, old_runs, keep)
        hist = _merge(hist, old_hist, pc.is_in(old_hist["run_id"], kept_ids).to_pylist())
    pcsv.write_csv(runs.sort_by([("sweep", "ascending"), ("family", "ascending"), ("seed", "ascending")]), RUNS)
    pcsv.write_csv(hist.sort_by([("run_id", "ascending"), ("key", "ascending"), ("step", "ascending")]), HISTORIES)
    print(f"wrote {RUNS} ({runs.num_rows} runs) and {HISTORIES} ({hist.num_rows} points)")


def _curves(hist: pa.Table, key: str) -> dict[str, dict[int, float]]:
    sel = hist.filter(pc.equal(hist["key"], key))
    out: dict[str, dict[int, float]] = {}
    for rid, step, value in zip(sel["run_id"].to_pylist(), sel["step"].to_pylist(), sel["value"].to_pylist(),
                                strict=True):
        out.setdefault(rid, {})[step] = value
    return out


def sanity_table(runs: list[dict], hist: pa.Table) -> str:
    """The sanity runs: val/ce of each LSTM at 1,000 / 1,500 / 2,000 / 3,000 steps by blank span, input
    pipeline and learning rate ("stop": it had reached val/ce <= 0.01 and stopped)."""
    curves = _curves(hist, "val/ce")
    lines = ["### sanity runs (LSTMs only): val/ce by step (chance 2.079)", "",
             "| sweep | blank | pipeline | lr | LSTM | seed | 1,000 | 1,500 | 2,000 | 3,000 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted((r for r in runs if r["sweep"].endswith(("_sanity", "_sanity_lr"))),
                  key=lambda r: (-r["task.blank"], r["sweep"], r["task.input"] != "onehot", -r["task.dropout"],
                                 r["optim.lr"], r["model.hidden_size"], r["seed"]))
    for r in rows:
        pipe = f"{r['task.input']}, dropout {r['task.dropout']:g}, loss {r['task.loss']}"
        c = curves.get(r["run_id"], {})
        vals = " | ".join(f"{c[s]:.3f}" if s in c else ("stop" if c and s > max(c) and c[max(c)] <= RULE else "-")
                          for s in (1000, 1500, 2000, 3000))
        lines.append(f"| {r['sweep']} | {r['task.blank']} | {pipe} | {r['optim.lr']:g} | {r['model.hidden_size']} | "
                     f"{r['seed']} | {vals} |")
    return "\n".join([*lines, ""])


def _fmt(m: float, lo: float, hi: float) -> str:
    digits = 3 if m < 10 else 2
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else f"{m:.{digits}f}"


def main_tables(runs: list[dict]) -> str:
    table = [r for r in runs if r["sweep"] in TABLE_SWEEPS and r["status"] == "FINISHED"]
    fams = sorted({r["family"] for r in table}, key=lambda f: (not f.startswith("RIMs"), f))
    lines = ["### every finished run: CE on the recall positions, geometric mean [95% t interval of log CE], and "
             "accuracy at 80, mean [95% t interval, clipped to [0, 1]]", "",
             "| family | runs | reached (val/ce <= 0.01) | steps to reach (per seed) | CE 10 | CE 20 | CE 40 | "
             "CE 80 | acc 80 |", "|---|---:|---:|---|---|---|---|---|---|"]
    for f in fams:
        rs = sorted((r for r in table if r["family"] == f), key=lambda r: r["seed"])
        reached = [r for r in rs if r["val/ce"] <= RULE]
        steps = ", ".join(f"{r['step']:,}" if r["val/ce"] <= RULE else "capped" for r in rs)
        ce = [_fmt(*mean_ci([r[f"eval/ce_blank{b}"] for r in rs], method="log")) for b in (TRAIN, *TESTS)]
        acc = _fmt(*mean_ci([r["eval/acc_blank80"] for r in rs], bounds=(0, 1)))
        lines.append(f"| {f} | {len(rs)} | {len(reached)} | {steps} | {' | '.join(ce)} | {acc} |")
    lines += ["", "### out of distribution, over the runs that reached the training length only", "",
              "| family | runs | CE 20 | CE 40 | CE 80 | acc 80 | CE 80 / CE 10 per run (median) |",
              "|---|---:|---|---|---|---|---:|"]
    reached_by = {f: [r for r in table if r["family"] == f and r["val/ce"] <= RULE] for f in fams}
    for f, rs in reached_by.items():
        if not rs:
            lines.append(f"| {f} | 0 | - | - | - | - | - |")
            continue
        ce = [_fmt(*mean_ci([r[f"eval/ce_blank{b}"] for r in rs], method="log")) for b in TESTS]
        acc = _fmt(*mean_ci([r["eval/acc_blank80"] for r in rs], bounds=(0, 1)))
        ratio = float(np.median([r["eval/ce_blank80"] / r[f"eval/ce_blank{TRAIN}"] for r in rs]))
        lines.append(f"| {f} | {len(rs)} | {' | '.join(ce)} | {acc} | {ratio:.1f} |")
    lines += ["", "log CE at 80 between families (reached runs only): difference of mean log CE (a ratio of "
              "geometric means), two-sided permutation p, Hedges' g", "",
              "| a | b | n a / b | geometric-mean ratio a / b | p | g |", "|---|---|---|---:|---:|---:|"]
    rims = [f for f in fams if f.startswith("RIMs")]
    for a in rims:
        for b in (f for f in fams if f not in rims):
            xa = np.log([r["eval/ce_blank80"] for r in reached_by[a]])
            xb = np.log([r["eval/ce_blank80"] for r in reached_by[b]])
            if xa.size < 2 or xb.size < 2:
                lines.append(f"| {a} | {b} | {xa.size} / {xb.size} | - | - | - |")
                continue
            t = permutation_test(xa, xb)
            lines.append(f"| {a} | {b} | {xa.size} / {xb.size} | {math.exp(t.diff):.3g} | {t.p:.3f} | "
                         f"{t.effect:+.2f} |")
    lines += ["", "### per run", "",
              "| family | seed | steps | val/ce | CE 10 / 20 / 40 / 80 | acc 10 / 20 / 40 / 80 |",
              "|---|---:|---:|---:|---|---|"]
    for f in fams:
        for r in sorted((r for r in table if r["family"] == f), key=lambda r: r["seed"]):
            ce = " / ".join(f"{r[f'eval/ce_blank{b}']:.3f}" for b in (TRAIN, *TESTS))
            acc = " / ".join(f"{r[f'eval/acc_blank{b}']:.2f}" for b in (TRAIN, *TESTS))
            lines.append(f"| {f} | {r['seed']} | {r['step']:,} | {r['val/ce']:.3f} | {ce} | {acc} |")
    return "\n".join([*lines, ""])


def reference(fam: str) -> str:
    """The row a family is paired with: one-hot rows with their embedding row, RIM variants with RIMs 6/4, the
    other baselines with LSTM-300."""
    if fam.endswith(" one-hot"):
        return fam[: -len(" one-hot")]
    return "RIMs 6/4" if fam.startswith("RIMs") else "LSTM-300"


def paired_table(runs: list[dict]) -> str:
    """Each row against its reference, paired by seed (the same batches and the same initial draw per seed):
    the final val/ce (at the stop rule or the cap) as a geometric-mean ratio, and accuracy at 2x (blank 20) and
    4x (blank 40) as differences; exact sign-flip permutation p (5 pairs: p >= 0.0625)."""
    table = [r for r in runs if r["sweep"] in TABLE_SWEEPS and r["status"] == "FINISHED"]
    by: dict[str, dict[int, dict]] = {}
    for r in table:
        by.setdefault(r["family"], {})[r["seed"]] = r
    lines = ["### each row against its reference, paired by seed (exact sign-flip permutation p)", "",
             "| row | reference | pairs | final val/ce ratio (p) | reached / reference reached | acc 20 diff (p) | "
             "acc 40 diff (p) |", "|---|---|---:|---|---|---|---|"]
    for f in sorted(by, key=lambda f: (not f.startswith("RIMs"), f)):
        ref = reference(f)
        if f == ref or ref not in by:
            continue
        seeds = sorted(set(by[f]) & set(by[ref]))
        if not seeds:
            continue
        a, b = [by[f][s] for s in seeds], [by[ref][s] for s in seeds]
        cells = []
        t = paired_permutation_test(np.log([r["val/ce"] for r in a]), np.log([r["val/ce"] for r in b]))
        cells.append(f"{math.exp(t.diff):.3g} ({t.p:.3f})" if len(seeds) > 1 else f"{math.exp(t.diff):.3g}")
        cells.append(f"{sum(r['val/ce'] <= RULE for r in a)} / {sum(r['val/ce'] <= RULE for r in b)}")
        for blank in (20, 40):
            t = paired_permutation_test([r[f"eval/acc_blank{blank}"] for r in a],
                                        [r[f"eval/acc_blank{blank}"] for r in b])
            cells.append(f"{t.diff:+.3f} ({t.p:.3f})" if len(seeds) > 1 else f"{t.diff:+.3f}")
        lines.append(f"| {f} | {ref} | {len(seeds)} | {' | '.join(cells)} |")
    return "\n".join([*lines, ""])


def figures(runs: list[dict], hist: pa.Table) -> None:
    """docs/figures/copying_scaled.png: learning curves of the RIM variants and of the baselines (every seed),
    accuracy at twice the training span (every run), and CE by span (the runs that reached the training length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(exist_ok=True)
    table = [r for r in runs if r["sweep"] in TABLE_SWEEPS and r["status"] == "FINISHED"]
    fams = sorted({r["family"] for r in table}, key=lambda f: (not f.startswith("RIMs"), f))
    rims, baselines = [f for f in fams if f.startswith("RIMs")], [f for f in fams if not f.startswith("RIMs")]
    # one palette per group: 9 RIM families and 5 baselines each fit tab10, distinct within their panel
    palette = plt.get_cmap("tab10").colors
    colors = {f: palette[i % len(palette)] for group in (rims, baselines) for i, f in enumerate(group)}
    curves = _curves(hist, "val/ce")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, group, title in ((axes[0, 0], rims, "RIM variants"), (axes[0, 1], baselines, "baselines")):
        for f in group:
            for i, r in enumerate(r for r in table if r["family"] == f):
                c = curves.get(r["run_id"], {})
                # a run that stopped at its first report (Transformer-300) is one point: mark it
                ax.plot(list(c), list(c.values()), color=colors[f], lw=1, alpha=0.7, label=f if i == 0 else None,
                        marker="o" if len(c) == 1 else None, ms=3)
        ax.axhline(RULE, color="grey", ls=":", lw=1, label="stop rule (0.01)")
        ax.axhline(CHANCE, color="grey", ls="--", lw=1, label="chance (ln 8)")
        ax.set(yscale="log", xlabel="step", ylabel=f"val/ce (blank {TRAIN})",
               title=f"learning curves, every seed: {title}")
        ax.legend(fontsize=7, ncol=2)
    low = min(a.get_ylim()[0] for a in axes[0])  # one scale for both groups' curves
    for a in axes[0]:
        a.set_ylim(low, 3)
    # every run at twice the training span: filled where the run reached the training length, hollow where not
    ax, key = axes[1, 0], f"eval/acc_blank{TESTS[0]}"
    for x, f in enumerate(fams):
        rs = [r for r in table if r["family"] == f]
        jitter = np.linspace(-0.15, 0.15, len(rs)) if len(rs) > 1 else [0.0]
        for dx, r in zip(jitter, rs, strict=True):
            reached = r["val/ce"] <= RULE
            ax.plot(x + dx, r[key], "o", ms=4, color=colors[f], mfc=colors[f] if reached else "none")
        ax.plot([x - 0.3, x + 0.3], [np.median([r[key] for r in rs])] * 2, color="black", lw=1.5)
    ax.axhline(1 / 8, color="grey", ls="--", lw=1, label="chance (1/8)")
    ax.plot([], [], "o", ms=4, color="grey", label="reached the training length")
    ax.plot([], [], "o", ms=4, color="grey", mfc="none", label="did not")
    ax.plot([], [], color="black", lw=1.5, label="median")
    ax.set_xticks(range(len(fams)))
    ax.set_xticklabels(fams, rotation=60, ha="right", fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel=f"accuracy at blank {TESTS[0]} (recall positions)",
           title=f"every run at twice the training span (blank {TESTS[0]})")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    blanks = (TRAIN, *TESTS)
    for f in fams:
        rs = [r for r in table if r["family"] == f and r["val/ce"] <= RULE]
        for r in rs:
            ax.plot(blanks, [r[f"eval/ce_blank{b}"] for b in blanks], color=colors[f], lw=1, alpha=0.7,
                    marker="o", ms=3, label=f"{f} ({len(rs)} reached)" if r is rs[0] else None)
    ax.axhline(CHANCE, color="grey", ls="--", lw=1)
    ax.set(xscale="log", yscale="log", xticks=blanks, xlabel="blank span", ylabel="CE (recall positions)",
           title="CE by span: runs that reached the training length")
    ax.minorticks_off()  # the blank spans label the axis, not powers of 10
    ax.set_xticklabels([str(b) for b in blanks])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "copying_scaled.png", dpi=110)
    print(f"wrote {FIGURES / 'copying_scaled.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, nargs="+", help="export folders (runs.parquet, metrics.parquet), one per "
                    "experiment: write the CSVs")
    ap.add_argument("--merge", action="store_true", help="with --export: keep the committed runs (and their "
                    "histories) of every (sweep, family, seed) the exports do not hold, e.g. a sweep run in parts")
    args = ap.parse_args()
    if args.export:
        write_csvs(args.export, merge=args.merge)
    runs, hist = pcsv.read_csv(RUNS).to_pylist(), pcsv.read_csv(HISTORIES)
    print(sanity_table(runs, hist))
    if any(r["sweep"] in TABLE_SWEEPS for r in runs):
        print(main_tables(runs))
        print(paired_table(runs))
        figures(runs, hist)


if __name__ == "__main__":
    main()

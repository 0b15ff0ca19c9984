"""The copying table from the committed per-run CSV with intervals on the log scale (`rims analyze table --ci log`
reads an export; the run store behind this table is gone, so this rebuilds the runs table from the CSV).

Run from the repository root: .venv/bin/python docs/results/copying_table1_log.py
"""
import pyarrow as pa
import pyarrow.csv as pacsv

from analysis.tables import paper_table

runs = pacsv.read_csv("docs/results/copying_table1_runs.csv")
n = runs.num_rows
for name, value in [("status", "FINISHED"), ("parent_run_id", "p"), ("task.name", "copying"), ("task.blank", 50),
                    ("experiment_id", "1")]:
    runs = runs.append_column(name, pa.array([value] * n))
for m in [c for c in runs.column_names if c.startswith(("val/", "eval/"))]:
    runs = runs.append_column(f"{m}.min", runs[m]).append_column(f"{m}.max", runs[m])  # finals only in the CSV
print(paper_table(runs, which="ce", ci="log").to_markdown())

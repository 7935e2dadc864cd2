"""The starter project of ``eltmake init``: a JSONL file loaded into DuckDB by a real tap and
eltmake's own loader, and a command step that reports on it."""

from __future__ import annotations

PROJECT = """[project]
name = "{name}"
default = "all"

# A Singer tap from PyPI, installed by eltmake into its own environment.
[extractors.tap-jsonl]
pip_url = "tap-jsonl==0.3.1"
config = {{ path = "data/people.jsonl", stream_name = "people", primary_keys = ["id"] }}

# eltmake's own DuckDB loader: ships with eltmake, nothing to install.
[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = {{ path = "warehouse.duckdb", default_target_schema = "raw" }}

[targets.people]
description = "load data/people.jsonl into raw.people"
extract = "tap-jsonl"
load = "duckdb"
inputs = ["data/people.jsonl"]

[targets.report]
description = "count the people per city"
run = ["python", "scripts/report.py"]
inputs = ["scripts/report.py"]
outputs = ["out/report.csv"]
deps = ["people"]

[targets.all]
deps = ["report"]
"""

DATA = (
    "\n".join(
        f'{{"id": {i}, "name": "{n}", "city": "{c}"}}'
        for i, (n, c) in enumerate(
            [
                ("Ada", "London"),
                ("Grace", "New York"),
                ("Linus", "Helsinki"),
                ("Margaret", "Boston"),
                ("Guido", "Amsterdam"),
                ("Barbara", "Boston"),
            ],
            1,
        )
    )
    + "\n"
)

REPORT = '''"""Write out/report.csv from the warehouse: people per city."""

import csv
import duckdb

con = duckdb.connect("warehouse.duckdb", read_only=True)
rows = con.execute("SELECT city, count(*) FROM raw.people GROUP BY city ORDER BY city").fetchall()
with open("out/report.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["city", "people"])
    w.writerows(rows)
print(f"{len(rows)} cities")
'''

GITIGNORE = "*.duckdb\n*.duckdb.wal\nout/\n"


def files(name: str) -> dict[str, str]:
    """{relative path: text}; ``.gitignore`` lines are merged into an existing one."""
    return {
        "eltmake.toml": PROJECT.format(name=name),
        "data/people.jsonl": DATA,
        "scripts/report.py": REPORT,
        ".gitignore": GITIGNORE,
    }

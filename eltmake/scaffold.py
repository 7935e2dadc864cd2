"""``eltmake init``: a starter project that loads a JSONL file into DuckDB and reports on it."""

from __future__ import annotations

from pathlib import Path

from eltmake.errors import ConfigError

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

GITIGNORE = ".eltmake/\n*.duckdb\n*.duckdb.wal\nout/\n.env\n"


def init_project(directory: str, name: str | None) -> int:
    root = Path(directory).resolve()
    if (root / "eltmake.toml").exists():
        raise ConfigError(f"{root / 'eltmake.toml'} already exists; init writes a new project only")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file; name a folder for the new project")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder {root}: {e.strerror}") from None
    files = {
        "eltmake.toml": PROJECT.format(name=name or root.name),
        "data/people.jsonl": DATA,
        "scripts/report.py": REPORT,
        ".gitignore": GITIGNORE,
    }
    for rel, text in files.items():
        path = root / rel
        if path.exists():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as e:
            raise ConfigError(f"cannot write {path}: {e.strerror}") from None
        print(f"created {rel}")
    print(f"\nnext: cd {directory} && eltmake build")
    return 0

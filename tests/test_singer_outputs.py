"""A Singer step is skipped only while the warehouse still holds what it recorded.

With the real tap-spreadsheets (its state is each file's modification time, so a re-run without
the bookmark is the only way to get a stream back) and eltmake's own DuckDB loader: a dropped
table re-runs the step and that stream alone starts from no bookmark; a deleted file re-runs it;
an unchanged file costs a stat (no duckdb import); an edit the tap cannot see is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import Project

pytestmark = pytest.mark.integration

TOML = """
[extractors.tap-spreadsheets]
pip_url = "tap-spreadsheets==1.1.2"

[extractors.tap-spreadsheets.config]
files = [
  { path = "data/customers.csv", format = "csv", table_name = "customers", primary_keys = ["id"] },
  { path = "data/orders.csv", format = "csv", table_name = "Orders", primary_keys = ["id"] },
]

[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = { path = "wh.duckdb", default_target_schema = "raw", schema_mapping = { Orders = "sales" } }

[targets.raw]
extract = "tap-spreadsheets"
load = "duckdb"
inputs = ["data/*.csv"]
"""


@pytest.fixture
def sheets(project: Project, tools_dir: str) -> Project:
    project.env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    project.write("data/customers.csv", "id,name\n1,ann\n2,bob\n")
    project.write("data/orders.csv", "id,amount\n1,10\n2,20\n3,30\n")
    project.toml(TOML)
    return project


def build(p: Project, *args: str, check: bool | int = True) -> dict[str, dict]:
    proc = p.run("build", "--json", *args, check=check, env=p.env)
    return {
        e["target"]: e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "step"
    }


def sql(p: Project, query: str) -> list[tuple]:
    with duckdb.connect(str(p.root / "wh.duckdb")) as con:
        return con.execute(query).fetchall()


def status(p: Project) -> subprocess.CompletedProcess:
    return p.run("status", env=p.env)


def test_a_dropped_table_reruns_the_step_and_only_its_stream_restarts(sheets: Project) -> None:
    first = build(sheets)
    assert first["raw"]["status"] == "built"
    # schema_mapping and the loader's naming rule: stream "Orders" is table sales.orders.
    assert first["raw"]["stats"]["tables"] == {
        "Orders": ["sales", "orders"],
        "customers": ["raw", "customers"],
    }
    state = json.loads(sheets.run("state", "show", "raw", check=True, env=sheets.env).stdout)
    assert set(state["bookmarks"]) == {"Orders", "customers"}
    assert build(sheets)["raw"]["status"] == "skipped"

    sql(sheets, "drop table sales.orders")
    proc = status(sheets)
    assert proc.returncode == 1
    assert "table sales.orders is missing" in proc.stdout
    again = build(sheets, "-v")
    assert again["raw"]["status"] == "built"
    assert again["raw"]["reason"] == "table sales.orders is missing"
    # The orders stream came back in full; customers kept its bookmark and delivered nothing.
    assert again["raw"]["stats"]["streams"] == {"Orders": 3}
    assert again["raw"]["stats"]["restarted_streams"] == ["Orders"]
    assert sql(sheets, "select count(*) from sales.orders") == [(3,)]
    assert sql(sheets, "select count(*) from raw.customers") == [(2,)]
    after = json.loads(sheets.run("state", "show", "raw", check=True, env=sheets.env).stdout)
    assert after["bookmarks"]["customers"] == state["bookmarks"]["customers"]
    assert build(sheets)["raw"]["status"] == "skipped"


def test_a_deleted_warehouse_file_reruns_the_step_from_no_bookmark(sheets: Project) -> None:
    build(sheets)
    (sheets.root / "wh.duckdb").unlink()
    assert "DuckDB file wh.duckdb is missing" in status(sheets).stdout
    again = build(sheets)
    assert again["raw"]["status"] == "built"
    assert again["raw"]["reason"] == "DuckDB file wh.duckdb is missing"
    assert again["raw"]["stats"]["records"] == 5
    assert sql(sheets, "select count(*) from raw.customers") == [(2,)]


def test_an_unchanged_warehouse_costs_a_stat_not_a_duckdb_open(sheets: Project) -> None:
    build(sheets)
    time.sleep(2.1)  # a file written in the last 2 s is not trusted to the verified-state cache
    assert build(sheets)["raw"]["status"] == "skipped"  # verifies once, and remembers
    cache = json.loads((sheets.root / ".eltmake/warehouses.json").read_text())
    [(path, entry)] = cache["duckdb"].items()
    assert path == str(sheets.root / "wh.duckdb")
    assert entry["relations"] == ["raw.customers", "sales.orders"]

    def imports_duckdb() -> bool:
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "eltmake", "build", "--plain"],
            cwd=sheets.root,
            env={**os.environ, **sheets.env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "up to date" in proc.stdout or "1 skipped" in proc.stdout, proc.stdout
        return any(line.rstrip().endswith("| duckdb") for line in proc.stderr.splitlines())

    assert not imports_duckdb()
    sql(sheets, "drop table raw.customers")  # the file changed: it is opened and looked at
    assert "table raw.customers is missing" in status(sheets).stdout


def test_a_file_another_process_writes_is_not_taken_for_a_missing_one(sheets: Project) -> None:
    build(sheets)
    time.sleep(2.1)
    build(sheets)  # verified at this identity
    con = duckdb.connect(str(sheets.root / "wh.duckdb"))  # a writer holds the file from now on
    try:
        con.execute("create table raw.other (x int)")
        con.execute("checkpoint")
        proc = status(sheets)
        assert proc.returncode == 0, proc.stdout + proc.stderr  # what was verified stands
        assert "Traceback" not in proc.stderr
    finally:
        con.close()
    os.unlink(sheets.root / "wh.duckdb")
    assert "DuckDB file wh.duckdb is missing" in status(sheets).stdout


def test_changed_inputs_that_deliver_nothing_say_why_and_what_to_do(sheets: Project) -> None:
    build(sheets)
    path = sheets.root / "data/orders.csv"
    st = path.stat()
    with open(path, "a") as f:
        f.write("4,40\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit within the same second
    proc = sheets.run("build", "--json", check=True, env=sheets.env)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    [raw] = [e for e in events if e["event"] == "step" and e["target"] == "raw"]
    assert raw["status"] == "built" and raw["reason"] == "input changed: data/orders.csv"
    assert raw["stats"]["records"] == 0
    warning = raw["stats"]["warning"]
    assert "data/orders.csv changed, but tap-spreadsheets delivered 0 records" in warning
    assert "`eltmake build --full-refresh raw`" in warning
    assert warning in proc.stderr and raw["warnings"] == [warning]  # shown even without -v
    fixed = build(sheets, "--full-refresh", "raw")
    assert fixed["raw"]["stats"]["records"] == 6 and "warning" not in fixed["raw"]["stats"]
    assert sql(sheets, "select count(*) from sales.orders") == [(4,)]

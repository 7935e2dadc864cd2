"""End to end through the command line, with real Singer tools from PyPI.

tap-jsonl 0.3.1 and target-jsonl 0.1.4 are installed once into a tools folder shared by every test
(and kept between sessions in the temp folder, or ``$ELTMAKE_TEST_TOOLS_DIR``), and eltmake's own
``eltmake-target-duckdb`` loader is used with no pip_url.
"""

from __future__ import annotations

import json
import time

import duckdb
import pytest

pytestmark = pytest.mark.integration

SECRET = "pa55-w0rd-XYZ"


def orders(n: int, start: int = 1) -> str:
    return "".join(
        json.dumps({"id": i, "customer": f"c{i % 7}", "amount": i * 1.25, "note": f"n{i}"}) + "\n"
        for i in range(start, start + n)
    )


TOML = """
[project]
name = "shop"
default = "report"

[extractors.tap-jsonl]
pip_url = "tap-jsonl==0.3.1"
config = {{ path = "data/orders.jsonl", stream_name = "orders", primary_keys = ["id"], password = "{secret}" }}
select = ["orders.*", "!orders.note"]

[loaders.target-jsonl]
pip_url = "target-jsonl==0.1.4"
config = {{ destination_path = "out", do_timestamp_file = false }}

[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = {{ path = "warehouse.duckdb", default_target_schema = "raw" }}

[targets.raw_jsonl]
extract = "tap-jsonl"
load = "target-jsonl"
inputs = ["data/orders.jsonl"]

[targets.raw]
extract = "tap-jsonl"
load = "duckdb"
{raw_extra}

[targets.report]
run = ["python", "-c", "open('report.txt', 'a').write('x')"]
deps = ["raw"]
"""


@pytest.fixture
def shop(project, tools_dir):
    project.env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    project.write("data/orders.jsonl", orders(500))
    (project.root / "out").mkdir()

    def setup(raw_extra: str = "") -> None:
        project.toml(TOML.format(secret=SECRET, raw_extra=raw_extra))

    project.setup = setup
    setup()
    return project


def run(project, *args, check=True):
    return project.run(*args, check=check, env=project.env)


def events(project, *args, check=True):
    proc = run(project, *args, "--json", check=check)
    return [json.loads(x) for x in proc.stdout.splitlines() if x.strip()], proc


def steps(evts):
    return {e["target"]: e for e in evts if e["event"] == "step"}


def test_tap_jsonl_into_target_jsonl_delivers_every_record(shop):
    evts, proc = events(shop, "build", "raw_jsonl", "-v")
    assert steps(evts)["raw_jsonl"]["status"] == "built"
    rows = [json.loads(x) for x in shop.read("out/orders.jsonl").splitlines()]
    assert [r["id"] for r in rows] == list(range(1, 501))
    source = {r["id"]: r for r in map(json.loads, shop.read("data/orders.jsonl").splitlines())}
    for r in rows:
        assert r["customer"] == source[r["id"]]["customer"]
        assert r["amount"] == source[r["id"]]["amount"]
        assert "note" not in r  # deselected with "!orders.note"
    assert "tap-jsonl:" in proc.stderr  # the tap's log, prefixed with its name
    assert SECRET not in proc.stdout + proc.stderr
    # Unchanged input: skipped without starting any tool.
    evts, _ = events(shop, "build", "raw_jsonl")
    assert steps(evts)["raw_jsonl"]["status"] == "skipped"
    state = json.loads(run(shop, "state", "show", "raw_jsonl").stdout)
    assert "orders" in state["bookmarks"]


def test_into_duckdb_with_early_cutoff_for_the_report(shop):
    evts, _ = events(shop, "build")
    got = steps(evts)
    assert got["raw"]["status"] == "built" and got["report"]["status"] == "built"
    with duckdb.connect(str(shop.root / "warehouse.duckdb"), read_only=True) as db:
        assert db.execute(
            "select count(*), count(distinct id), sum(amount) from raw.orders"
        ).fetchone() == (
            500,
            500,
            sum(i * 1.25 for i in range(1, 501)),
        )
        cols = {r[0] for r in db.execute("describe raw.orders").fetchall()}
    assert "note" not in cols
    # No inputs: freshness "always", so the extract runs again; the same records come: cutoff.
    evts, _ = events(shop, "build")
    got = steps(evts)
    assert got["raw"]["status"] == "built"
    assert got["report"]["status"] == "skipped"
    assert shop.read("report.txt") == "x"
    # New rows: the report runs again.
    with open(shop.root / "data/orders.jsonl", "a") as f:
        f.write(orders(5, start=501))
    evts, _ = events(shop, "build")
    assert steps(evts)["report"]["status"] == "built"
    with duckdb.connect(str(shop.root / "warehouse.duckdb"), read_only=True) as db:
        assert db.execute("select count(distinct id) from raw.orders").fetchone() == (505,)


def test_secrets_stay_out_of_events_history_and_config_output(shop):
    evts, proc = events(shop, "build", "raw", "-v")
    assert SECRET not in proc.stdout + proc.stderr
    runs = run(shop, "runs").stdout
    assert SECRET not in runs
    config = run(shop, "config", "tap-jsonl").stdout
    assert json.loads(config)["password"] == "****"
    assert SECRET not in config
    for db in (shop.root / ".eltmake").rglob("*"):
        if db.is_file() and db.suffix in (".db", ".json", ".sqlite"):
            assert SECRET.encode() not in db.read_bytes(), db


def test_select_list_shows_streams_and_properties(shop):
    out = run(shop, "select", "tap-jsonl", "--list", "--all").stdout
    assert "[ selected  ] orders" in out
    assert "orders.note" in out and "excluded" in out
    assert "[ automatic ]   orders.id" in out


def test_a_wrong_tool_name_is_exit_2_with_a_hint(shop):
    shop.setup('full_refresh = false\n[targets.bad]\nextract = "tap-jsnl"\nload = "duckdb"\n')
    proc = run(shop, "build", "bad", check=2)
    assert (
        "targets.bad.extract: no extractor named 'tap-jsnl' (did you mean 'tap-jsonl'?)"
        in proc.stderr
    )


def test_install_is_a_no_op_when_nothing_changed(shop):
    run(shop, "install")
    assert "up to date" in run(shop, "install").stdout


def test_invoke_runs_the_tool_with_its_config(shop):
    proc = run(shop, "invoke", "tap-jsonl", "--", "--discover")
    catalog = json.loads(proc.stdout)
    assert [s["tap_stream_id"] for s in catalog["streams"]] == ["orders"]


def test_incremental_state_round_trip_with_tap_spreadsheets(project, tools_dir):
    """tap-spreadsheets keeps the file's mtime as its bookmark: a re-run of an unchanged file
    delivers nothing, so the step keeps its fingerprint and the report below it is skipped."""
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    project.write("data/people.csv", "id,name\n1,ann\n2,bob\n")
    project.toml(
        """
        [project]
        name = "people"
        default = "report"

        [extractors.tap-spreadsheets]
        pip_url = "tap-spreadsheets==1.1.2"
        config = { files = [{ path = "data/people.csv", format = "csv", table_name = "people", primary_keys = ["id"] }] }

        [loaders.duckdb]
        executable = "eltmake-target-duckdb"
        config = { path = "w.duckdb", default_target_schema = "raw" }

        [targets.raw]
        extract = "tap-spreadsheets"
        load = "duckdb"

        [targets.report]
        run = ["python", "-c", "open('report.txt', 'a').write('x')"]
        deps = ["raw"]
        """
    )

    def build() -> dict:
        proc = project.run("build", "--json", check=True, env=env)
        return {
            e["target"]: e
            for e in map(json.loads, proc.stdout.splitlines())
            if e["event"] == "step"
        }

    first = build()
    assert first["raw"]["status"] == "built" and first["report"]["status"] == "built"
    state = json.loads(project.run("state", "show", "raw", check=True, env=env).stdout)
    assert "people" in state["bookmarks"]
    second = build()  # the tap gets the state back and delivers no record
    assert second["raw"]["status"] == "built"
    assert second["report"]["status"] == "skipped"
    again = json.loads(project.run("state", "show", "raw", check=True, env=env).stdout)
    assert again["bookmarks"]["people"] == state["bookmarks"]["people"]
    time.sleep(1.1)  # the bookmark is the file's mtime, in whole seconds
    project.write("data/people.csv", "id,name\n1,ann\n2,bob\n3,cy\n")
    third = build()
    assert third["report"]["status"] == "built"
    assert project.read("report.txt") == "xx"
    with duckdb.connect(str(project.root / "w.duckdb"), read_only=True) as db:
        assert db.execute("select count(distinct id) from raw.people").fetchone() == (3,)


def test_a_selection_that_matches_no_stream_fails(shop):
    shop.setup('select = ["ordres.*"]')
    proc = run(shop, "build", "raw", "--json", check=1)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    raw = next(e for e in events if e["event"] == "step" and e["target"] == "raw")
    assert raw["status"] == "failed" and "matches no stream" in raw["error"]
    assert "eltmake select tap-jsonl --list" in raw["error"]

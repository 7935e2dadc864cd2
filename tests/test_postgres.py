"""examples/shop in a real PostgreSQL server: ``eltmake build --env postgres``.

The server is the test session's throwaway PostgreSQL (tests/pgserver.py), or the one
ELTMAKE_TEST_PG names; without one these tests skip with the reason (CI sets
ELTMAKE_TEST_PG_REQUIRED=1, which turns that into a failure). The tools are the real ones from
PyPI: tap-spreadsheets, meltanolabs-target-postgres, dbt-core with dbt-postgres.

One copy of the example is built once for the module into its own database; each test changes one
thing, checks what re-ran and why, and leaves the warehouse fully built for the next.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project
from pgserver import PgServer, create_database, database_name, drop_database

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shop"
TIMEOUT = 900


class PgShop(Project):
    """The example, copied, built with --env postgres against one database of the server."""

    def __init__(self, root: Path, tools: str, server: PgServer, dbname: str):
        super().__init__(root)
        self.server = server
        self.dbname = dbname
        self.env = {"ELTMAKE_TOOLS_DIR": tools, **server.env(dbname)}

    def eltmake(self, *args: str, check: bool | int = True, env: dict | None = None):
        return self.run(*args, "--env", "postgres", check=check, env={**self.env, **(env or {})})

    def build(self, *args: str, check: bool | int = True, env: dict | None = None) -> dict:
        proc = self.eltmake("build", "--json", *args, check=check, env=env)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return {e["target"]: e for e in events if e["event"] == "step"}

    def statuses(self, *args: str, **kw) -> dict[str, str]:  # type: ignore[override]
        return {n: e["status"] for n, e in self.build(*args, **kw).items()}

    def sql(self, query: str) -> str:
        return self.server.psql(query, dbname=self.dbname)


def _copy(tmp: Path) -> Path:
    root = tmp / "shop"
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    return root


@pytest.fixture(scope="module")
def pgshop(
    tmp_path_factory: pytest.TempPathFactory, tools_dir: str, pg_server: PgServer
) -> Iterator[PgShop]:
    name = database_name("pgshop")
    create_database(pg_server, name)
    try:
        shop = PgShop(_copy(tmp_path_factory.mktemp("pgshop")), tools_dir, pg_server, name)
        shop.first = shop.statuses()
        yield shop
    finally:
        drop_database(pg_server, name)


def _file_totals(root: Path) -> dict:
    def rows(name: str) -> list[dict]:
        with open(root / "data" / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    orders, payments = rows("orders"), rows("payments")
    paid: dict[int, int] = defaultdict(int)
    for p in payments:
        paid[int(p["order_id"])] += int(p["amount_cents"])
    return {
        "customers": len(rows("customers")),
        "orders": len(orders),
        "cents": sum(paid.values()),
    }


def test_the_shop_builds_into_postgres_end_to_end(pgshop: PgShop) -> None:
    assert pgshop.first == {
        "raw": "built",
        "staging": "built",
        "marts": "built",
        "report": "built",
        "warehouse": "built",
    }
    totals = _file_totals(pgshop.root)
    got = pgshop.sql(
        "select (select count(*) from marts.dim_customers), count(*), sum(amount_cents) "
        "from marts.fct_orders"
    )
    assert got == f"{totals['customers']}|{totals['orders']}|{totals['cents']}"
    # Every CSV column arrives as text; the staging casts make the marts' types portable.
    types = pgshop.sql(
        "select data_type from information_schema.columns where table_schema = 'marts' "
        "and table_name = 'fct_orders' and column_name in ('amount_cents', 'amount') "
        "order by column_name"
    )
    assert types.splitlines() == ["numeric", "bigint"]
    report = (pgshop.root / "out/report.csv").read_text().splitlines()
    assert report[0] == "country,month,orders,customers,revenue_cents" and len(report) > 10
    # The generated profile holds no password, only where dbt reads it from.
    profile = (pgshop.root / ".eltmake/dbt/dbt/profiles.yml").read_text()
    assert '"type": "postgres"' in profile and "env_var('PGPASSWORD'" in profile
    assert pgshop.server.password not in profile
    for f in (pgshop.root / ".eltmake").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yml", ".db"):
            assert pgshop.server.password.encode() not in f.read_bytes(), f


def test_a_second_build_runs_nothing(pgshop: PgShop) -> None:
    assert set(pgshop.statuses().values()) == {"skipped"}


def test_a_dropped_raw_table_reruns_its_extract_and_a_plain_build_restores_it(
    pgshop: PgShop,
) -> None:
    pgshop.sql("drop table raw.orders cascade")  # and the staging view that reads it
    proc = pgshop.eltmake("status", check=1)
    assert "table raw.orders is missing" in proc.stdout
    got = pgshop.build()
    assert got["raw"]["status"] == "built"
    assert got["raw"]["reason"] == "table raw.orders is missing"
    assert got["raw"]["stats"]["streams"] == {"orders": 3000}  # that stream alone, in full
    assert got["staging"]["status"] == "built"  # its view went with the table
    assert got["marts"]["status"] == "skipped"  # same rows as before: early cutoff
    assert pgshop.sql("select count(*) from raw.orders") == "3000"
    assert pgshop.sql("select count(*) from staging.stg_orders") == "3000"
    assert set(pgshop.statuses().values()) == {"skipped"}


def test_a_dropped_mart_reruns_its_dbt_step_only(pgshop: PgShop) -> None:
    pgshop.sql("drop table marts.dim_customers")
    got = pgshop.build()
    assert got["marts"]["status"] == "built"
    assert got["marts"]["reason"] == "relation marts.dim_customers is missing"
    assert got["raw"]["status"] == "skipped" and got["staging"]["status"] == "skipped"
    assert got["report"]["status"] == "skipped"  # rebuilt with the same rows
    assert pgshop.sql("select count(*) from marts.dim_customers") == "500"


def test_a_model_edit_that_changes_no_row_cuts_off_below_it(pgshop: PgShop) -> None:
    rel = pgshop.root / "transform/models/staging/stg_orders.sql"
    old = rel.read_text()
    rel.write_text("-- a comment changes the file, not the rows\n" + old)
    try:
        got = pgshop.build()
        assert got["staging"]["status"] == "built"
        assert got["marts"]["status"] == "skipped" and got["report"]["status"] == "skipped"
    finally:
        rel.write_text(old)
        pgshop.build()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"PGPORT": "1"}, "cannot reach PostgreSQL at 127.0.0.1:1 (loaders.postgres.config.host"),
        (
            {"PGPASSWORD": "not-the-password"},
            "refused the password of user 'eltmake' (PGPASSWORD): password authentication failed",
        ),
        (
            {"PGDATABASE": "no_such_database"},
            "database 'no_such_database' does not exist on PostgreSQL at",
        ),
    ],
)
def test_bad_connection_settings_fail_in_one_line_and_record_nothing(
    tmp_path: Path,
    tools_dir: str,
    pg_server: PgServer,
    pg_env: dict[str, str],
    override: dict[str, str],
    expected: str,
) -> None:
    if not pg_server.started:
        pytest.skip("the messages name this session's own server and user")
    shop = PgShop(_copy(tmp_path), tools_dir, pg_server, pg_env["PGDATABASE"])
    proc = shop.eltmake("build", "raw", "--plain", check=1, env=override)
    shown = proc.stdout + proc.stderr
    assert "Traceback" not in shown
    errors = [line for line in proc.stdout.splitlines() if line.startswith("  raw: ")]
    assert len(errors) == 1 and expected in errors[0], shown
    assert "target-postgres |" not in shown  # no tool started: no loader traceback either
    status = shop.eltmake("status", "raw", check=1, env=override)
    assert "never built" in status.stdout  # the failed run recorded nothing


def test_dbt_on_postgres_fails_in_one_line_without_its_password(pgshop: PgShop) -> None:
    proc = pgshop.eltmake(
        "build", "marts", "--only", "--force", "marts", "--plain", check=1, env={"PGPASSWORD": ""}
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("  marts: ")]
    server = pgshop.server
    assert errors == [
        f"  marts: PostgreSQL at {server.host}:{server.port} asks user '{server.user}' for a "
        "password, and none is set: export PGPASSWORD (eltmake never writes it to a file)"
    ], proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert set(pgshop.statuses().values()) == {"skipped"}  # nothing was recorded


def test_postgres_steps_take_no_warehouse_lock(pgshop: PgShop) -> None:
    from eltmake.project import load_project

    env = {**os.environ, **pgshop.env}
    project = load_project(pgshop.root, env_name="postgres", environ=env, infer=False)
    steps = {
        n: project.recipes[t.kind].make_step(project, t)
        for n, t in project.targets.items()
        if t.kind
    }
    # No warehouse lock on Postgres (only the lock on the target's own state id, which two
    # targets of one build that share a bookmark take in turn).
    assert steps["raw"].locks == ["state:postgres:raw"]
    assert steps["staging"].locks == [] and steps["marts"].locks == []
    default = load_project(pgshop.root, environ=env, infer=False)
    raw = default.recipes["singer"].make_step(default, default.targets["raw"])
    assert raw.locks == ["warehouse.duckdb", "state:raw"]


def test_watch_rebuilds_a_postgres_model_in_the_warm_dbt(pgshop: PgShop) -> None:
    """dbt-postgres in the warm dbt of a watch: an edited mart is rebuilt there, with the same
    rows (early cutoff keeps the report), and a staging edit that changes rows reaches the
    report; the server's connections are closed after each command."""
    from test_dbt_warm import PID
    from test_watch import Watcher

    mart = pgshop.root / "transform/models/marts/fct_orders.sql"
    staging = pgshop.root / "transform/models/staging/stg_orders.sql"
    old_mart, old_staging = mart.read_text(), staging.read_text()
    w = Watcher(pgshop.root, "--plain", "-v", "--env", "postgres", env=pgshop.env)
    try:
        w.wait_for(r"^watch: waiting for changes", timeout=TIMEOUT)
        mart.write_text(old_mart + "\n-- a comment\n")
        line = w.wait_for(r"^watch: cycle 2 ", timeout=TIMEOUT)
        assert " ok " in line and "re-ran marts;" in line, w.output()
        assert "skipped raw, staging, report" in line  # the same rows: the report kept
        assert PID.search(w.output()), w.output()
        assert "running dbt cold" not in w.output() and "no table checksums" not in w.output()
        staging.write_text(
            old_staging.replace(
                "    status\n",
                "    case when status = 'returned' then 'completed' else status end as status\n",
            )
        )
        line = w.wait_for(r"^watch: cycle 3 ", timeout=TIMEOUT)
        assert " ok " in line and "re-ran staging, marts, report" in line, w.output()
        assert len(set(PID.findall(w.output()))) == 1, w.output()  # one warm worker throughout
        # Between commands the warm dbt holds no connection (eltmake keeps one for its checks).
        others = "where datname = current_database() and pid <> pg_backend_pid()"
        who = pgshop.sql(
            f"select application_name, state, left(query, 60) from pg_stat_activity {others}"
        )
        assert who.splitlines() and all(r.startswith("eltmake|") for r in who.splitlines()), who
    finally:
        w.close()
        mart.write_text(old_mart)
        staging.write_text(old_staging)
        pgshop.build()

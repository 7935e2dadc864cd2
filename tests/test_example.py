"""examples/shop end to end, with the real tools from PyPI: tap-spreadsheets, eltmake's DuckDB
loader, dbt-core with dbt-duckdb, and a command step.

One copy of the example is built once for the module (the first build takes a minute); every test
starts from that built state, changes one thing, checks what re-ran and why, and puts the thing
back (rebuilding) so the next test starts from a fully built warehouse again.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import Project

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shop"
TIMEOUT = 900


class Shop(Project):
    """The example copied into a temporary folder, built with a session-wide tools folder."""

    def __init__(self, root: Path, tools: str):
        super().__init__(root)
        self.env = {"ELTMAKE_TOOLS_DIR": tools}
        self.first: dict[str, str] = {}

    def build(self, *args: str, check: bool | int = True) -> dict[str, str]:
        return self.statuses(*args, check=check, env=self.env)

    def mtime(self, rel: str) -> int:
        return (self.root / rel).stat().st_mtime_ns

    def query(self, sql: str) -> list[tuple]:
        import duckdb

        with duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True) as con:
            return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tools_dir: str) -> Shop:
    root = tmp_path_factory.mktemp("shop") / "shop"
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    shop = Shop(root, tools_dir)
    shop.first = shop.build()
    return shop


def edit(shop: Shop, rel: str, old: str, new: str) -> str:
    """Replace ``old`` with ``new`` in a file of the example; return the original text."""
    path = shop.root / rel
    text = path.read_text()
    assert old in text, f"{rel} no longer holds {old!r}: update the test"
    path.write_text(text.replace(old, new, 1))
    return text


def restore(shop: Shop, rel: str, text: str) -> None:
    (shop.root / rel).write_text(text)
    shop.build()


def test_first_build_builds_everything(shop: Shop) -> None:
    assert shop.first == {
        "raw": "built",
        "staging": "built",
        "marts": "built",
        "report": "built",
        "warehouse": "built",
    }
    assert (shop.root / "warehouse.duckdb").is_file()
    assert (shop.root / "out" / "report.csv").read_text().startswith("country,month,orders")


def test_second_build_runs_nothing_and_starts_no_tool(shop: Shop) -> None:
    # dbt writes target/manifest.json when it parses and run_results.json when it runs; the
    # loader writes the warehouse: none of them may be touched by a no-op build.
    watched = ["transform/target/manifest.json", "transform/target/run_results.json"]
    before = {rel: shop.mtime(rel) for rel in [*watched, "warehouse.duckdb"]}
    assert set(shop.build().values()) == {"skipped"}
    assert {rel: shop.mtime(rel) for rel in before} == before


def _file_totals(root: Path) -> dict:
    def rows(name: str) -> list[dict]:
        with open(root / "data" / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    customers, orders, payments = rows("customers"), rows("orders"), rows("payments")
    paid: dict[int, int] = defaultdict(int)
    for p in payments:
        paid[int(p["order_id"])] += int(p["amount_cents"])
    per_customer: dict[int, int] = defaultdict(int)
    for o in orders:
        per_customer[int(o["customer_id"])] += paid[int(o["id"])]
    return {
        "customers": len(customers),
        "orders": len(orders),
        "payments": len(payments),
        "cents": sum(int(p["amount_cents"]) for p in payments),
        "per_order": dict(paid),
        "per_customer": {int(c["id"]): per_customer[int(c["id"])] for c in customers},
    }


def _warehouse_totals(shop: Shop) -> dict:
    [(customers,)] = shop.query("select count(*) from marts.dim_customers")
    [(orders, payments, cents)] = shop.query(
        "select count(*), sum(payments), sum(amount_cents) from marts.fct_orders"
    )
    per_order = dict(
        shop.query("select order_id, amount_cents from marts.fct_orders where payments > 0")
    )
    per_customer = dict(
        shop.query("select customer_id, lifetime_value_cents from marts.dim_customers")
    )
    return {
        "customers": customers,
        "orders": orders,
        "payments": payments,
        "cents": cents,
        "per_order": per_order,
        "per_customer": per_customer,
    }


def test_marts_match_the_shipped_files_exactly(shop: Shop) -> None:
    expected = _file_totals(shop.root)
    assert expected["customers"] == 500 and expected["orders"] == 3000
    assert _warehouse_totals(shop) == expected


def test_saving_identical_content_reruns_nothing(shop: Shop) -> None:
    manifest = shop.mtime("transform/target/manifest.json")
    for rel in ("data/orders.csv", "transform/models/staging/stg_orders.sql"):
        path = shop.root / rel
        path.write_bytes(path.read_bytes())  # same bytes, new mtime
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    assert set(shop.build().values()) == {"skipped"}
    assert shop.mtime("transform/target/manifest.json") == manifest  # dbt did not even parse


def test_editing_a_staging_model_reruns_it_and_below_never_the_extract(shop: Shop) -> None:
    rel = "transform/models/staging/stg_customers.sql"
    old = edit(shop, rel, "    first_name,", "    upper(first_name) as first_name,")
    try:
        got = shop.build()
        assert got == {
            "raw": "skipped",
            "staging": "built",
            "marts": "built",
            "report": "built",  # its upstream changed; it reads no first names, though
            "warehouse": "built",
        }
        [(name,)] = shop.query("select first_name from marts.dim_customers where customer_id = 1")
        assert name == name.upper()
    finally:
        restore(shop, rel, old)


def test_a_model_edit_that_changes_no_row_cuts_off_the_steps_below(shop: Shop) -> None:
    rel = "transform/models/staging/stg_orders.sql"
    old = edit(shop, rel, "select\n", "-- a comment changes the file, not the rows\nselect\n")
    try:
        proc = shop.run("build", "--json", env=shop.env, check=True, timeout=TIMEOUT)
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        got = {e["target"]: e["status"] for e in events if e["event"] == "step"}
        assert got["staging"] == "built"
        assert got["marts"] == "skipped" and got["report"] == "skipped"  # early cutoff
        # Plain SQL changed, not its Jinja: the manifest stands, dbt started once (to build).
        assert "dbt: parsing" not in proc.stderr
    finally:
        restore(shop, rel, old)


def test_editing_a_model_outside_a_selection_leaves_that_target_alone(shop: Shop) -> None:
    rel = "transform/models/marts/dim_customers.sql"
    old = edit(shop, rel, "    c.country,", "    lower(c.country) as country,")
    try:
        got = shop.build()
        assert got["raw"] == "skipped" and got["staging"] == "skipped"
        assert got["marts"] == "built"
        # Within marts, only the edited model and what depends on it ran (not fct_orders).
        results = json.loads((shop.root / "transform/target/run_results.json").read_text())
        ran = {r["unique_id"] for r in results["results"]}
        assert "model.shop.dim_customers" in ran
        assert "test.shop.lifetime_value_matches_orders" in ran
        assert "model.shop.fct_orders" not in ran
        [(country,)] = shop.query("select country from marts.dim_customers where customer_id = 1")
        assert country == country.lower()
    finally:
        restore(shop, rel, old)


def test_changing_one_row_reruns_the_extract_and_the_dbt_steps(shop: Shop) -> None:
    rel = "data/payments.csv"
    path = shop.root / rel
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    fields = lines[1].rstrip("\n").split(",")
    fields[3] = str(int(fields[3]) + 1)  # amount_cents of payment 1, one cent more
    path.write_text(lines[0] + ",".join(fields) + "\n" + "".join(lines[2:]))
    try:
        got = shop.build()
        assert got == {
            "raw": "built",
            "staging": "built",
            "marts": "built",
            "report": "built",
            "warehouse": "built",
        }
        assert _warehouse_totals(shop) == _file_totals(shop.root)
    finally:
        restore(shop, rel, original)
    assert _warehouse_totals(shop) == _file_totals(shop.root)


def test_an_unchanged_re_extract_cuts_off_the_dbt_steps(shop: Shop) -> None:
    old = edit(
        shop,
        "eltmake.toml",
        'inputs = ["data/*.csv"]',
        'inputs = ["data/*.csv"]\nfreshness = "always"',
    )
    try:
        got = shop.build()
        assert got["raw"] == "built"
        assert got["staging"] == "skipped" and got["marts"] == "skipped"
    finally:
        restore(shop, "eltmake.toml", old)


def test_a_dbt_compile_error_fails_the_build_with_dbts_message(shop: Shop) -> None:
    rel = "transform/models/staging/stg_payments.sql"
    old = edit(shop, rel, "{{ source('raw', 'payments') }}", "{{ ref('no_such_model') }}")
    try:
        proc = shop.run("build", env=shop.env, timeout=TIMEOUT)
        assert proc.returncode == 1
        shown = proc.stdout + proc.stderr
        assert "dbt: parsing transform/" in proc.stderr  # its Jinja changed
        assert "staging: dbt build failed (exit code 2): Compilation Error: Model" in shown
        assert "depends on a node named 'no_such_model' which was not found" in shown
        assert "Traceback" not in shown
        got = shop.build(check=1)
        assert got["staging"] == "failed" and got["marts"] == "upstream_failed"
        assert got["raw"] == "skipped"
    finally:
        restore(shop, rel, old)
    assert set(shop.build().values()) == {"skipped"}


def test_graph_shows_the_inferred_edges(shop: Shop) -> None:
    proc = shop.run("graph", "--format", "json", env=shop.env, check=True)
    edges = {(e["from"], e["to"]): e for e in json.loads(proc.stdout)["edges"]}
    assert edges[("raw", "staging")]["inferred"] is True
    assert "raw.customers" in edges[("raw", "staging")]["why"]
    assert edges[("staging", "marts")]["inferred"] is True
    assert edges[("marts", "report")]["inferred"] is False

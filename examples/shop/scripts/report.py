"""Write out/report.csv: revenue by country and month, from the marts (read-only).

Runs as an eltmake command step after the marts. The warehouse is DuckDB (warehouse.duckdb,
opened read-only and closed before exiting: DuckDB lets one process write a file at a time), or
PostgreSQL when SHOP_WAREHOUSE=postgres (the `postgres` environment sets it), reached through the
standard libpq variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE with psycopg. The query
is plain SQL both engines run alike, so both write the same file.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
select
    c.country,
    substr(cast(o.ordered_at as varchar), 1, 7) as month,
    count(*) as orders,
    count(distinct o.customer_id) as customers,
    cast(sum(o.amount_cents) as bigint) as revenue_cents
from marts.fct_orders as o
join marts.dim_customers as c on c.customer_id = o.customer_id
where o.status <> 'returned'
group by 1, 2
order by 1, 2
"""


def rows_from_duckdb() -> tuple[list[str], list[tuple]]:
    import duckdb

    with duckdb.connect(str(ROOT / "warehouse.duckdb"), read_only=True) as con:
        cur = con.execute(QUERY)
        return [d[0] for d in cur.description], cur.fetchall()


def rows_from_postgres() -> tuple[list[str], list[tuple]]:
    try:
        import psycopg
    except ImportError:
        sys.exit("report: PostgreSQL needs psycopg: pip install 'eltmake[postgres]'")
    defaults = {"host": "localhost", "port": "5432", "user": "postgres", "dbname": "postgres"}
    env = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    kw = {k: os.environ.get(var) or defaults[k] for k, var in env.items()}  # as the loader's URL
    try:
        with psycopg.connect(**kw, connect_timeout=10) as con, con.cursor() as cur:
            cur.execute(QUERY)
            return [d.name for d in cur.description], cur.fetchall()
    except psycopg.OperationalError as e:
        sys.exit(f"report: cannot query PostgreSQL at {kw['host']}:{kw['port']}: {e}")


def main() -> None:
    out = ROOT / "out" / "report.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    postgres = os.environ.get("SHOP_WAREHOUSE") == "postgres"
    header, rows = rows_from_postgres() if postgres else rows_from_duckdb()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(out)
    print(f"wrote {len(rows)} rows to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Write out/report.csv: revenue by country and month, from the marts (read-only).

Runs as an eltmake command step after the marts; it opens the warehouse read-only and closes it
before it exits, because DuckDB lets one process write a file at a time.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
QUERY = """
select
    c.country,
    strftime(o.ordered_at, '%Y-%m') as month,
    count(*) as orders,
    count(distinct o.customer_id) as customers,
    sum(o.amount_cents) as revenue_cents
from marts.fct_orders as o
join marts.dim_customers as c using (customer_id)
where o.status <> 'returned'
group by all
order by country, month
"""


def main() -> None:
    out = ROOT / "out" / "report.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(ROOT / "warehouse.duckdb"), read_only=True) as con:
        cur = con.execute(QUERY)
        header = [d[0] for d in cur.description]
        rows = cur.fetchall()
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    tmp.replace(out)
    print(f"wrote {len(rows)} rows to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

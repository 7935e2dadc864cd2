"""Sum the amounts per country with DuckDB (which comes with eltmake)."""

import duckdb

duckdb.sql(
    "COPY (SELECT country, round(sum(amount), 2) AS total, count(*) AS sales "
    "FROM read_csv('out/clean.csv') GROUP BY country ORDER BY country) "
    "TO 'out/totals.csv' (HEADER)"
)
print("wrote out/totals.csv")

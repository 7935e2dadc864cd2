"""eltmake-target-duckdb: a Singer target that loads DuckDB without losing a row (in progress)."""


def main() -> int:
    raise SystemExit("eltmake-target-duckdb: not built yet")

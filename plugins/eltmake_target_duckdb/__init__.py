"""eltmake-target-duckdb: a Singer target that loads DuckDB in bulk without losing a row.

A standalone Singer target (it imports nothing from eltmake), so Meltano or any Singer runner can
use it. The modules, in the order a message meets them: ``cli`` (the command line), ``config``
(settings), ``target`` (the message loop and STATE handling), ``stream`` (per-stream columns and
batch files), ``names`` (identifier rule), ``columns`` (types and widening), ``warehouse`` (DuckDB).
"""

__version__ = "0.1.0"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``eltmake-target-duckdb``)."""
    from .cli import run

    return run(argv)

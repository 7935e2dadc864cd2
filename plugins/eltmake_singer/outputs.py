"""What a Singer step leaves behind: the tables its streams were loaded into, and whether they
still stand.

The destination of an extract-load is its output, like a file is a command's. A step whose key
matches its record is skipped only while the loader's DuckDB file exists and every table its
streams were loaded into is still there (:func:`check`); when one is gone the step runs, and the
streams whose tables are gone start from no bookmark (:func:`gone_streams`), so a tap that keeps
its own state (tap-spreadsheets: file modification times) delivers them again. Streams whose
tables are intact keep their bookmarks: no ``--full-refresh`` is needed.

The tables are recorded with the step's stats (``tables``: stream → [schema, table]): every stream
that delivered a record at some time, as long as the tap still announces it (a SCHEMA message),
named by the loader's rule (:func:`eltmake_singer.destinations.stream_table`). For a loader whose
rule eltmake does not know, only the DuckDB file is checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake_singer.destinations import loader_warehouse, stream_table

if TYPE_CHECKING:
    from eltmake.api import Project, Step, Warehouse


def tables_now(
    project: Project,
    loader: str,
    previous: dict[str, Any] | None,
    counts: dict[str, int],
    announced: set[str],
) -> dict[str, list[str]]:
    """The ``tables`` stat after a run: the previous run's streams the tap still announced, plus
    every stream that delivered records now, each with its (schema, table)."""
    streams = {s for s in (previous or {}) if s in announced or not announced}
    streams |= {s for s, n in counts.items() if n > 0}
    out: dict[str, list[str]] = {}
    for s in sorted(streams):
        place = stream_table(project, loader, s)
        if place is not None:
            out[s] = list(place)
    return out


def recorded_tables(project: Project, loader: str, record: dict[str, Any] | None) -> dict:
    """stream → (schema, table) from a record: its ``tables`` stat, or for a record written before
    eltmake kept one, the streams of its last run."""
    stats = (record or {}).get("stats") or {}
    tables = stats.get("tables")
    if isinstance(tables, dict):
        return {s: tuple(t) for s, t in tables.items() if isinstance(t, list) and len(t) == 2}
    streams = stats.get("streams")
    out = {}
    if isinstance(streams, dict):
        for s, n in streams.items():
            place = stream_table(project, loader, s) if n else None
            if place is not None:
                out[s] = place
    return out


def _path(project: Project, wh: Warehouse) -> Path:
    p = Path(os.path.expanduser(wh.settings["path"]))
    return p if p.is_absolute() else project.root / p


def _missing(project: Project, step: Step, wh: Warehouse, places: list) -> list[str] | str:
    """The missing tables, or a reason when the warehouse cannot be asked (a server down)."""
    import eltmake_warehouse as W

    if wh.type == "duckdb":
        return W.duckdb_missing(project, _path(project, wh), places)
    if wh.type == "postgres":
        try:
            return W.pg_missing_now(
                wh.settings,
                project.environ,
                places,
                where=f"loaders.{wh.name}.config",
                password=loader_password(project, wh.name),
            )
        except W.Unreachable as e:
            return f"cannot check its tables: {e}"
        except W.CannotCheck as e:  # psycopg is not installed: say so, check nothing
            W.note_once(str(e))
    return []


def loader_password(project: Project, loader: str) -> str | None:
    """The loader's own password setting, when its config has one (else PGPASSWORD applies)."""
    from eltmake_singer.config import resolve_config, tool

    value = resolve_config(project, tool(project, "loaders", loader)).get("password")
    return str(value) if value not in (None, "") else None


def check(project: Project, step: Step, record: dict[str, Any]) -> str | None:
    """Why the step must run although its key matches (its destination is not what it
    recorded), or None. One ``stat`` per DuckDB file when nothing changed."""
    loader = step.target.config["load"]
    wh = loader_warehouse(project, loader)
    if wh is None:
        return None
    if wh.type == "duckdb":
        path = _path(project, wh)
        if not path.exists():
            return f"DuckDB file {os.path.relpath(path, project.root)} is missing"
    tables = recorded_tables(project, loader, record)
    if not tables:
        return None
    missing = _missing(project, step, wh, sorted(set(tables.values())))
    if isinstance(missing, str):
        return missing
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return f"table {missing[0]} is missing{more}"


def gone_streams(project: Project, step: Step, record: dict[str, Any] | None) -> list[str] | None:
    """The recorded streams whose tables are gone now (they restart from no bookmark), [] when
    all stand; None when the whole destination is gone and the record names no stream (then no
    bookmark at all is passed)."""
    loader = step.target.config["load"]
    wh = loader_warehouse(project, loader)
    if wh is None or record is None:
        return []
    tables = recorded_tables(project, loader, record)
    if wh.type == "duckdb" and not _path(project, wh).exists():
        return sorted(tables) if tables else None
    if not tables:
        return []
    missing = _missing(project, step, wh, sorted(set(tables.values())))
    if isinstance(missing, str):
        return []  # the connection check before the run says why
    gone = set(missing)
    return sorted(s for s, t in tables.items() if f"{t[0]}.{t[1]}" in gone)

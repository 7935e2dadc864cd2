"""Where loaders write: the warehouse each ``[loaders.NAME]`` fills, for step locks and for other
plugins (``eltmake_warehouses``: dbt writes its models into the same database by default).

The one rule for "is this a DuckDB loader": eltmake's own loader, a ``target-duckdb`` package, or
a ``path`` ending in ``.duckdb``. A DuckDB file admits one writer process, so every step that
writes it shares the lock named after its path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eltmake.api import Warehouse, path_lock
from eltmake_singer.config import BUNDLED_LOADER

if TYPE_CHECKING:
    from eltmake.api import Project


def loader_warehouse(project: Project, name: str) -> Warehouse | None:
    """The warehouse loader ``name`` writes, when eltmake can tell; else None."""
    raw = (project.tables.get("loaders") or {}).get(name)
    if not isinstance(raw, dict):
        return None
    cfg = raw.get("config") or {}
    if not isinstance(cfg, dict):
        return None
    path = cfg.get("path") or cfg.get("filepath")
    duck = raw.get("executable") == BUNDLED_LOADER or "target-duckdb" in str(raw.get("pip_url", ""))
    if isinstance(path, str) and path and (duck or path.endswith(".duckdb")):
        # Relative to the project folder when inside it, so keys agree across machines.
        where = path_lock(project, path)
        schema = cfg.get("default_target_schema")
        settings = {"path": where, **({"schema": schema} if isinstance(schema, str) else {})}
        return Warehouse(name, "duckdb", settings, [where])
    return None


def all_warehouses(project: Project) -> list[Warehouse]:
    out = []
    for name in project.tables.get("loaders") or {}:
        w = loader_warehouse(project, name)
        if w is not None:
            out.append(w)
    return out

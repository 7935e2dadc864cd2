"""Where loaders write: the warehouse each ``[loaders.NAME]`` fills, for step locks, for the
checks that its tables still stand, and for other plugins (``eltmake_warehouses``: dbt writes its
models into the same database by default).

The rules:

* a DuckDB loader is eltmake's own loader, a ``target-duckdb`` package, or a ``path`` ending in
  ``.duckdb``. A DuckDB file admits one writer process, so every step that writes it shares the
  lock named after its path;
* a PostgreSQL loader is one whose ``pip_url`` or ``executable`` names ``postgres``
  (``meltanolabs-target-postgres``, ``pipelinewise-target-postgres``); its settings are ``host``,
  ``port``, ``user``, ``database`` (or ``dbname``) and ``default_target_schema``, after
  ``${VAR}`` and ``TARGET_POSTGRES_HOST``-style overrides, never the password. A server takes
  any number of writers: no lock.

Which table a stream lands in is known for eltmake's own DuckDB loader (its naming rule, with
``schema_mapping`` and ``default_target_schema``) and for ``meltanolabs-target-postgres`` (the
Singer SDK's rule); for any other loader eltmake knows only the database (:func:`stream_table`
returns None), so only the DuckDB file's existence can be checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eltmake.api import Warehouse, path_lock
from eltmake_singer.config import BUNDLED_LOADER

if TYPE_CHECKING:
    from eltmake.api import Project

# target-postgres' default schema when its config names none (its settings' default).
SDK_POSTGRES_DEFAULT_SCHEMA = "melty"


def _raw_loader(project: Project, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    raw = (project.tables.get("loaders") or {}).get(name)
    if not isinstance(raw, dict):
        return None
    cfg = raw.get("config") or {}
    if not isinstance(cfg, dict):
        return None
    return raw, cfg


def is_postgres_loader(raw: dict[str, Any]) -> bool:
    return "postgres" in f"{raw.get('pip_url', '')} {raw.get('executable', '')}".lower()


def loader_warehouse(project: Project, name: str) -> Warehouse | None:
    """The warehouse loader ``name`` writes, when eltmake can tell; else None."""
    found = _raw_loader(project, name)
    if found is None:
        return None
    raw, cfg = found
    path = cfg.get("path") or cfg.get("filepath")
    duck = raw.get("executable") == BUNDLED_LOADER or "target-duckdb" in str(raw.get("pip_url", ""))
    if isinstance(path, str) and path and (duck or path.endswith(".duckdb")):
        # Relative to the project folder when inside it, so keys agree across machines.
        where = path_lock(project, path)
        schema = cfg.get("default_target_schema")
        settings = {"path": where, **({"schema": schema} if isinstance(schema, str) else {})}
        return Warehouse(name, "duckdb", settings, [where])
    if is_postgres_loader(raw):
        from eltmake_singer.config import resolve_config, tool

        resolved = resolve_config(project, tool(project, "loaders", name))
        settings = {
            **_from_url(resolved.get("sqlalchemy_url")),
            **{
                k: v
                for k, v in {
                    "host": resolved.get("host"),
                    "port": resolved.get("port"),
                    "user": resolved.get("user"),
                    "database": resolved.get("database") or resolved.get("dbname"),
                }.items()
                if v not in (None, "")
            },
            "schema": resolved.get("default_target_schema"),
        }
        clean = {k: v for k, v in settings.items() if v not in (None, "")}
        if isinstance(clean.get("port"), str) and clean["port"].isdigit():
            clean["port"] = int(clean["port"])
        return Warehouse(name, "postgres", clean, [])
    return None


def _from_url(url: Any) -> dict[str, Any]:
    """host, port, user and database of a ``postgresql+driver://user@host:port/db`` URL (its
    password, if any, is left out: settings never hold one)."""
    if not isinstance(url, str) or "://" not in url:
        return {}
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    out = {
        "host": parts.hostname,
        "port": port,
        "user": unquote(parts.username) if parts.username else None,
        "database": unquote(parts.path.lstrip("/")) or None,
    }
    return {k: v for k, v in out.items() if v not in (None, "")}


def stream_table(project: Project, loader: str, stream: str) -> tuple[str, str] | None:
    """(schema, table) that loader ``loader`` loads ``stream`` into, when eltmake knows its
    naming rule (its own DuckDB loader, meltanolabs-target-postgres); else None."""
    found = _raw_loader(project, loader)
    if found is None:
        return None
    raw, cfg = found
    if raw.get("executable") == BUNDLED_LOADER and not raw.get("pip_url"):
        from eltmake_target_duckdb.names import sanitize, split_stream

        source_schema, table = split_stream(stream)
        mapping = cfg.get("schema_mapping") or {}
        target = None
        if isinstance(mapping, dict):
            target = mapping.get(stream) or (mapping.get(source_schema) if source_schema else None)
            if isinstance(target, dict):
                target = target.get("target_schema")
        schema = target or cfg.get("default_target_schema") or "main"
        return sanitize(str(schema)), sanitize(table)
    if "meltanolabs-target-postgres" in str(raw.get("pip_url", "")):
        # The Singer SDK's SQLSink: the table is the stream's last "-" part, as is; the schema
        # is default_target_schema, else the stream's schema part, else the setting's default.
        parts = stream.split("-")
        table = stream if len(parts) == 1 else parts[-1]
        schema = cfg.get("default_target_schema")
        if schema is None:
            schema = SDK_POSTGRES_DEFAULT_SCHEMA
        if not schema and len(parts) in (2, 3):
            schema = parts[-2]
        return (str(schema), table) if schema else None
    return None


def all_warehouses(project: Project) -> list[Warehouse]:
    out = []
    for name in project.tables.get("loaders") or {}:
        w = loader_warehouse(project, name)
        if w is not None:
            out.append(w)
    return out

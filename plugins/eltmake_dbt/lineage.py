"""Which targets a dbt target reads from, found without a hand-written ``deps``.

* A dbt source (schema + table) that an extract-load target loads: the loader's
  ``default_target_schema`` plus the stream names the extractor's config tells (tap-jsonl's
  ``stream_name``, tap-spreadsheets' ``files[].table_name``, a ``tables``/``streams`` list, or the
  ``select`` patterns ``orders.*``). Names are compared the way eltmake-target-duckdb names tables
  (lower case, ``[a-z0-9_]``, ``schema-table`` streams split at the dash).
* A model that another dbt target over the same dbt project selects: that target runs first.

Everything here reads the project file and the cached manifest summary: no dbt run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake.api import Project

_UNSAFE = re.compile(r"[^a-z0-9_]")
_WILD = set("*?[]")


def norm(name: str) -> str:
    return _UNSAFE.sub("_", str(name).lower())


def table_of_stream(stream: str) -> str:
    """``public-orders`` → ``orders``, as Singer targets (and eltmake-target-duckdb) name it."""
    parts = stream.split("-")
    if len(parts) == 2:
        return norm(parts[1])
    if len(parts) > 2:
        return norm("_".join(parts[2:]))
    return norm(stream)


def extractor_streams(extractor: dict[str, Any], target_select: list[str] | None) -> set[str]:
    """The stream names an extract delivers, as far as its configuration tells."""
    cfg = extractor.get("config") or {}
    found: set[str] = set()
    if isinstance(cfg, dict):
        for key in ("stream_name", "table_name", "entity"):
            if isinstance(cfg.get(key), str):
                found.add(cfg[key])
        for key in ("files", "tables", "streams", "csv_files_definition"):
            items = cfg.get(key)
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, str) and key == "streams":
                    found.add(item)
                elif isinstance(item, dict):
                    for name_key in ("table_name", "stream_name", "entity", "name", "table"):
                        if isinstance(item.get(name_key), str):
                            found.add(item[name_key])
                            break
    for patterns in (target_select, extractor.get("select")):
        for pat in patterns or []:
            if not isinstance(pat, str) or pat.startswith("!"):
                continue
            stream = pat.split(".", 1)[0]
            if stream and _WILD.isdisjoint(stream):
                found.add(stream)
    return found


def loaded_tables(project: Project) -> dict[tuple[str, str], list[str]]:
    """``{(schema, table): [extract-load targets that load it]}``."""
    loaders = project.tables.get("loaders") or {}
    extractors = project.tables.get("extractors") or {}
    out: dict[tuple[str, str], list[str]] = {}
    for t in project.targets.values():
        cfg = t.config
        if not isinstance(cfg.get("extract"), str) or not isinstance(cfg.get("load"), str):
            continue
        loader = loaders.get(cfg["load"])
        extractor = extractors.get(cfg["extract"])
        if not isinstance(loader, dict) or not isinstance(extractor, dict):
            continue
        lcfg = loader.get("config") or {}
        schema = lcfg.get("default_target_schema") if isinstance(lcfg, dict) else None
        if not isinstance(schema, str):
            schema = "main" if "duckdb" in str(loader.get("executable", "")) else None
        if schema is None:
            continue
        select = cfg.get("select") if isinstance(cfg.get("select"), list) else None
        for stream in extractor_streams(extractor, select):
            out.setdefault((norm(schema), table_of_stream(stream)), []).append(t.name)
    return out

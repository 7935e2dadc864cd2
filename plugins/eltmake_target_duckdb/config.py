"""Settings: target-duckdb's config keys, read and checked once, before any message is read.

A drop-in replacement must accept every key a target-duckdb config may hold. Keys that have a
meaning here are honoured; keys that only made sense for target-duckdb's CSV loading are accepted
and ignored (listed in IGNORED); an unknown key gets a one-line warning with a "did you mean" hint,
because Singer runners such as Meltano may pass settings of their own.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .errors import InputError

DEFAULT_BATCH_SIZE_ROWS = 100_000

# Accepted for compatibility with target-duckdb 0.8.0; they change nothing here (see the docs).
IGNORED = frozenset(
    {
        "flush_all_streams",  # every flush covers all streams already
        "validate_records",  # types are always checked while loading
        "parallelism",
        "max_parallelism",
        "delimiter",  # target-duckdb's CSV files; no CSV here
        "quotechar",
        "database",
        "dbname",
    }
)
KNOWN = frozenset(
    {
        "path",
        "filepath",
        "default_target_schema",
        "schema_mapping",
        "batch_size_rows",
        "batch_wait_limit_seconds",
        "add_metadata_columns",
        "hard_delete",
        "primary_key_required",
        "data_flattening_max_level",
        "temp_dir",
        "settings",
        "token",
    }
)
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Settings:
    """What the target needs to know, with target-duckdb's defaults unless the docs say otherwise."""

    path: str
    default_target_schema: str = "main"
    schema_mapping: dict[str, str] = field(default_factory=dict)
    batch_size_rows: int = DEFAULT_BATCH_SIZE_ROWS
    batch_wait_limit_seconds: float | None = None
    add_metadata_columns: bool = False
    hard_delete: bool = False
    primary_key_required: bool = False
    temp_dir: str | None = None
    duckdb_settings: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def metadata_columns(self) -> bool:
        """hard_delete needs _sdc_deleted_at, so it implies the metadata columns (as before)."""
        return self.add_metadata_columns or self.hard_delete


def load_settings(path: str | Path) -> Settings:
    """Read and check a config file; every problem is an InputError naming the file and key."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"config file {path} must hold a JSON object")
    return parse_settings(raw, source=str(path))


def parse_settings(raw: dict[str, Any], source: str = "config") -> Settings:
    """Turn a config object into Settings (split from load_settings so it is easy to test)."""

    def bad(key: str, what: str) -> InputError:
        return InputError(f"{source}: setting '{key}' {what}")

    warnings = []
    for key in raw:
        if key in KNOWN or key in IGNORED:
            continue
        close = difflib.get_close_matches(key, sorted(KNOWN | IGNORED), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        warnings.append(f"ignoring unknown setting '{key}'{hint}")

    db_path = raw.get("path", raw.get("filepath"))
    if not isinstance(db_path, str) or not db_path:
        raise bad("path", "is required: the DuckDB database file to load into")

    schema = raw.get("default_target_schema") or "main"
    if not isinstance(schema, str):
        raise bad("default_target_schema", "must be a string")

    mapping: dict[str, str] = {}
    raw_mapping = raw.get("schema_mapping") or {}
    if not isinstance(raw_mapping, dict):
        raise bad("schema_mapping", 'must be an object like {"public": {"target_schema": "raw"}}')
    for name, target in raw_mapping.items():
        if isinstance(target, dict):
            target = target.get("target_schema")
        if not isinstance(target, str) or not target:
            raise bad(f"schema_mapping.{name}", "needs a target_schema string")
        mapping[name] = target

    batch = raw.get("batch_size_rows", DEFAULT_BATCH_SIZE_ROWS)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise bad("batch_size_rows", "must be a positive integer")

    wait = raw.get("batch_wait_limit_seconds")
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0
    ):
        raise bad("batch_wait_limit_seconds", "must be a number of seconds")

    flags = {}
    for key in ("add_metadata_columns", "hard_delete", "primary_key_required"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise bad(key, "must be true or false")
        flags[key] = value

    level = raw.get("data_flattening_max_level", 0)
    if level not in (0, None):
        raise bad(
            "data_flattening_max_level",
            "is not supported: nested objects load into JSON columns (use 0 and unnest in dbt)",
        )

    temp_dir = raw.get("temp_dir")
    if temp_dir is not None and not isinstance(temp_dir, str):
        raise bad("temp_dir", "must be a directory path")

    db_settings = raw.get("settings") or {}
    if not isinstance(db_settings, dict):
        raise bad("settings", 'must be an object of DuckDB settings, like {"threads": 2}')
    for name in db_settings:
        if not _SETTING_NAME.fullmatch(name):
            raise bad(f"settings.{name}", "is not a DuckDB setting name")

    token = raw.get("token")
    if token is not None and not isinstance(token, str):
        raise bad("token", "must be a string")

    return Settings(
        path=db_path,
        default_target_schema=schema,
        schema_mapping=mapping,
        batch_size_rows=batch,
        batch_wait_limit_seconds=float(wait) if wait is not None else None,
        temp_dir=temp_dir,
        duckdb_settings={name: _setting_text(value) for name, value in db_settings.items()},
        token=token,
        warnings=tuple(warnings),
        **flags,
    )


def _setting_text(value: Any) -> str:
    """DuckDB's SET takes text; JSON booleans must read as DuckDB's true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

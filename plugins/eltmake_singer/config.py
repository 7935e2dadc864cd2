"""The ``[extractors]``, ``[loaders]`` and ``[mappers]`` tables and the Singer target keys:
validation, resolved config (with Meltano-style environment overrides) and secrets.

Secrets: a setting is secret when the tool's ``secrets`` lists it or its name looks like one
(password, token, secret, a ``key``). A secret's value reaches the tool only through the config
file in a private folder; everywhere else (log lines, errors, ``eltmake config``, the cache key,
the run history) it is ``****`` or a digest.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import (
    MASK,
    SECRET_NAME,
    ConfigError,
    ToolSpec,
    did_you_mean,
    digest,
    parse_duration,
)

if TYPE_CHECKING:
    from eltmake.api import Project, Target

ROLES = {"extractors": "extractor", "loaders": "loader", "mappers": "mapper"}
TABLE_DOCS = {
    "extractors": "Singer taps: pip_url, executable, config, select, capabilities, secrets",
    "loaders": "Singer targets: pip_url, executable, config, secrets",
    "mappers": "Singer stream-map steps between a tap and a target: pip_url, executable, config",
}
TOOL_KEYS: dict[str, tuple[type, ...]] = {
    "pip_url": (str,),
    "executable": (str,),
    "config": (dict,),
    "capabilities": (list,),
    "secrets": (list,),
    "description": (str,),
}
EXTRACTOR_KEYS = {**TOOL_KEYS, "select": (list,)}
RECIPE_KEYS: dict[str, tuple[type, ...]] = {
    "extract": (str,),
    "load": (str,),
    "map": (list, str),
    "select": (list,),
    "state_id": (str,),
    "full_refresh": (bool,),
    "timeout": (int, float, str),
    "max_line_bytes": (int,),
    "buffer_mb": (int, float),
}
KNOWN_CAPABILITIES = {
    "about",
    "activate-version",
    "batch",
    "catalog",
    "discover",
    "log-based",
    "properties",
    "schema-flattening",
    "state",
    "stream-maps",
    "structured-logging",
    "test",
    "target-schema",
    "validate-records",
    "hard-delete",
    "datatype-failsafe",
    "soft-delete",
}
DEFAULT_SELECT = ["*.*"]  # Meltano's default: every stream, every property
DEFAULT_BUFFER_MB = 16
BUNDLED_LOADER = "eltmake-target-duckdb"  # eltmake's own loader, installed with this plugin
DEFAULT_MAX_LINE = 16 * 1024 * 1024


@dataclass
class ToolConfig:
    """One ``[extractors.NAME]`` / ``[loaders.NAME]`` / ``[mappers.NAME]`` table, as written."""

    table: str  # extractors | loaders | mappers
    name: str
    pip_url: str | None
    executable: str
    config: dict[str, Any] = field(default_factory=dict)
    select: list[str] | None = None
    capabilities: list[str] | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def role(self) -> str:
        return ROLES[self.table]

    @property
    def env_prefix(self) -> str:
        """``TAP_JSONL_`` for ``tap-jsonl``: Meltano's environment variable prefix."""
        return re.sub(r"[^A-Za-z0-9]", "_", self.name).upper() + "_"

    def spec(self) -> ToolSpec:
        identity = None
        if self.pip_url is None and self.executable == BUNDLED_LOADER:
            # Ships with this plugin: its steps change when the plugin's version does.
            from eltmake_target_duckdb import __version__

            identity = {"bundled": BUNDLED_LOADER, "version": __version__}
        return ToolSpec(
            self.name, self.pip_url, self.executable, plugin="singer", identity=identity
        )


def tool(project: Project, table: str, name: str) -> ToolConfig:
    """The tool ``name`` of ``table`` (validated at load time)."""
    raw = project.tables.get(table, {})[name]
    return ToolConfig(
        table=table,
        name=name,
        pip_url=raw.get("pip_url") or None,
        executable=raw.get("executable") or name,
        config=dict(raw.get("config", {})),
        select=list(raw["select"]) if "select" in raw else None,
        capabilities=list(raw["capabilities"]) if "capabilities" in raw else None,
        secrets=list(raw.get("secrets", [])),
    )


def all_tools(project: Project) -> list[ToolConfig]:
    return [tool(project, t, n) for t in ROLES for n in project.tables.get(t, {})]


def find_tool(project: Project, name: str) -> ToolConfig | None:
    """A tool by name, whichever table defines it."""
    for table in ROLES:
        if name in project.tables.get(table, {}):
            return tool(project, table, name)
    return None


# --- validation ---------------------------------------------------------------------------------


def validate(project: Project) -> None:
    """Check every Singer table and target; raise a one-line ConfigError at the first problem."""
    f = project.file.name
    seen: dict[str, str] = {}
    for table in ROLES:
        for name, raw in project.tables.get(table, {}).items():
            _validate_tool(f, table, name, raw)
            if name in seen:
                raise ConfigError(
                    f"{f}: {table}.{name}: the name {name!r} is already used by [{seen[name]}.{name}];"
                    " tool names must be unique across extractors, loaders and mappers "
                    "(install, invoke and config name tools alone): rename one"
                )
            seen[name] = table


def _validate_tool(f: str, table: str, name: str, raw: Any) -> None:
    where = f"{f}: {table}.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table ([{table}.{name}]), not a value")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"{where}: the name may hold only letters, digits, '-', '_' and '.'; rename it"
        )
    keys = EXTRACTOR_KEYS if table == "extractors" else TOOL_KEYS
    for key, value in raw.items():
        if key not in keys:
            owner = " (only extractors have select; put it there)" if key == "select" else ""
            hint = did_you_mean(key, keys) or f"; allowed: {', '.join(sorted(keys))}"
            raise ConfigError(f"{where}: unknown key {key!r}{owner}{hint}")
        if not isinstance(value, keys[key]):
            want = " or ".join(t.__name__ for t in keys[key])
            raise ConfigError(f"{where}.{key}: must be a {want}, not {type(value).__name__}")
    for key in ("pip_url", "executable"):
        if key in raw and not raw[key].strip():
            raise ConfigError(f"{where}.{key}: is empty; remove it or give a value")
    for key in ("select", "capabilities", "secrets"):
        items = raw.get(key, [])
        if not all(isinstance(i, str) and i for i in items):
            raise ConfigError(f"{where}.{key}: must be a list of non-empty strings")
    for cap in raw.get("capabilities", []):
        if cap not in KNOWN_CAPABILITIES:
            raise ConfigError(
                f"{where}.capabilities: unknown capability {cap!r}"
                f"{did_you_mean(cap, KNOWN_CAPABILITIES)}; known: "
                f"{', '.join(sorted(KNOWN_CAPABILITIES))}"
            )
    if "select" in raw:
        from eltmake_singer.catalog import parse_pattern

        for pattern in raw["select"]:
            parse_pattern(pattern, f"{where}.select")


def validate_target(project: Project, target: Target) -> None:
    f = project.file.name
    t = target.config
    where = f"{f}: targets.{target.name}"
    refs = [("extract", "extractors", t.get("extract")), ("load", "loaders", t.get("load"))]
    maps = t.get("map", [])
    maps = [maps] if isinstance(maps, str) else maps
    refs += [("map", "mappers", m) for m in maps]
    if "load" not in t:
        loaders = sorted(project.tables.get("loaders", {}))
        hint = (
            f" (defined: {', '.join(loaders)})" if loaders else " and define it in [loaders.NAME]"
        )
        raise ConfigError(f'{where}: an extract step needs `load = "LOADER"`{hint}')
    for key, table, ref in refs:
        if not isinstance(ref, str) or not ref:
            raise ConfigError(f"{where}.{key}: must name a table of [{table}]")
        defined = project.tables.get(table, {})
        if ref not in defined:
            other = next((o for o in ROLES if ref in project.tables.get(o, {})), None)
            if other:
                hint = f" ({ref!r} is defined in [{other}], not [{table}])"
            else:
                hint = did_you_mean(ref, defined) or (
                    f"; defined: {', '.join(sorted(defined))}"
                    if defined
                    else f"; define it as [{table}.{ref}]"
                )
            raise ConfigError(f"{where}.{key}: no {ROLES[table]} named {ref!r}{hint}")
    if len(set(maps)) != len(maps):
        raise ConfigError(f"{where}.map: names a mapper twice; list each once, in order")
    for pattern in t.get("select", []):
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}.select: must be a list of strings")
        from eltmake_singer.catalog import parse_pattern

        parse_pattern(pattern, f"{where}.select")
    if "state_id" in t and not t["state_id"].strip():
        raise ConfigError(f"{where}.state_id: is empty; remove it (default: the target's name)")
    timeout_seconds(t.get("timeout"), f"{where}.timeout")
    for key in ("max_line_bytes", "buffer_mb"):
        value = t.get(key)
        if value is not None and (
            isinstance(value, bool) or not math.isfinite(value) or value <= 0
        ):
            raise ConfigError(f"{where}.{key}: must be a positive finite number, not {value!r}")


def timeout_seconds(value: Any, where: str) -> float | None:
    """Seconds from ``timeout`` (a number of seconds or a duration such as "30m"), or None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f'{where}: must be seconds or a duration such as "30m", not {value!r}')
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where}: must be a finite number of seconds above 0, not {value!r}")
        return float(value)
    try:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ConfigError(f"{where}: must be more than 0 seconds, not {value!r}")
        return seconds
    except ValueError:
        raise ConfigError(
            f'{where}: {value!r} is not a number of seconds or a duration such as "90s", "30m", "2h"'
        ) from None


# --- resolved config and secrets ----------------------------------------------------------------


def resolve_config(project: Project, t: ToolConfig) -> dict[str, Any]:
    """The config a tool receives: its table's ``config`` with environment overrides applied.

    ``<TOOL_NAME>_<SETTING>`` (upper case, ``-`` as ``_``; e.g. ``TAP_JSONL_PATH``) overrides a
    setting given in ``config`` or listed in ``secrets``, as in Meltano. A value for a setting
    whose configured value is not a string (a number, a list) is read as JSON.
    """
    config = dict(t.config)
    names = list(config) + [s for s in t.secrets if s not in config]
    env = project.environ
    for setting in names:
        var = t.env_prefix + re.sub(r"[^A-Za-z0-9]", "_", setting).upper()
        if var not in env:
            continue
        value: Any = env[var]
        current = config.get(setting)
        if current is not None and not isinstance(current, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(
                    f"environment variable {var}: {MASK if is_secret(t, setting) else repr(value)}"
                    f" is not valid for {t.table}.{t.name}.config.{setting}, which is a "
                    f'{type(current).__name__}; write it as JSON (e.g. 5, true, ["a"])'
                ) from None
        config[setting] = value
    return config


def is_secret(t: ToolConfig, setting: str) -> bool:
    return setting in t.secrets or bool(SECRET_NAME.search(setting))


def redact(t: ToolConfig, config: Any, _top: bool = True) -> Any:
    """A copy of ``config`` with every secret value shown as ``****`` (at any depth)."""
    if isinstance(config, dict):
        return {
            k: MASK
            if (is_secret(t, k) if _top else bool(SECRET_NAME.search(k))) and v not in (None, "")
            else redact(t, v, False)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [redact(t, v, False) for v in config]
    return config


def secret_values(t: ToolConfig, config: Any, _top: bool = True) -> list[str]:
    """Every secret value in ``config`` as text, to scrub from log lines and errors."""
    out: list[str] = []
    if isinstance(config, dict):
        for k, v in config.items():
            secret = is_secret(t, k) if _top else bool(SECRET_NAME.search(k))
            if secret and v not in (None, ""):
                out += _leaves(v)
            else:
                out += secret_values(t, v, False)
    elif isinstance(config, list):
        for v in config:
            out += secret_values(t, v, False)
    return out


def _leaves(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [s for x in v.values() for s in _leaves(x)]
    if isinstance(v, list):
        return [s for x in v for s in _leaves(x)]
    return [str(v)] if isinstance(v, str | int | float) and not isinstance(v, bool) else []


def key_facts(project: Project, t: ToolConfig, config: dict[str, Any]) -> dict[str, Any]:
    """What of a tool's config enters a step's key: non-secret values as they are, secrets only
    as a digest (salted with the project and tool names, so equal passwords in two projects do
    not give equal digests)."""
    secrets = {k: v for k, v in config.items() if is_secret(t, k) and v not in (None, "")}
    facts: dict[str, Any] = {"config": redact(t, config)}
    nested = secret_values(t, {k: v for k, v in config.items() if k not in secrets})
    if secrets or nested:
        facts["secrets_digest"] = digest(
            ["eltmake-secrets", project.name, t.name, sorted(secrets.items()), sorted(nested)]
        )[:32]
    return facts


def write_config(folder: Path, name: str, config: dict[str, Any]) -> Path:
    """Write ``config`` as JSON to ``folder/name``, readable by the owner only from the start."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    return path

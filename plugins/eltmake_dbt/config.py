"""The ``[transformers.NAME]`` tables and the dbt target keys: validation and resolved settings.

A transformer is one dbt project run by one dbt installation. Everything here is cheap (a few
``stat`` calls at most) because it runs on every load, including no-op builds.

The profile: dbt needs a ``profiles.yml``. When the transformer names none (no ``profiles_dir``
and no ``profiles.yml`` in the dbt project) and the eltmake project has a DuckDB loader, we write
one for that DuckDB file under ``.eltmake/dbt/NAME/``: the example, and most laptop projects, then
need no hand-written profile, and ``--env prod`` (which overrides the loader's ``path``) moves the
dbt models to the same file as the loads.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import ConfigError, ToolSpec, did_you_mean, warehouses, write_atomic

if TYPE_CHECKING:
    from eltmake.api import Project, Target

KIND = "dbt"
TABLE = "transformers"
TABLE_DOC = "dbt projects and the dbt installation that runs them: pip_url, project_dir, profiles_dir, target, vars"
PIN = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"
TRANSFORMER_KEYS: dict[str, tuple[type, ...]] = {
    "pip_url": (str,),
    "executable": (str,),
    "project_dir": (str,),
    "profiles_dir": (str,),
    "target": (str,),
    "vars": (dict,),
    "env": (dict,),
    "threads": (int,),
    "description": (str,),
}
RECIPE_KEYS: dict[str, tuple[type, ...]] = {
    "transform": (str,),
    "command": (str,),
    "select": (str, list),
    "exclude": (str, list),
    "vars": (dict,),
    "full_refresh": (bool,),
}
COMMANDS = ("build", "run", "test", "seed", "snapshot")
DUCKDB_LOADER = "eltmake-target-duckdb"
PROFILE_TARGET = "eltmake"
_PROFILE_RE = re.compile(r"""^profile\s*:\s*['"]?([A-Za-z0-9_\-]+)['"]?\s*(?:#.*)?$""", re.M)


@dataclass
class Transformer:
    """One ``[transformers.NAME]`` table, resolved against the project folder."""

    name: str
    pip_url: str | None
    executable: str
    project_dir: Path  # absolute
    profiles_dir: Path | None  # absolute; None: generated for the DuckDB loader
    duckdb_path: str | None  # the loader's path as configured (for a generated profile)
    target: str | None
    vars: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 4

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.pip_url, self.executable, plugin="dbt")

    def state_dir(self, project: Project) -> Path:
        """``.eltmake/dbt/NAME``: the generated profile, the parse cache and the lock."""
        return project.state_dir / "dbt" / self.name

    def rel(self, project: Project, path: str) -> str:
        """A path inside the dbt project, relative to the eltmake project root (for keys)."""
        return os.path.normpath(os.path.relpath(self.project_dir / path, project.root))


def _where(project: Project, *keys: str) -> str:
    return project.where(*keys)


def validate(project: Project) -> None:
    """Check every transformer table and every dbt target; one clear line per problem."""
    tables = project.tables.get(TABLE, {})
    for name, raw in tables.items():
        where = _where(project, TABLE, name)
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table ([{TABLE}.{name}]), not a value")
        for key, value in raw.items():
            if key not in TRANSFORMER_KEYS:
                hint = did_you_mean(key, TRANSFORMER_KEYS) or (
                    f"; allowed: {', '.join(sorted(TRANSFORMER_KEYS))}"
                )
                raise ConfigError(f"{where}: unknown key {key!r}{hint}")
            types = TRANSFORMER_KEYS[key]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                want = " or ".join(t.__name__ for t in types)
                raise ConfigError(f"{where}.{key}: must be a {want}, not {type(value).__name__}")
        for key in ("pip_url", "executable", "project_dir", "profiles_dir", "target"):
            if isinstance(raw.get(key), str) and not raw[key].strip():
                raise ConfigError(f"{where}.{key}: is empty; give a value or remove the key")
        threads = raw.get("threads")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ConfigError(
                f"{where}.threads: must be a whole number of at least 1, not {threads!r}"
            )
        for k, v in (raw.get("env") or {}).items():
            if not isinstance(v, str | int | float | bool):
                raise ConfigError(f"{where}.env.{k}: must be a string, not {v!r:.40}")
        if "pip_url" not in raw and "executable" not in raw:
            raise ConfigError(
                f'{where}: needs pip_url (e.g. pip_url = "{PIN}"), or `executable` for a dbt '
                "already on PATH"
            )
        if "project_dir" not in raw:
            raise ConfigError(
                f'{where}: needs project_dir, the folder holding dbt_project.yml (e.g. "transform")'
            )
        tf = transformer(project, name)
        if not (tf.project_dir / "dbt_project.yml").is_file():
            raise ConfigError(
                f"{where}.project_dir: no dbt_project.yml in {raw['project_dir']!r}; "
                "point it at your dbt project folder (or create one with `dbt init`)"
            )
        if tf.profiles_dir is not None and not (tf.profiles_dir / "profiles.yml").is_file():
            raise ConfigError(
                f"{where}.profiles_dir: no profiles.yml in {raw['profiles_dir']!r}; "
                "remove profiles_dir to use a generated DuckDB profile, or write one there"
            )
        if tf.profiles_dir is None and tf.duckdb_path is None:
            raise ConfigError(
                f"{where}: no dbt profile: set profiles_dir to the folder of your profiles.yml, put "
                "a profiles.yml in project_dir, or add a DuckDB loader "
                f'([loaders.duckdb] executable = "{DUCKDB_LOADER}", config.path = "x.duckdb")'
            )


def validate_target(project: Project, t: Target) -> None:
    """Check one dbt target (after its transformers were checked)."""
    tables = project.tables.get(TABLE, {})
    where = _where(project, "targets", t.name)
    cfg = t.config
    ref = cfg["transform"]
    if ref not in tables:
        hint = did_you_mean(ref, tables) or (
            f"; defined: {', '.join(sorted(tables))}"
            if tables
            else f'; add [transformers.{ref}] with pip_url = "{PIN}" and project_dir'
        )
        raise ConfigError(f"{where}.transform: no transformer named {ref!r}{hint}")
    command = cfg.get("command", "build")
    if command not in COMMANDS:
        raise ConfigError(
            f"{where}.command: {command!r} is not a dbt command eltmake runs"
            f"{did_you_mean(command, COMMANDS) or '; use one of: ' + ', '.join(COMMANDS)}"
        )
    for key in ("select", "exclude"):
        value = cfg.get(key)
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}.{key}: must be a list of dbt selectors (strings)")
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where}.{key}: is empty; remove it or write a dbt selector")


def transformer(project: Project, name: str) -> Transformer:
    """The resolved ``[transformers.NAME]`` (validated at load)."""
    raw = project.tables[TABLE][name]
    project_dir = (project.root / raw["project_dir"]).resolve()
    profiles_dir: Path | None = None
    if raw.get("profiles_dir"):
        profiles_dir = (project.root / raw["profiles_dir"]).resolve()
    elif (project_dir / "profiles.yml").is_file():
        profiles_dir = project_dir
    return Transformer(
        name=name,
        pip_url=raw.get("pip_url") or None,
        executable=raw.get("executable") or "dbt",
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        duckdb_path=None if profiles_dir else duckdb_path(project),
        target=raw.get("target"),
        vars=dict(raw.get("vars", {})),
        env={k: str(v) for k, v in raw.get("env", {}).items()},
        threads=int(raw.get("threads", 4)),
    )


def target_transformer(project: Project, target: Target) -> Transformer:
    return transformer(project, target.config["transform"])


def as_list(value: str | list[str] | None) -> list[str]:
    """A selector given as one string ("a b") or a list, as dbt's argv words."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [w for v in value for w in v.split()]


# --- the DuckDB loader and the generated profile ----------------------------------------------


def duckdb_path(project: Project) -> str | None:
    """The one DuckDB file the project's loaders write (as the plugins declare their warehouses),
    relative to the project when inside it; None when there is none, or several (then the user
    names a profile)."""
    paths = {w.settings.get("path") for w in warehouses(project) if w.type == "duckdb"}
    paths.discard(None)
    return paths.pop() if len(paths) == 1 else None


def profile_name(tf: Transformer) -> str:
    """The ``profile:`` of dbt_project.yml (a regex: eltmake has no YAML parser, and needs none)."""
    try:
        text = (tf.project_dir / "dbt_project.yml").read_text(encoding="utf-8")
    except OSError:
        return "default"
    m = _PROFILE_RE.search(text)
    return m.group(1) if m else "default"


def profile_text(project: Project, tf: Transformer) -> str:
    """The generated profiles.yml (JSON is YAML): the DuckDB file, absolute, schema ``main``."""
    assert tf.duckdb_path is not None
    path = Path(tf.duckdb_path)
    if not path.is_absolute():
        path = project.root / path
    target = tf.target or PROFILE_TARGET
    profile = {
        profile_name(tf): {
            "target": target,
            "outputs": {
                target: {
                    "type": "duckdb",
                    "path": str(path),
                    "schema": "main",
                    "threads": tf.threads,
                }
            },
        }
    }
    return (
        "# Written by eltmake for the DuckDB loader; do not edit (set profiles_dir to use your own).\n"
        + json.dumps(profile, indent=2)
    )


def profiles_dir(project: Project, tf: Transformer) -> Path:
    """The folder to pass to dbt as ``--profiles-dir``; writes the generated profile if needed.

    Written only when its content changes, so dbt's partial parsing (which notices a changed
    profile) stays valid.
    """
    if tf.profiles_dir is not None:
        return tf.profiles_dir
    folder = tf.state_dir(project)
    file = folder / "profiles.yml"
    text = profile_text(project, tf)
    try:
        if file.read_text(encoding="utf-8") == text:
            return folder
    except OSError:
        pass
    write_atomic(file, text)
    return folder


def database_file(project: Project, tf: Transformer) -> Path | None:
    """The DuckDB file the models land in, when eltmake knows it (generated profile)."""
    if tf.duckdb_path is None:
        return None
    path = Path(tf.duckdb_path)
    return path if path.is_absolute() else project.root / path


def dbt_env(project: Project, tf: Transformer, base: dict[str, str]) -> dict[str, str]:
    """The environment dbt runs with: the profile folder, no colours, no phoning home."""
    env = dict(base)
    env.update(tf.env)
    env["DBT_PROFILES_DIR"] = str(profiles_dir(project, tf))
    env["DBT_PROJECT_DIR"] = str(tf.project_dir)
    env.setdefault("DBT_USE_COLORS", "false")
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("DBT_VERSION_CHECK", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    if tf.target:
        env["DBT_TARGET"] = tf.target
    env.pop("VIRTUAL_ENV", None)
    return env

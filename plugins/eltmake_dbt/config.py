"""The ``[transformers.NAME]`` tables and the dbt target keys: validation and resolved settings.

A transformer is one dbt project run by one dbt installation. Everything here is cheap (a few
``stat`` calls at most) because it runs on every load, including no-op builds.

The profile: dbt needs a ``profiles.yml``. When the transformer names none (no ``profiles_dir``
and no ``profiles.yml`` in the dbt project), we write one under ``.eltmake/dbt/NAME/`` for the
warehouse the loads go to: a DuckDB file, or a PostgreSQL server (host, port, user and database
from the loader's settings; the password only through ``PGPASSWORD`` in dbt's environment, never
in the file). The example, and most laptop projects, then need no hand-written profile, and
``--env prod`` (which overrides the loader's settings) moves the dbt models with the loads.

Which warehouse: the transformer's ``warehouse`` key (a loader's name, or a DuckDB file path: no
``[loaders]`` table needed), else the one warehouse the project's extract-load targets write,
else the one the loaders declare.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import (
    ConfigError,
    ToolSpec,
    Warehouse,
    did_you_mean,
    path_lock,
    warehouses,
    write_atomic,
)

if TYPE_CHECKING:
    from eltmake.api import Project, Target
    from eltmake_dbt.profiles import Profile

KIND = "dbt"
TABLE = "transformers"
TABLE_DOC = "dbt projects and the dbt installation that runs them: pip_url, project_dir, profiles_dir, warehouse, target, vars, warm"
PIN = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"
TRANSFORMER_KEYS: dict[str, tuple[type, ...]] = {
    "pip_url": (str,),
    "executable": (str,),
    "project_dir": (str,),
    "profiles_dir": (str,),
    "warehouse": (str,),
    "target": (str,),
    "vars": (dict,),
    "env": (dict,),
    "threads": (int,),
    "warm": (bool,),
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
KINDS = ("duckdb", "postgres")  # the warehouses a profile can be generated for
# The generated Postgres profile reads the password from dbt's environment, never from the file;
# with a default, so that a server that wants none (trust, .pgpass) needs no variable.
PG_PASSWORD = "{{ env_var('PGPASSWORD', '') }}"
_PROFILE_RE = re.compile(r"""^profile\s*:\s*['"]?([A-Za-z0-9_\-]+)['"]?\s*(?:#.*)?$""", re.M)


@dataclass
class Transformer:
    """One ``[transformers.NAME]`` table, resolved against the project folder."""

    name: str
    pip_url: str | None
    executable: str
    project_dir: Path  # absolute
    profiles_dir: Path | None  # absolute; None: generated for the warehouse
    duckdb_path: str | None  # a generated DuckDB profile's file, as configured
    target: str | None
    vars: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 4
    warehouse: Warehouse | None = None  # what a generated profile points at
    warm: bool = True  # watch mode keeps a warm dbt (eltmake_dbt.warm)

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
        if tf.profiles_dir is None and tf.warehouse is None:
            several = _candidates(project)
            if len(several) > 1:
                names = ", ".join(sorted({w.name for w in several}))
                raise ConfigError(
                    f"{where}: which warehouse does dbt write? The loaders write several "
                    f'({names}): set warehouse = "LOADER" (or a DuckDB file path), or profiles_dir'
                )
            raise ConfigError(
                f"{where}: no dbt profile: set profiles_dir to the folder of your profiles.yml, put "
                'a profiles.yml in project_dir, set warehouse = "warehouse.duckdb", or add a '
                f'DuckDB loader ([loaders.duckdb] executable = "{DUCKDB_LOADER}", config.path = '
                '"x.duckdb")'
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
    wh = None if profiles_dir else choose_warehouse(project, name, raw.get("warehouse"))
    return Transformer(
        name=name,
        pip_url=raw.get("pip_url") or None,
        executable=raw.get("executable") or "dbt",
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        duckdb_path=wh.settings.get("path") if wh is not None and wh.type == "duckdb" else None,
        target=raw.get("target"),
        vars=dict(raw.get("vars", {})),
        env={k: str(v) for k, v in raw.get("env", {}).items()},
        threads=int(raw.get("threads", 4)),
        warehouse=wh,
        warm=raw.get("warm", True),
    )


def _candidates(project: Project) -> list[Warehouse]:
    """The distinct warehouses a profile could be generated for: those the extract-load targets
    write, else all the loaders declare."""
    declared = [w for w in warehouses(project) if w.type in KINDS]
    used = {t.config.get("load") for t in project.targets.values() if "extract" in t.config}
    pool = [w for w in declared if w.name in used] or declared
    distinct: dict[str, Warehouse] = {}
    for w in pool:
        distinct.setdefault(json.dumps([w.type, w.settings], sort_keys=True, default=str), w)
    return list(distinct.values())


def choose_warehouse(project: Project, name: str, wanted: str | None) -> Warehouse | None:
    """The warehouse a generated profile points at (see the module docstring)."""
    if wanted:
        declared = {w.name: w for w in warehouses(project)}
        if wanted in declared and declared[wanted].type in KINDS:
            return declared[wanted]
        where = _where(project, TABLE, name, "warehouse")
        if wanted in (project.tables.get("loaders") or {}):
            raise ConfigError(
                f"{where}: loader {wanted!r} writes no database eltmake can point dbt at (a DuckDB "
                "file or a PostgreSQL server); set profiles_dir to your own profiles.yml"
            )
        if wanted.endswith((".duckdb", ".db", ".ddb")) or "/" in wanted:
            lock = path_lock(project, wanted)
            return Warehouse(f"transformers.{name}.warehouse", "duckdb", {"path": lock}, [lock])
        raise ConfigError(
            f"{where}: {wanted!r} is neither a loader{did_you_mean(wanted, declared)} nor a "
            'DuckDB file (e.g. warehouse = "warehouse.duckdb")'
        )
    found = _candidates(project)
    return found[0] if len(found) == 1 else None


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


def profile_name(tf: Transformer) -> str:
    """The ``profile:`` of dbt_project.yml (a regex: eltmake has no YAML parser, and needs none)."""
    try:
        text = (tf.project_dir / "dbt_project.yml").read_text(encoding="utf-8")
    except OSError:
        return "default"
    m = _PROFILE_RE.search(text)
    return m.group(1) if m else "default"


def generated_output(project: Project, tf: Transformer) -> dict[str, Any]:
    """The output of the generated profile: the DuckDB file (absolute, schema ``main``) or the
    PostgreSQL server (schema ``public``; the password read from ``PGPASSWORD`` by dbt)."""
    wh = tf.warehouse
    assert wh is not None
    if wh.type == "duckdb":
        path = Path(os.path.expanduser(wh.settings["path"]))
        if not path.is_absolute():
            path = project.root / path
        return {"type": "duckdb", "path": str(path), "schema": "main", "threads": tf.threads}
    s = wh.settings
    return {
        "type": "postgres",
        "host": str(s.get("host") or "localhost"),
        "port": int(s.get("port") or 5432),
        "user": str(s.get("user") or ""),
        "password": PG_PASSWORD,
        "dbname": str(s.get("database") or ""),
        "schema": "public",
        "threads": tf.threads,
    }


def profile_text(project: Project, tf: Transformer) -> str:
    """The generated profiles.yml (JSON is YAML)."""
    target = tf.target or PROFILE_TARGET
    output = generated_output(project, tf)
    profile = {profile_name(tf): {"target": target, "outputs": {target: output}}}
    what = "DuckDB loader" if output["type"] == "duckdb" else "PostgreSQL warehouse"
    return (
        f"# Written by eltmake for the {what}; do not edit (set profiles_dir to use your own).\n"
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


def user_profile(project: Project, tf: Transformer) -> Profile | None:
    """The project's own profile, rendered where eltmake can (None with a generated one)."""
    if tf.profiles_dir is None:
        return None
    from eltmake_dbt.profiles import read_profile

    return read_profile(project, tf, profile_name(tf))


def models_warehouse(project: Project, tf: Transformer) -> tuple[Warehouse | None, str]:
    """The database the models land in, as eltmake can reach it, or (None, why not).

    From the generated profile, or from the project's own profile when it is DuckDB or
    PostgreSQL and its values render (see :mod:`eltmake_dbt.profiles`)."""
    if tf.warehouse is not None:
        return tf.warehouse, ""
    prof = user_profile(project, tf)
    if prof is None:
        return None, "no profile"
    if prof.error:
        return None, prof.error
    where = f"{prof.file.name}: {prof.name}.outputs.{prof.target}"
    if prof.type == "duckdb":
        from eltmake_dbt.profiles import duckdb_file

        if "path" in prof.unknown:
            return None, f"{where}.path {prof.unknown['path']}"
        file = duckdb_file(tf, prof)
        if file is None:
            return None, f"{where}.path is not a local file"
        lock = path_lock(project, str(file))
        return Warehouse(f"profile {prof.name}", "duckdb", {"path": lock}, [lock]), ""
    if prof.type == "postgres":
        keys = ("host", "port", "user", "dbname", "schema")
        bad = [k for k in keys if k in prof.unknown]
        if bad:
            return None, f"{where}.{bad[0]} {prof.unknown[bad[0]]}"
        o = prof.output
        settings = {
            "host": o.get("host"),
            "port": o.get("port"),
            "user": o.get("user"),
            "database": o.get("dbname") or o.get("database"),
            "schema": o.get("schema"),
        }
        return Warehouse(f"profile {prof.name}", "postgres", settings, []), ""
    return None, f"{where}.type is {prof.type!r}: eltmake checks DuckDB and PostgreSQL only"


def warehouse_where(tf: Transformer) -> str:
    """Where the models' warehouse is configured, for messages."""
    if tf.warehouse is not None:
        name = tf.warehouse.name
        return name if name.startswith("transformers.") else f"loaders.{name}.config"
    return f"transformers.{tf.name} profile"


def profile_password(project: Project, tf: Transformer) -> str | None:
    """The password of the project's own profile, rendered (None: PGPASSWORD applies)."""
    prof = user_profile(project, tf)
    if prof is None or prof.error:
        return None
    value = prof.output.get("password") or prof.output.get("pass")
    return str(value) if value not in (None, "") else None


def database_file(project: Project, tf: Transformer) -> Path | None:
    """The DuckDB file the models land in, when eltmake knows it."""
    wh, _ = models_warehouse(project, tf)
    if wh is None or wh.type != "duckdb":
        return None
    path = Path(os.path.expanduser(wh.settings["path"]))
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

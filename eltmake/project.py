"""The project model: ``eltmake.toml`` read, interpolated, overridden and checked.

Every problem is raised as a :class:`~eltmake.errors.ConfigError` with one line naming the file,
the table and key, what is wrong and what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.errors import ConfigError, did_you_mean
from eltmake.projectfile import (
    check_keys,
    check_str_list,
    check_type,
    deep_merge,
    interpolate,
    read_dotenv,
    read_toml,
)

if TYPE_CHECKING:
    from eltmake.plugins import PluginManager
    from eltmake.recipe import Recipe

PROJECT_FILE = "eltmake.toml"
CORE_TABLES = {"project", "targets", "environments"}
PROJECT_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "default": (str, list),
    "plugins": (list,),
    "description": (str,),
    "store": (str,),
    "executor": (str,),  # where steps run: eltmake.executors.parse_executor
}
# Keys every target may have, whatever its recipe.
TARGET_KEYS: dict[str, tuple[type, ...]] = {
    "deps": (list,),
    "inputs": (list,),
    "outputs": (list,),
    "freshness": (str,),
    "description": (str,),
    "locks": (list,),
}
FRESHNESS_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass
class Target:
    """One ``[targets.NAME]`` table. ``config`` is the whole table after interpolation."""

    name: str
    kind: str | None  # the kind of its recipe, None for an aggregate (no recipe)
    deps: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    freshness: str | None = None
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never its table: a command's env may hold a secret
        return f"Target({self.name!r}, kind={self.kind!r})"


@dataclass
class Project:
    """A loaded project. ``tables`` holds the top-level tables that plugins claimed."""

    root: Path
    file: Path
    name: str
    default: list[str]
    plugins: list[str]
    targets: dict[str, Target]
    tables: dict[str, dict[str, Any]]
    environ: dict[str, str]
    dotenv: dict[str, str] = field(default_factory=dict)  # the .env file alone, for keys
    env_name: str | None = None
    store: str | None = None  # [project] store: the shared store's URL (ELTMAKE_STORE wins)
    # A read-only command (list, graph, status, build -n): plugins must install nothing and
    # start no tool (they answer from what earlier runs left).
    read_only: bool = False
    executor: str | None = None  # [project] executor: where steps run (ELTMAKE_EXECUTOR wins)
    recipes: dict[str, Recipe] = field(default_factory=dict)  # kind -> recipe
    inferred: list[tuple[str, str, str]] = field(default_factory=list)
    pm: PluginManager | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        """Where eltmake keeps its cache, state, tool environments and lock: ``.eltmake/``."""
        return self.root / ".eltmake"

    def __repr__(self) -> str:  # never the environment or tables: they hold secrets
        return f"Project({self.name!r}, root={str(self.root)!r}, env={self.env_name!r})"

    def where(self, *keys: str) -> str:
        """``eltmake.toml: targets.orders.deps`` — the prefix of every error message."""
        return f"{self.file.name}: {'.'.join(keys)}" if keys else self.file.name


def parse_freshness(value: str) -> float | None:
    """Seconds for a duration ("6h", "30m", "1.5d"); ``None`` for "always"/"never" (callers check)."""
    m = FRESHNESS_RE.match(value.strip())
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * _UNITS[m.group(2)]


# --- loading ------------------------------------------------------------------------------------


_ANNOUNCED: set[Path] = set()


def find_root(start: Path | str | None) -> Path:
    """The project folder: the nearest folder holding ``eltmake.toml``, from the one given with
    ``-C`` (or the current one) upwards, as git and dbt find theirs. Found in a parent, it says
    which on stderr, once. A ``-C`` folder that does not exist is an error; with no project
    anywhere up, the start folder (the caller then says there is no eltmake.toml)."""
    import sys

    here = Path(start or ".")
    if start is not None and not here.is_dir():
        what = "is not a folder" if here.exists() else "does not exist"
        raise ConfigError(f"-C {start}: {what}; name the folder that holds eltmake.toml")
    here = here.resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            if folder != here and folder not in _ANNOUNCED:
                _ANNOUNCED.add(folder)
                try:
                    shown = os.path.relpath(folder / PROJECT_FILE)
                except ValueError:
                    shown = str(folder / PROJECT_FILE)
                sys.stderr.write(f"eltmake: using {shown}\n")
            return folder
    return here


def load_project(
    root: Path | str | None = None,
    env_name: str | None = None,
    pm: PluginManager | None = None,
    environ: dict[str, str] | None = None,
    infer: bool = True,
    read_only: bool = False,
) -> Project:
    """Read, interpolate, override and check ``eltmake.toml`` in ``root``; load its plugins.

    ``infer=False`` leaves out the edges plugins infer (a check of the file alone).
    ``read_only=True`` (``list``, ``graph``, ``status``, ``build -n``…) tells plugins that this
    command must install nothing and start no tool (:attr:`Project.read_only`)."""
    from eltmake.plugins import PluginManager

    root = find_root(root)
    file = root / PROJECT_FILE
    data, has_vars = read_toml(file, cache_dir=root / ".eltmake")
    env = dict(os.environ if environ is None else environ)
    dotenv = read_dotenv(root / ".env")
    for k, v in dotenv.items():
        env.setdefault(k, v)  # the real environment wins over .env, as with every dotenv tool
    _put_own_bin_first(env)

    if not isinstance(data.get("project", {}), dict):
        raise ConfigError(f"{file.name}: project must be a table ([project])")
    envs = data.get("environments", {})
    if not isinstance(envs, dict):
        raise ConfigError(f"{file.name}: environments must be a table ([environments.NAME])")
    if env_name is not None:
        if env_name not in envs:
            hint = did_you_mean(env_name, envs) or (
                f"; defined: {', '.join(sorted(envs))}" if envs else "; none is defined"
            )
            raise ConfigError(f"{file.name}: no environment {env_name!r} in [environments]{hint}")
        overlay = envs[env_name]
        if not isinstance(overlay, dict):
            raise ConfigError(f"{file.name}: environments.{env_name} must be a table")
        if "environments" in overlay or "project" in overlay and "plugins" in overlay["project"]:
            raise ConfigError(
                f"{file.name}: environments.{env_name} may not override environments or project.plugins"
            )
        data = deep_merge(data, overlay)
    data.pop("environments", None)
    if not isinstance(data.get("project", {}), dict):
        where = f"environments.{env_name}.project" if env_name else "project"
        raise ConfigError(f"{file.name}: {where} must be a table")
    if has_vars:
        data = interpolate(data, env, file.name)

    if pm is None:
        pm = PluginManager()
        pm.load_builtins_and_entrypoints()
    proj = data.get("project", {})
    check_keys(proj, PROJECT_KEYS, file.name, "project")
    plugins = proj.get("plugins", [])
    check_str_list(plugins, file.name, "project", "plugins")
    pm.load_project_plugins(root, plugins, file.name)

    claimed: dict[str, str] = {}
    for tables in pm.hook.eltmake_add_tables():
        claimed.update(tables or {})
    recipes = pm.recipes()
    for name, value in data.items():
        if name in CORE_TABLES:
            continue
        if name not in claimed:
            known = sorted(CORE_TABLES | set(claimed))
            hint = did_you_mean(name, known) or f"; known tables: {', '.join(known)}"
            raise ConfigError(f"{file.name}: unknown table [{name}]{hint}")
        if not isinstance(value, dict):
            raise ConfigError(f"{file.name}: {name} must be a table ([{name}.NAME])")

    raw_targets = data.get("targets", {})
    if not isinstance(raw_targets, dict):
        raise ConfigError(f"{file.name}: targets must be a table ([targets.NAME])")
    targets = {name: _make_target(name, t, recipes, file.name) for name, t in raw_targets.items()}
    for t in targets.values():
        for dep in t.deps:
            if dep == t.name:
                raise ConfigError(
                    f"{file.name}: targets.{t.name}.deps: a target cannot depend on itself"
                )
            if dep not in targets:
                raise ConfigError(
                    f"{file.name}: targets.{t.name}.deps: unknown target {dep!r}"
                    f"{did_you_mean(dep, targets)}"
                )
    check_outputs(targets, file.name)

    default = proj.get("default", [])
    default = [default] if isinstance(default, str) else default
    check_str_list(default, file.name, "project", "default")
    for name in default:
        if name not in targets:
            raise ConfigError(
                f"{file.name}: project.default: unknown target {name!r}{did_you_mean(name, targets)}"
            )

    executor = proj.get("executor")
    if executor is not None:
        from eltmake.executors import parse_executor

        try:
            parse_executor(executor)
        except ValueError as e:
            raise ConfigError(f"{file.name}: project.executor: {e}") from None

    project = Project(
        root=root,
        file=file,
        name=proj.get("name", root.name),
        default=default,
        plugins=plugins,
        targets=targets,
        tables={k: v for k, v in data.items() if k not in CORE_TABLES},
        environ=env,
        dotenv=dotenv,
        env_name=env_name,
        store=proj.get("store") or None,
        read_only=read_only,
        recipes=recipes,
        pm=pm,
        executor=executor,
    )
    pm.check()
    pm.hook.eltmake_validate_project(project=project)
    for t in targets.values():
        if t.kind is not None:
            recipes[t.kind].validate(project, t)
    for edges in pm.hook.eltmake_infer_deps(project=project) if infer else []:
        for up, down, why in edges or []:
            if up in targets and down in targets and up != down and up not in targets[down].deps:
                project.inferred.append((up, down, why))
    return project


def check_outputs(targets: dict[str, Target], fname: str) -> None:
    """``outputs`` are files (or folders) a step writes inside the project, each written by one
    step: a pattern, a path outside the project or in ``.eltmake/``, the project folder itself,
    a file two steps write, or one a step also reads, is refused with one line."""
    import fnmatch

    owner: dict[str, str] = {}
    for t in targets.values():
        for i, out in enumerate(t.outputs):
            where = f"{fname}: targets.{t.name}.outputs[{i}]"
            if not out.strip():
                raise ConfigError(f"{where}: is empty; name the file the step writes")
            if set("*?[") & set(out):
                raise ConfigError(
                    f"{where}: {out!r} is a pattern; outputs are the files (or folders) a step "
                    "writes, named one by one (a folder covers what is in it)"
                )
            norm = os.path.normpath(out)
            if os.path.isabs(out) or norm == ".." or norm.startswith("../"):
                raise ConfigError(
                    f"{where}: {out!r} is outside the project folder; eltmake tracks outputs "
                    "inside it only (a step may still write elsewhere: list it under inputs of "
                    "the steps that read it, or leave it out)"
                )
            if norm == ".":
                raise ConfigError(f"{where}: {out!r} is the project folder itself; name a file")
            if norm == ".eltmake" or norm.startswith(".eltmake/"):
                raise ConfigError(f"{where}: {out!r} is inside .eltmake/, eltmake's own folder")
            if norm in owner and owner[norm] != t.name:
                raise ConfigError(
                    f"{where}: {out!r} is also an output of targets.{owner[norm]}; each file is "
                    "written by one step (make one target depend on the other instead)"
                )
            owner[norm] = t.name
            for pattern in t.inputs:
                if os.path.normpath(pattern) == norm or fnmatch.fnmatchcase(norm, pattern):
                    raise ConfigError(
                        f"{where}: {out!r} is also an input of this target ({pattern!r}); a "
                        "step that reads what it writes would never be up to date"
                    )


def _put_own_bin_first(env: dict[str, str]) -> None:
    """Steps see eltmake's own environment first on PATH (like ``npm run`` and node_modules/.bin):
    ``python`` in a recipe is the Python eltmake runs on, and the console scripts installed with
    eltmake and its plugins are found even when the virtualenv is not activated."""
    import sys

    if sys.prefix == sys.base_prefix:
        return
    own = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != own:
        env["PATH"] = own + os.pathsep + path if path else own


TARGET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def _make_target(name: str, t: Any, recipes: dict[str, Recipe], fname: str) -> Target:
    where = f"targets.{name}"
    if not TARGET_NAME.match(name):
        raise ConfigError(
            f"{fname}: targets.{name!r}: a target name is letters, digits, '_', '-' and '.', "
            "starting with a letter, digit or '_' (it is used on the command line and in graphs)"
        )
    if not isinstance(t, dict):
        raise ConfigError(f"{fname}: {where} must be a table ([targets.{name}]), not a value")
    markers = [spec for spec in recipes.values() if spec.marker in t]
    if len(markers) > 1:
        keys = " and ".join(repr(s.marker) for s in markers)
        raise ConfigError(
            f"{fname}: {where} has two recipes ({keys}); a target is one step: split it into two "
            "targets and join them with deps"
        )
    spec = markers[0] if markers else None
    allowed = {**TARGET_KEYS, **spec.keys} if spec else TARGET_KEYS
    for key, value in t.items():
        if key not in allowed:
            owners = [s for s in recipes.values() if key in s.keys]
            if owners:
                kinds = " or ".join(f"{s.kind} (set {s.marker!r})" for s in owners)
                what = f"a {spec.kind} target" if spec else "an aggregate target (no recipe)"
                raise ConfigError(
                    f"{fname}: {where}.{key}: {key!r} belongs to {kinds} steps, but this is {what}"
                )
            every = set(TARGET_KEYS) | {k for s in recipes.values() for k in s.keys}
            hint = did_you_mean(key, every) or f"; allowed here: {', '.join(sorted(allowed))}"
            raise ConfigError(f"{fname}: {where}: unknown key {key!r}{hint}")
        if type(value) not in allowed[key]:  # the common case costs no message
            check_type(value, allowed[key], f"{fname}: {where}.{key}")
    for key in ("deps", "inputs", "outputs", "locks"):
        if key in t:
            check_str_list(t[key], fname, where, key)
    freshness = t.get("freshness")
    if freshness is not None and freshness not in ("always", "never"):
        try:
            parse_freshness(freshness)
        except ValueError:
            raise ConfigError(
                f'{fname}: {where}.freshness: {freshness!r} is not "always", "never" or a '
                'duration such as "30m", "6h", "1d"'
            ) from None
    return Target(
        name=name,
        kind=spec.kind if spec else None,
        deps=list(t.get("deps", [])),
        inputs=list(t.get("inputs", [])),
        outputs=list(t.get("outputs", [])),
        freshness=freshness,
        description=t.get("description", ""),
        config=t,
    )

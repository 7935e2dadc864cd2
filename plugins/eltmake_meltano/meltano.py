"""A Meltano project read as Meltano reads it: ``meltano.yml``, its ``include_paths`` and the
plugin lock files, validated, merged and with ``inherit_from`` resolved. No Hub access: what the
Hub would add comes from the lock files under ``plugins/`` (``meltano add`` writes them), and a
plugin that would need the Hub itself is reported by the translator, not fetched.

Merging follows Meltano's ``ProjectFiles``: files are merged in order (``meltano.yml`` first,
then each ``include_paths`` pattern's matches), mappings recursively, lists appended, other values
replaced; a plugin, schedule, job or environment defined in two files is an error, as in Meltano.
Every item remembers the file and key it came from, so that errors name them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eltmake.api import ConfigError, did_you_mean
from eltmake_meltano import yamlfile

PLUGIN_TYPES = (
    "extractors",
    "loaders",
    "mappers",
    "transformers",
    "utilities",
    "orchestrators",
    "files",
    "transforms",
)
LIST_KEYS = ("schedules", "jobs", "environments")
_SINGULAR = {"extractors": "extractor", "loaders": "loader", "mappers": "mapper"}


@dataclass
class Plugin:
    """One entry of ``plugins.TYPE``, with what it inherits and what its lock file says."""

    type: str
    name: str
    raw: dict[str, Any]
    where: str  # "meltano.yml: plugins.extractors[0]" - the prefix of error messages
    lock: dict[str, Any] | None = None
    lock_file: str | None = None
    parent: Plugin | None = None  # inherit_from, when the parent is in the project

    def get(self, key: str, default: Any = None) -> Any:
        """A key from the plugin, else its parent, else its lock file (Meltano's precedence)."""
        if key in self.raw:
            return self.raw[key]
        if self.parent is not None:
            return self.parent.get(key, default)
        if self.lock is not None and key in self.lock:
            return self.lock[key]
        return default

    @property
    def variant(self) -> str | None:
        return self.get("variant")

    @property
    def base_name(self) -> str:
        """The plugin this one is at root: itself, or what it inherits from."""
        if self.parent is not None:
            return self.parent.base_name
        return self.raw.get("inherit_from") or self.name

    @property
    def config(self) -> dict[str, Any]:
        """Its config merged over its parent's (an inheriting plugin starts from the parent's
        values, as in Meltano)."""
        own = self.raw.get("config") or {}
        if self.parent is not None:
            return deep_merge(self.parent.config, own)
        return dict(own)

    def settings(self) -> list[dict[str, Any]]:
        """Setting definitions: the plugin's own, its parent's and its lock file's."""
        out: list[dict[str, Any]] = []
        if self.lock:
            out += [s for s in self.lock.get("settings") or [] if isinstance(s, dict)]
        if self.parent is not None:
            out += self.parent.settings()
        out += [s for s in self.raw.get("settings") or [] if isinstance(s, dict)]
        return out

    @property
    def namespace(self) -> str:
        ns = self.get("namespace")
        return ns if isinstance(ns, str) and ns else self.base_name.replace("-", "_")


@dataclass
class MeltanoProject:
    root: Path
    file: Path
    data: dict[str, Any]  # everything merged
    plugins: dict[str, dict[str, Plugin]]  # type -> name -> plugin
    origins: dict[tuple[str, str], str] = field(default_factory=dict)  # (jobs, NAME) -> where
    files: list[str] = field(default_factory=list)  # the files read, meltano.yml first

    def find(self, name: str) -> Plugin | None:
        for plugins in self.plugins.values():
            if name in plugins:
                return plugins[name]
        return None

    def all_plugins(self) -> list[Plugin]:
        return [p for t in PLUGIN_TYPES for p in self.plugins.get(t, {}).values()]

    @property
    def default_environment(self) -> str | None:
        value = self.data.get("default_environment")
        return value if isinstance(value, str) and value else None


def deep_merge(a: Any, b: Any) -> Any:
    """Meltano's ``deep_merge``: mappings merged at depth, lists extended, anything else replaced."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = deep_merge(out[k], v) if k in out else v
        return out
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return b


def read_project(file: Path) -> MeltanoProject:
    """Read, check and merge ``file`` and its includes; raise a one-line ConfigError on bad input."""
    file = file.resolve()
    root = file.parent
    shown = file.name
    main = _mapping(yamlfile.load(file, shown), shown)
    docs: list[tuple[str, dict[str, Any]]] = [(shown, main)]
    includes = main.get("include_paths", [])
    if not isinstance(includes, list):
        raise ConfigError(f"{shown}: include_paths: must be a list of glob patterns")
    seen = {file}
    for i, pattern in enumerate(includes):
        where = f"{shown}: include_paths[{i}]"
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{where}: must be a glob pattern such as 'extract/*.meltano.yml'")
        # Sorted: Meltano takes the file system's order, which differs between machines.
        matches = sorted(p for p in root.glob(pattern) if p.resolve() != file)
        files = [p for p in matches if p.is_file()]
        if not files:
            raise ConfigError(
                f"{where}: {pattern!r} matches no file under {root}; fix the pattern or remove it"
            )
        for path in files:
            resolved = path.resolve()
            try:
                rel = str(resolved.relative_to(root))
            except ValueError:
                raise ConfigError(
                    f"{where}: {pattern!r} matches {path}, outside the project folder"
                ) from None
            if resolved in seen:
                continue
            seen.add(resolved)
            content = yamlfile.load(resolved, rel)
            docs.append((rel, _mapping(content, rel)))

    origins: dict[tuple[str, str], str] = {}
    plugins: dict[str, dict[str, Plugin]] = {t: {} for t in PLUGIN_TYPES}
    merged: dict[str, Any] = {}
    for shown_name, doc in docs:
        _check_file(shown_name, doc, plugins, origins)
        merged = deep_merge(merged, doc)
    project = MeltanoProject(
        root=root,
        file=file,
        data=merged,
        plugins=plugins,
        origins=origins,
        files=[d[0] for d in docs],
    )
    _resolve(project)
    return project


def _mapping(doc: Any, shown: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{shown}: must be a YAML mapping (plugins:, jobs:, ...), not {type(doc).__name__}"
        )
    return doc


def _check_file(
    shown: str,
    doc: dict[str, Any],
    plugins: dict[str, dict[str, Plugin]],
    origins: dict[tuple[str, str], str],
) -> None:
    """Check one file's structure and index what it defines (duplicates are errors)."""
    raw_plugins = doc.get("plugins") or {}
    if not isinstance(raw_plugins, dict):
        raise ConfigError(f"{shown}: plugins: must be a mapping of plugin types (extractors: ...)")
    for ptype, items in raw_plugins.items():
        if ptype not in PLUGIN_TYPES:
            hint = did_you_mean(str(ptype), PLUGIN_TYPES) or (
                f"; Meltano's plugin types are {', '.join(PLUGIN_TYPES)}"
            )
            raise ConfigError(f"{shown}: plugins.{ptype}: unknown plugin type {ptype!r}{hint}")
        if items is None:
            continue
        if not isinstance(items, list):
            raise ConfigError(f"{shown}: plugins.{ptype}: must be a list of plugins (- name: ...)")
        for i, item in enumerate(items):
            where = f"{shown}: plugins.{ptype}[{i}]"
            name = _name(item, where)
            where = f"{shown}: plugins.{ptype}[{i}] ({name})"
            for key in ("config", "metadata", "schema", "env"):
                if item.get(key) is not None and not isinstance(item[key], dict):
                    raise ConfigError(f"{where}.{key}: must be a mapping")
            for key in ("select", "capabilities", "settings", "mappings"):
                if item.get(key) is not None and not isinstance(item[key], list):
                    raise ConfigError(f"{where}.{key}: must be a list")
            for key in ("pip_url", "executable", "namespace", "variant", "inherit_from"):
                if item.get(key) is not None and not isinstance(item[key], str):
                    raise ConfigError(f"{where}.{key}: must be a string")
            if name in plugins[ptype]:
                raise ConfigError(
                    f"{where}: {ptype[:-1]} {name!r} is also defined at "
                    f"{plugins[ptype][name].where}; Meltano refuses this too: keep one"
                )
            plugins[ptype][name] = Plugin(ptype, name, item, where)
    for key in LIST_KEYS:
        items = doc.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise ConfigError(f"{shown}: {key}: must be a list (- name: ...)")
        for i, item in enumerate(items):
            name = _name(item, f"{shown}: {key}[{i}]")
            where = f"{shown}: {key}[{i}] ({name})"
            if (key, name) in origins:
                raise ConfigError(
                    f"{where}: also defined at {origins[(key, name)]}; Meltano refuses this too"
                )
            origins[(key, name)] = where
            if key == "environments":
                _check_environment(item, where)
            elif key == "jobs":
                tasks = item.get("tasks")
                if not isinstance(tasks, str | list) or not tasks:
                    raise ConfigError(f"{where}.tasks: must be a task or a list of tasks")
            elif key == "schedules":
                if not item.get("job") and not (item.get("extractor") and item.get("loader")):
                    raise ConfigError(f"{where}: needs job, or extractor and loader")
    env = doc.get("env")
    if env is not None and not isinstance(env, dict):
        raise ConfigError(f"{shown}: env: must be a mapping of variables")


def _name(item: Any, where: str) -> str:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be a mapping with a name, not {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: needs a name")
    return name


def _check_environment(item: dict[str, Any], where: str) -> None:
    config = item.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{where}.config: must be a mapping (plugins: ...)")
    plugins = config.get("plugins") or {}
    if not isinstance(plugins, dict):
        raise ConfigError(f"{where}.config.plugins: must be a mapping of plugin types")
    for ptype, items in plugins.items():
        if ptype not in PLUGIN_TYPES:
            hint = did_you_mean(str(ptype), PLUGIN_TYPES) or (
                f"; Meltano's plugin types are {', '.join(PLUGIN_TYPES)}"
            )
            raise ConfigError(
                f"{where}.config.plugins.{ptype}: unknown plugin type {ptype!r}{hint}"
            )
        if not isinstance(items or [], list):
            raise ConfigError(f"{where}.config.plugins.{ptype}: must be a list of plugins")
        for i, p in enumerate(items or []):
            _name(p, f"{where}.config.plugins.{ptype}[{i}]")
            if p.get("config") is not None and not isinstance(p["config"], dict):
                raise ConfigError(f"{where}.config.plugins.{ptype}[{i}].config: must be a mapping")
    if item.get("env") is not None and not isinstance(item["env"], dict):
        raise ConfigError(f"{where}.env: must be a mapping of variables")


def _resolve(project: MeltanoProject) -> None:
    """Attach lock files and parents; refuse inheritance cycles."""
    for plugins in project.plugins.values():
        for plugin in plugins.values():
            parent_name = plugin.raw.get("inherit_from")
            if parent_name and parent_name in plugins and parent_name != plugin.name:
                plugin.parent = plugins[parent_name]
            elif parent_name == plugin.name:
                raise ConfigError(
                    f"{plugin.where}.inherit_from: a plugin cannot inherit from itself"
                )
        for plugin in plugins.values():
            chain, p = [plugin.name], plugin.parent
            while p is not None:
                if p.name in chain:
                    raise ConfigError(
                        f"{plugin.where}.inherit_from: inheritance cycle {' -> '.join([*chain, p.name])}"
                    )
                chain.append(p.name)
                p = p.parent
        for plugin in plugins.values():
            if plugin.parent is None:
                _attach_lock(project, plugin)


def _attach_lock(project: MeltanoProject, plugin: Plugin) -> None:
    """``plugins/TYPE/NAME--VARIANT.lock`` (or ``NAME.lock``), where ``meltano add`` wrote it."""
    folder = project.root / "plugins" / plugin.type
    base = plugin.base_name
    variant = plugin.raw.get("variant")
    candidates = [folder / f"{base}--{variant}.lock"] if variant else []
    candidates.append(folder / f"{base}.lock")
    if not variant and folder.is_dir():
        candidates += sorted(folder.glob(f"{_glob_escape(base)}--*.lock"))
    for path in candidates:
        if path.is_file():
            rel = str(path.relative_to(project.root))
            try:
                lock = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"{rel}: invalid lock file ({e}); restore it or run `meltano lock --update`"
                ) from None
            except OSError as e:
                raise ConfigError(f"{rel}: cannot read: {e.strerror}") from None
            if not isinstance(lock, dict):
                raise ConfigError(f"{rel}: a lock file must be a JSON object")
            plugin.lock, plugin.lock_file = lock, rel
            return


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)

"""The plugin manager: built-ins and third-party plugins from entry points, and project plugins.

Built-in plugins are found through the entry-point group ``eltmake``, the same way a pip-installed
plugin is; a project adds its own with ``[project].plugins`` (importable module names, the project
folder first on ``sys.path``) and with ``.py`` files in its ``plugins/`` folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from eltmake import hookspecs
from eltmake.errors import ConfigError

if TYPE_CHECKING:
    from eltmake.recipe import Recipe

ENTRY_POINT_GROUP = "eltmake"


class PluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__("eltmake")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}  # plugin name -> where it came from
        self._project_loaded: set[str] = set()
        self._one_plugin_callers: dict[tuple[str, str], Any] = {}
        self._plain_impls: dict[str, list[str]] = {}  # hook -> its plain implementations
        if os.environ.get("ELTMAKE_TRACE_HOOKS"):
            self.trace.root.setwriter(lambda s: sys.stderr.write(f"[hooks] {s}"))
            self.enable_tracing()

    def load_builtins_and_entrypoints(self) -> None:
        for name, value, dist in entry_points():
            if self.get_plugin(name) is not None or self.is_blocked(name):
                continue
            try:
                module = _load_entry_point(value)
            except Exception as e:  # a broken third-party plugin must not look like our bug
                raise ConfigError(
                    f"plugin {name!r} (entry point {value}) failed to import: "
                    f"{type(e).__name__}: {e}; reinstall or uninstall it"
                ) from e
            self._register(module, name, f"entry point {value}{dist}")

    def load_project_plugins(self, root: Path, modules: list[str], fname: str) -> None:
        """``[project].plugins`` modules and ``plugins/*.py`` files of the project folder."""
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        for name in modules:
            if name in self._project_loaded:
                continue
            try:
                module = importlib.import_module(name)
            except ImportError as e:
                raise ConfigError(
                    f"{fname}: project.plugins: cannot import {name!r} ({e}); is it installed, "
                    "or a module in the project folder?"
                ) from e
            except Exception as e:
                raise ConfigError(
                    f"{fname}: project.plugins: {name!r} failed to import: {type(e).__name__}: {e}"
                ) from e
            self._project_loaded.add(name)
            self._register(module, name, "project.plugins")
        folder = root / "plugins"
        if folder.is_dir():
            for file in sorted(folder.glob("*.py")):
                name = f"project:{file.stem}"
                if name in self._project_loaded:
                    continue
                self._project_loaded.add(name)
                self._register(_import_file(file, root), name, str(file.relative_to(root)))

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        self._plain_impls.clear()
        self._one_plugin_callers.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        self._plain_impls.clear()
        self._one_plugin_callers.clear()
        return super().unregister(plugin, name)

    def _register(self, module: ModuleType, name: str, origin: str) -> None:
        if self.get_plugin(name) is None:
            try:
                self.register(module, name=name)
            except pluggy.PluginValidationError as e:
                msg = " ".join(str(e).split())
                raise ConfigError(f"plugin {name!r} ({origin}): {msg}") from e
            self.origins[name] = origin

    def check(self) -> None:
        """Refuse a hook implementation whose name matches no hook (a typo would never fire)."""
        from eltmake.errors import did_you_mean

        known = [n for n, c in vars(self.hook).items() if c.spec is not None]
        for name, caller in vars(self.hook).items():
            if caller.spec is None and caller.get_hookimpls():
                plugin = caller.get_hookimpls()[0].plugin_name
                raise ConfigError(
                    f"plugin {plugin!r} ({self.origins.get(plugin, '')}): {name} is not an "
                    f"eltmake hook{did_you_mean(name, known)}; the hooks are in eltmake/hookspecs.py"
                )

    def notify(self, hook_name: str, warn: Callable[[str], None], **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin through pluggy (wrappers and tracing apply); one
        plugin's failure is reported and the others are still called (a broken Slack notifier must
        not stop a warehouse build, nor hide the other notifiers)."""
        plain = self._plain_impls.get(hook_name)
        if plain is None:
            impls = getattr(self.hook, hook_name).get_hookimpls()
            plain = [i.plugin_name for i in impls if not (i.hookwrapper or i.wrapper)]
            self._plain_impls[hook_name] = plain
        for name in reversed(plain):
            one = self._one_plugin_callers.get((hook_name, name))
            if one is None:
                others = [self.get_plugin(n) for n in plain if n != name]
                one = self.subset_hook_caller(hook_name, remove_plugins=others)
                self._one_plugin_callers[(hook_name, name)] = one
            try:
                one(**kwargs)
            except Exception as e:
                warn(f"warning: plugin {name!r}: {hook_name} failed: {type(e).__name__}: {e}")

    def recipes(self) -> dict[str, Recipe]:
        """Every registered recipe by kind; two recipes with one kind or marker are refused."""
        from eltmake.recipe import Recipe

        out: dict[str, Recipe] = {}
        markers: dict[str, str] = {}
        for found in reversed(self.hook.eltmake_add_recipes()):
            for recipe in found or []:
                if isinstance(recipe, type) and issubclass(recipe, Recipe):
                    recipe = recipe()
                if not isinstance(recipe, Recipe) or not recipe.kind or not recipe.marker:
                    raise ConfigError(
                        "eltmake_add_recipes must return Recipe objects with a kind and a "
                        f"marker, not {recipe!r:.60}"
                    )
                where = f"recipe {type(recipe).__module__}.{type(recipe).__qualname__}"
                if recipe.kind in out:
                    raise ConfigError(f"{where}: another recipe has the kind {recipe.kind!r}")
                if recipe.marker in markers:
                    raise ConfigError(
                        f"{where}: the marker key {recipe.marker!r} is taken by the "
                        f"{markers[recipe.marker]!r} recipe"
                    )
                out[recipe.kind] = recipe
                markers[recipe.marker] = recipe.kind
        return out

    def describe(self) -> list[tuple[str, str, list[str]]]:
        """(name, origin, hooks it implements) for every plugin, for ``eltmake plugins``."""
        out = []
        for name, plugin in self.list_name_plugin():
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            out.append((name, self.origins.get(name, ""), hooks))
        return out


def forget_project_modules(root: Path, plugins: list[str]) -> None:
    """Make the ``[project].plugins`` modules that live in the project folder import afresh
    (watch mode reloads the project after an edit; files in ``plugins/`` are always executed
    again by a new plugin manager)."""
    tops = {p.split(".", 1)[0] for p in plugins}
    for name in list(sys.modules):
        if name.split(".", 1)[0] in tops:
            f = getattr(sys.modules[name], "__file__", None) or ""
            if f.startswith(str(root) + os.sep):
                del sys.modules[name]


def _import_file(file: Path, root: Path) -> ModuleType:
    modname = f"eltmake_project_plugins.{file.stem}"
    spec = importlib.util.spec_from_file_location(modname, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(modname, None)
        raise ConfigError(
            f"{file.relative_to(root)}: plugin failed to load: {type(e).__name__}: {e}"
        ) from e
    return module


def entry_points() -> list[tuple[str, str, str]]:
    """(name, value, " from DIST VERSION") of every ``eltmake`` entry point.

    Asking importlib.metadata costs about 20 ms of every start (it imports email, zipfile and csv,
    and reads every installed distribution's metadata): a tenth of a small build. The answer only
    changes when a distribution is installed, removed or reinstalled, so it is kept in the user's
    cache folder under a key of the metadata folders on ``sys.path`` and the mtimes of their
    ``entry_points.txt`` files, taken *before* the scan (an install during the scan makes the next
    start scan again). Folder mtimes would be cheaper but are no key: ``sys.path[0]`` is the
    current or the script's folder, which changes all the time.
    """
    import json

    from eltmake.metacache import cache_file, metadata_key

    key = metadata_key()
    file = cache_file("entry-points")
    try:
        data = json.loads(file.read_text())
        if data["key"] == key:
            return [(str(n), str(v), str(d)) for n, v, d in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from importlib.metadata import entry_points as scan

    entries = []
    for ep in scan(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        entries.append((ep.name, ep.value, f" from {dist.name} {dist.version}" if dist else ""))
    from eltmake.files import write_atomic

    # A read-only home: scan every time.
    write_atomic(file, json.dumps({"key": key, "entries": entries}), best_effort=True)
    return entries


def _load_entry_point(value: str) -> Any:
    """What ``EntryPoint.load`` does: ``module`` or ``module:attr.attr`` (extras ignored)."""
    module_name, _, attrs = value.split("[", 1)[0].partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def ask_for_commands(root: Path | None) -> list[tuple[str, str]]:
    """Let the plugins add their commands to a scratch parser, and list them."""
    import argparse

    from eltmake.commandline import Commands

    pm = PluginManager()
    pm.load_builtins_and_entrypoints()
    if root is not None:
        import tomllib

        try:
            modules = tomllib.loads((root / "eltmake.toml").read_text()).get("project", {})
            modules = modules.get("plugins", []) if isinstance(modules, dict) else []
        except (OSError, ValueError):
            modules = []
        pm.load_project_plugins(
            root.resolve(), [m for m in modules if isinstance(m, str)], "eltmake.toml"
        )
    commands = Commands(argparse.ArgumentParser(add_help=False).add_subparsers())
    try:
        pm.hook.eltmake_add_commands(commands=commands)
    except Exception:  # the listing must not fail over one plugin
        pass
    return commands.added

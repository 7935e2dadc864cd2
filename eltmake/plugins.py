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
from typing import Any

import pluggy

from eltmake import hookspecs
from eltmake.errors import ConfigError

ENTRY_POINT_GROUP = "eltmake"


class PluginManager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__("eltmake")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}  # plugin name -> where it came from
        self._project_loaded: set[str] = set()
        if os.environ.get("ELTMAKE_TRACE_HOOKS"):
            self.trace.root.setwriter(lambda s: sys.stderr.write(f"[hooks] {s}"))
            self.enable_tracing()

    def load_builtins_and_entrypoints(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as e:  # a broken third-party plugin must not look like our bug
                raise ConfigError(
                    f"plugin {ep.name!r} (entry point {ep.value}) failed to import: "
                    f"{type(e).__name__}: {e}; reinstall or uninstall it"
                ) from e
            self._register(module, ep.name, f"entry point {ep.value}" + _dist(ep))

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
        """Call a lifecycle hook on every plugin; one plugin's failure is reported and the build
        goes on (a broken Slack notifier must not stop a warehouse build, nor hide the others)."""
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as e:
                warn(
                    f"warning: plugin {impl.plugin_name!r}: {hook_name} failed: "
                    f"{type(e).__name__}: {e}"
                )

    def describe(self) -> list[tuple[str, str, list[str]]]:
        """(name, origin, hooks it implements) for every plugin, for ``eltmake plugins``."""
        out = []
        for name, plugin in self.list_name_plugin():
            hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
            out.append((name, self.origins.get(name, ""), hooks))
        return out


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


def _dist(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f" from {dist.name} {dist.version}" if dist else ""

"""The public API for plugins: everything a plugin may import from eltmake, in one module.

The built-in plugins (commands, Singer, dbt) import nothing else from the core, so each is a model
a user's plugin can copy. Names are imported on first use, so a plugin that imports this module
costs eltmake's start-up nothing it does not use.

Writing a step kind::

    from eltmake.api import Recipe, StepResult, hookimpl

    class Greet(Recipe):
        kind, marker, keys = "greet", "greet", {"greet": (str,)}

        def run(self, ctx):
            (ctx.root / ctx.step.outputs[0]).write_text(f"hello {ctx.step.target.config['greet']}")
            return StepResult(stats={"greetings": 1})

    @hookimpl
    def eltmake_add_recipes():
        return [Greet()]

What is here, by theme:

* hooks and recipes: :data:`hookimpl`, :class:`Recipe` (:mod:`eltmake.recipe`), the hooks in
  :mod:`eltmake.hookspecs`;
* the data a recipe sees and returns: :class:`Project`, :class:`Target`, :class:`Step`,
  :class:`StepContext`, :class:`StepResult`, :class:`ToolSpec`, :class:`Warehouse`,
  :class:`Outcome`, :class:`BuildInfo`;
* errors: :class:`ConfigError` (bad input, exit 2), :class:`StepError` (a failed step, exit 1),
  :class:`Cancelled`, :class:`LeaseHeld`, and :func:`did_you_mean` for hints;
* helpers: :func:`digest` (keys and fingerprints), :func:`parse_duration` ("30m" → seconds),
  :func:`path_lock` (a lock name for a file), :func:`private_dir` (a folder for config files
  holding secrets), :func:`write_atomic` (a file replaced whole or not at all),
  :func:`load_project`, :func:`open_state` (the state store), :func:`warehouses` (the
  databases plugins declare);
* tool environments: :func:`executable_path`, :func:`tool_identity`, :func:`ensure_installed`,
  :func:`is_installed`; :func:`run_process` for a tool run outside a step (a parse, a listing):
  ``subprocess.run`` that never outlives eltmake; :func:`spawn_helper` for a long-lived helper
  (a warm tool server in watch mode) that dies with eltmake, and :func:`stop_helper` to end it;
* the command line: :class:`Commands` (what ``eltmake_add_commands`` receives);
* secrets: :func:`looks_secret` (the one naming rule), :class:`Redactor`, :data:`MASK`, and
  :attr:`Step.secrets` (values the core masks in everything a step shows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ below
    from eltmake.commandline import Commands  # noqa: F401
    from eltmake.digest import digest  # noqa: F401
    from eltmake.errors import (  # noqa: F401
        Cancelled,
        ConfigError,
        EltmakeError,
        StepError,
        did_you_mean,
    )
    from eltmake.files import write_atomic  # noqa: F401
    from eltmake.procs import run as run_process  # noqa: F401
    from eltmake.procs import spawn_helper, stop_helper  # noqa: F401
    from eltmake.project import Project, Target, load_project  # noqa: F401
    from eltmake.project import parse_freshness as parse_duration  # noqa: F401
    from eltmake.recipe import Recipe  # noqa: F401
    from eltmake.redact import MASK, SECRET_NAME, Redactor, looks_secret  # noqa: F401
    from eltmake.step import (  # noqa: F401
        BuildInfo,
        Outcome,
        Step,
        StepContext,
        StepResult,
        ToolSpec,
        Warehouse,
        path_lock,
        private_dir,
    )
    from eltmake.store import LeaseHeld, Store  # noqa: F401
    from eltmake.toolenv import (  # noqa: F401
        ensure_installed,
        executable_path,
        is_installed,
        tool_identity,
    )

_WHERE = {
    "Commands": ("eltmake.commandline", "Commands"),
    "digest": ("eltmake.digest", "digest"),
    "Cancelled": ("eltmake.errors", "Cancelled"),
    "ConfigError": ("eltmake.errors", "ConfigError"),
    "EltmakeError": ("eltmake.errors", "EltmakeError"),
    "StepError": ("eltmake.errors", "StepError"),
    "did_you_mean": ("eltmake.errors", "did_you_mean"),
    "Project": ("eltmake.project", "Project"),
    "Target": ("eltmake.project", "Target"),
    "load_project": ("eltmake.project", "load_project"),
    "parse_duration": ("eltmake.project", "parse_freshness"),
    "Recipe": ("eltmake.recipe", "Recipe"),
    "LeaseHeld": ("eltmake.store", "LeaseHeld"),
    "BuildInfo": ("eltmake.step", "BuildInfo"),
    "Outcome": ("eltmake.step", "Outcome"),
    "Step": ("eltmake.step", "Step"),
    "StepContext": ("eltmake.step", "StepContext"),
    "StepResult": ("eltmake.step", "StepResult"),
    "ToolSpec": ("eltmake.step", "ToolSpec"),
    "Warehouse": ("eltmake.step", "Warehouse"),
    "path_lock": ("eltmake.step", "path_lock"),
    "private_dir": ("eltmake.step", "private_dir"),
    "ensure_installed": ("eltmake.toolenv", "ensure_installed"),
    "executable_path": ("eltmake.toolenv", "executable_path"),
    "is_installed": ("eltmake.toolenv", "is_installed"),
    "tool_identity": ("eltmake.toolenv", "tool_identity"),
    "write_atomic": ("eltmake.files", "write_atomic"),
    "run_process": ("eltmake.procs", "run"),
    "spawn_helper": ("eltmake.procs", "spawn_helper"),
    "stop_helper": ("eltmake.procs", "stop_helper"),
    "MASK": ("eltmake.redact", "MASK"),
    "SECRET_NAME": ("eltmake.redact", "SECRET_NAME"),
    "Redactor": ("eltmake.redact", "Redactor"),
    "looks_secret": ("eltmake.redact", "looks_secret"),
}

__all__ = sorted([*_WHERE, "hookimpl", "open_state", "warehouses"])


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        import pluggy

        value: Any = pluggy.HookimplMarker("eltmake")
    elif name in _WHERE:
        import importlib

        module, attr = _WHERE[name]
        value = getattr(importlib.import_module(module), attr)
    else:
        raise AttributeError(f"eltmake.api has no {name!r}; see its docstring for what it offers")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def open_state(project: Project) -> Store:
    """The project's store (bookmarks under leases: ``get``, ``set``, ``update``, ``clear`` and
    ``lease(state_id)``), as configured: the local folder or a shared store. Close it when done."""
    from eltmake.store import open_store

    store = open_store(project)
    assert store is not None
    return store


def warehouses(project: Project) -> list[Warehouse]:
    """The databases the project's plugins declare (``eltmake_warehouses``), e.g. the DuckDB
    file a Singer loader writes: where a transformer puts its models by default."""
    return [w for found in project.pm.hook.eltmake_warehouses(project=project) for w in found or []]


def __dir__() -> list[str]:
    return __all__

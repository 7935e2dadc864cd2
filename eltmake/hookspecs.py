"""The plugin contract: every hook eltmake calls, in one place.

eltmake's own step kinds (commands, Singer, dbt) are plugins written against exactly these hooks
and the public API of :mod:`eltmake.api`, so each built-in plugin under ``plugins/`` is also the
reference example for a user's plugin.

Conventions (as in pytest and datasette):

* every hook is prefixed ``eltmake_``; implement it with ``@eltmake.api.hookimpl`` and the same
  name;
* a plugin may accept any subset of a hook's arguments, by name;
* hooks marked *first result* stop at the first implementation that returns something other than
  ``None``; the others collect a list.

A kind of step is not a set of hooks but an object: :class:`eltmake.recipe.Recipe`, registered
with :func:`eltmake_add_recipes`. The core asks the one recipe of a target's kind everything about
its step (key, inputs, outputs, run, tools), so no plugin ever sees another kind's step.

Errors: raise :class:`eltmake.errors.ConfigError` for bad user input (one line, exit code 2) and
:class:`eltmake.errors.StepError` when a step fails (exit code 1). Any other exception is a bug and
is shown with its traceback only under ``--debug``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from eltmake.commandline import Commands
    from eltmake.project import Project
    from eltmake.recipe import Recipe
    from eltmake.step import BuildInfo, Outcome, Step, ToolSpec, Warehouse

hookspec = pluggy.HookspecMarker("eltmake")


# --- claiming configuration -------------------------------------------------------------------


@hookspec
def eltmake_add_tables() -> dict[str, str]:
    """Claim top-level tables of ``eltmake.toml``.

    Called once when the project file is loaded. Return ``{table_name: one-line description}``.
    The core owns ``[project]``, ``[targets]`` and ``[environments]``; any other top-level table
    that no plugin claims is refused with a "did you mean" hint. The claimed table's content is
    handed to the plugin unvalidated in ``project.tables[name]``: check it in
    :func:`eltmake_validate_project`.
    """


@hookspec
def eltmake_add_recipes() -> list[Recipe]:
    """Register kinds of step: return instances of :class:`eltmake.recipe.Recipe` subclasses.

    Called once when the project file is loaded. A target belongs to a recipe when it holds that
    recipe's ``marker`` key; a target with two markers is refused, and so is a recipe key on a
    target of another kind. The core checks the types the recipe declares in ``keys``, then calls
    the recipe's ``validate`` for each of its targets. Two recipes may not share a kind or marker.
    """


@hookspec
def eltmake_validate_project(project: Project) -> None:
    """Check the tables this plugin claimed, after the core has checked its own.

    Called once per load, with interpolation and ``--env`` overrides already applied, before the
    recipes validate their targets. Raise :class:`eltmake.errors.ConfigError` naming the file,
    table and key. Return nothing.
    """


@hookspec
def eltmake_infer_deps(project: Project) -> list[tuple[str, str, str]]:
    """Add dependency edges the user did not write, such as dbt sources loaded by a Singer step.

    Called once per load, after validation. Return ``[(upstream, downstream, why), ...]`` with
    target names; the graph marks these edges as inferred and shows ``why`` in ``eltmake graph``.
    Read-only commands call it too (``project.read_only``): then it must install nothing and
    start no tool, and answer from what earlier runs left.
    """


@hookspec
def eltmake_warehouses(project: Project) -> list[Warehouse]:
    """Declare the databases this plugin's tables write (e.g. a Singer loader's DuckDB file).

    Called when another plugin asks :func:`eltmake.api.warehouses` (dbt writes its models into
    the warehouse the loaders fill). Return :class:`eltmake.step.Warehouse` items.
    """


# --- tools ------------------------------------------------------------------------------------


@hookspec
def eltmake_tools(project: Project) -> list[ToolSpec]:
    """Declare the tools (isolated environments) that this plugin's tables define.

    Called by ``eltmake install`` and before a build. Return :class:`eltmake.step.ToolSpec` items;
    the core installs each into its own environment. A build installs only the tools that the
    recipes of its steps name (:meth:`eltmake.recipe.Recipe.tools`).
    """


@hookspec(firstresult=True)
def eltmake_invoke(project: Project, name: str, args: list[str]) -> int | None:
    """Run tool ``name`` in its environment with its config, for ``eltmake invoke NAME -- ARGS``.

    *First result*: return the tool's exit code, or ``None`` when ``name`` is not this plugin's.
    """


# --- a new project ----------------------------------------------------------------------------


@hookspec(firstresult=True)
def eltmake_starter_project(name: str) -> dict[str, str] | None:
    """The files of the starter project that ``eltmake init`` writes (*first result*).

    Return ``{relative path: text}``. A ``.gitignore`` entry lists lines the core merges into the
    folder's ``.gitignore`` (an existing repository keeps its own lines); other files are written
    only where none exists.
    """


# --- lifecycle notifications ------------------------------------------------------------------


@hookspec
def eltmake_build_started(build: BuildInfo) -> None:
    """A build is about to run its first step; ``build.targets`` lists the selected targets."""


@hookspec
def eltmake_step_started(build: BuildInfo, step: Step) -> None:
    """A step is about to run (it was out of date). Called on the scheduler thread."""


@hookspec
def eltmake_step_finished(build: BuildInfo, step: Step, outcome: Outcome) -> None:
    """A step has ended: ``outcome.status`` is built, skipped, failed, upstream_failed or cancelled."""


@hookspec
def eltmake_build_finished(build: BuildInfo, status: str) -> None:
    """A build has ended with ``status`` ok, failed or interrupted; all steps have finished."""


# --- command line -----------------------------------------------------------------------------


@hookspec
def eltmake_add_commands(commands: Commands) -> None:
    """Add subcommands to the ``eltmake`` command line.

    Called when the command line names a command the core does not know (project plugins are
    loaded for it too), and for help texts that list every command. Add one with
    ``parser = commands.add(NAME, help=..., func=callable(args) -> int)``; the parser (an
    ``argparse.ArgumentParser``) already takes ``-C``, ``--env`` and ``--debug`` (read them as
    ``args.project_dir`` and ``args.env_name``); add your own arguments to it. Read the project
    with :func:`eltmake.api.load_project`.
    """

"""The plugin contract: every hook eltmake calls, in one place.

eltmake's own step kinds (commands, Singer, dbt) are plugins written against exactly these hooks,
so each built-in plugin under ``plugins/`` is also the reference example for a user's plugin.

Conventions (as in pytest and datasette):

* every hook is prefixed ``eltmake_``; implement it with ``@eltmake.hookimpl`` and the same name;
* a plugin may accept any subset of a hook's arguments, by name;
* hooks marked *first result* stop at the first implementation that returns something other than
  ``None``, which is how a plugin says "this step is mine"; the others collect a list.

Errors: raise :class:`eltmake.errors.ConfigError` for bad user input (one line, exit code 2) and
:class:`eltmake.errors.StepError` when a step fails (exit code 1). Any other exception is a bug and
is shown with its traceback only under ``--debug``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from eltmake.project import Project
    from eltmake.step import (
        BuildInfo,
        CheckResult,
        Outcome,
        RecipeSpec,
        Step,
        StepContext,
        StepResult,
        ToolSpec,
    )

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
def eltmake_add_recipes() -> list[RecipeSpec]:
    """Claim a kind of step and the keys it uses inside a ``[targets.NAME]`` table.

    Called once when the project file is loaded. Return a list of :class:`eltmake.step.RecipeSpec`.
    A target belongs to a recipe when it holds that recipe's ``marker`` key (``run`` for commands,
    ``extract`` for Singer, ``transform`` for dbt); a target with two markers is refused, and so is
    a recipe key on a target of another kind. The core checks the types that the spec declares.
    """


@hookspec
def eltmake_validate_project(project: Project) -> None:
    """Check the tables and targets this plugin claimed, after the core has checked its own.

    Called once per load, with interpolation and ``--env`` overrides already applied. Raise
    :class:`eltmake.errors.ConfigError` naming the file, table and key, e.g. a target whose
    ``extract`` names an extractor that is not defined. Return nothing.
    """


@hookspec
def eltmake_infer_deps(project: Project) -> list[tuple[str, str, str]]:
    """Add dependency edges the user did not write, such as dbt sources loaded by a Singer step.

    Called once per load, after validation. Return ``[(upstream, downstream, why), ...]`` with
    target names; the graph marks these edges as inferred and shows ``why`` in ``eltmake graph``.
    """


# --- steps ------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def eltmake_make_step(project: Project, target: Any) -> Step | None:
    """Turn a target of this plugin's recipe into a :class:`eltmake.step.Step` (*first result*).

    Called once per target with a recipe, before scheduling. Return ``None`` for targets of other
    kinds. Must be cheap: it runs for every target on every build, including no-op builds.
    """


@hookspec
def eltmake_step_definition(project: Project, step: Step) -> dict[str, Any] | None:
    """Add to the definition part of a step's cache key.

    Called each time eltmake decides whether a step is up to date. The core already includes the
    target's own table; return extra JSON-able facts that should re-run the step when they change
    (the tool's identity and installed versions, resolved non-secret config, a digest of secrets).
    Each key of the returned dict is named in ``-n`` explanations ("definition changed: KEY").
    """


@hookspec
def eltmake_step_inputs(project: Project, step: Step) -> list[str] | None:
    """Add files a step reads beyond its declared ``inputs`` (e.g. the dbt models it selects).

    Called with :func:`eltmake_step_definition`. Return paths relative to the project root; their
    content enters the key, and ``eltmake watch`` watches them.
    """


@hookspec(firstresult=True)
def eltmake_run_step(ctx: StepContext) -> StepResult | None:
    """Run a step of this plugin's kind (*first result*).

    Called from a worker thread when the step is out of date; ``ctx.step.kind`` tells whose step it
    is, return ``None`` for steps of other kinds. Start child processes only with ``ctx.popen`` so
    that Ctrl-C and cancellation stop them. Return a :class:`eltmake.step.StepResult`; its
    ``fingerprint`` (when set) is the step's output fingerprint for early cutoff. Raise
    :class:`eltmake.errors.StepError` on failure.
    """


@hookspec
def eltmake_check_outputs(
    project: Project, step: Step, record: dict[str, Any]
) -> CheckResult | None:
    """Say whether a built step's outputs still stand, beyond the declared ``outputs`` files.

    Called for a step whose key matches its record, before skipping it. Return a reason string
    ("table raw.orders is missing") to make it re-run, or ``None`` when all is well.
    """


@hookspec
def eltmake_tools(project: Project) -> list[ToolSpec]:
    """Declare the tools (isolated environments) that this plugin's tables define.

    Called by ``eltmake install`` and before a build. Return :class:`eltmake.step.ToolSpec` items;
    the core installs each into its own environment under ``.eltmake/``.
    """


@hookspec(firstresult=True)
def eltmake_invoke(project: Project, name: str, args: list[str]) -> int | None:
    """Run tool ``name`` in its environment with its config, for ``eltmake invoke NAME -- ARGS``.

    *First result*: return the tool's exit code, or ``None`` when ``name`` is not this plugin's.
    """


@hookspec
def eltmake_step_tools(project: Project, step: Step) -> list[str] | None:
    """Name the tools (declared through :func:`eltmake_tools`) that a step needs.

    Called by ``eltmake build`` for the selected steps before it decides what is up to date, so
    that only the tools of the steps being built are installed (their installed versions are
    part of the keys). A step whose tool cannot be installed fails with the installer's message;
    the rest of the build goes on as after any failure. Return ``None`` for other plugins' steps.
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
def eltmake_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``eltmake`` command line.

    Called when the command line names a command the core does not know (project plugins are
    loaded for it too), and by ``eltmake plugins``, which lists the commands it adds. Add a
    parser with ``subparsers.add_parser(NAME, help=...)`` and set ``func=callable(args) -> int`` with
    ``parser.set_defaults``. The callable receives the parsed args; ``args.project_dir`` holds
    ``-C``. Use :func:`eltmake.project.load_project` to read the project.
    """

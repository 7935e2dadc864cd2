"""Singer extract-load steps for eltmake: taps → optional mappers → targets.

A built-in plugin written only against the public hooks (:mod:`eltmake.hookspecs`), as a user's
plugin would be. The modules hold one concern each:

* :mod:`~eltmake_singer.config`: the ``[extractors]``/``[loaders]``/``[mappers]`` tables, the
  target keys, resolved config and secrets;
* :mod:`~eltmake_singer.catalog`: capabilities, ``--discover`` (cached) and selection;
* :mod:`~eltmake_singer.messages`: checking and fingerprinting the message stream;
* :mod:`~eltmake_singer.runner`: the processes, the buffer, stderr, failures;
* :mod:`~eltmake_singer.bookmarks`: merging state per stream;
* :mod:`~eltmake_singer.extract`: the step itself; :mod:`~eltmake_singer.commands`: the CLI.

Tool environments come from the core's generic :mod:`eltmake.toolenv`. See docs/singer.md.
"""

from __future__ import annotations

from eltmake import hookimpl
from eltmake.step import RecipeSpec
from eltmake_singer import config as _config
from eltmake_singer import extract as _extract


@hookimpl
def eltmake_add_tables():
    return dict(_config.TABLE_DOCS)


@hookimpl
def eltmake_add_recipes():
    return [
        RecipeSpec(
            kind=_extract.KIND,
            marker="extract",
            keys=dict(_config.RECIPE_KEYS),
            doc="a Singer extract-load: extract (a tap) → map (mappers) → load (a target)",
        )
    ]


@hookimpl
def eltmake_validate_project(project):
    _config.validate(project)


@hookimpl
def eltmake_make_step(project, target):
    if target.kind != _extract.KIND:
        return None
    return _extract.make_step(project, target)


@hookimpl
def eltmake_step_definition(project, step):
    if step.kind != _extract.KIND:
        return None
    return _extract.definition(project, step)


@hookimpl
def eltmake_run_step(ctx):
    if ctx.step.kind != _extract.KIND:
        return None
    return _extract.run_step(ctx)


@hookimpl
def eltmake_tools(project):
    return [t.spec() for t in _config.all_tools(project)]


@hookimpl
def eltmake_step_tools(project, step):
    if step.kind != _extract.KIND:
        return None
    tap, mappers, loader = _extract.tools_of(project, step.target)
    return [t.name for t in (tap, *mappers, loader)]


@hookimpl
def eltmake_invoke(project, name, args):
    from eltmake_singer import commands

    return commands.invoke(project, name, args)


@hookimpl
def eltmake_add_commands(subparsers):
    from eltmake_singer import commands

    commands.add_commands(subparsers)

"""Singer extract-load steps for eltmake: taps → optional mappers → targets.

A built-in plugin written only against :mod:`eltmake.api`, as a user's plugin would be: one
recipe (a target with ``extract`` is a Singer step) and the hooks for its tables, tools,
warehouses, commands and the starter project. The modules hold one concern each:

* :mod:`~eltmake_singer.config`: the ``[extractors]``/``[loaders]``/``[mappers]`` tables, the
  target keys, resolved config and secrets;
* :mod:`~eltmake_singer.destinations`: which warehouse each loader writes, and its tables;
* :mod:`~eltmake_singer.outputs`: whether those tables still stand (``check_outputs``);
* :mod:`~eltmake_singer.catalog`: capabilities, ``--discover`` (cached) and selection;
* :mod:`~eltmake_singer.messages`: checking and fingerprinting the message stream;
* :mod:`~eltmake_singer.runner`: the processes, the buffer, stderr, failures;
* :mod:`~eltmake_singer.bookmarks`: merging state per stream;
* :mod:`~eltmake_singer.extract`: the step itself; :mod:`~eltmake_singer.commands`: the CLI;
* :mod:`~eltmake_singer.starter`: the project ``eltmake init`` writes.

See docs/singer.md.
"""

from __future__ import annotations

from eltmake.api import Recipe, hookimpl
from eltmake_singer import config as _config
from eltmake_singer import extract as _extract


class SingerExtractLoad(Recipe):
    """A Singer extract-load: extract (a tap) → map (mappers) → load (a target)."""

    kind = _extract.KIND
    marker = "extract"
    keys = dict(_config.RECIPE_KEYS)
    color = "cyan"

    def validate(self, project, target):
        _config.validate_target(project, target)

    def make_step(self, project, target):
        return _extract.make_step(project, target)

    def definition(self, project, step):
        return _extract.definition(project, step)

    def check_outputs(self, project, step, record):
        from eltmake_singer.outputs import check

        return check(project, step, record)

    def run(self, ctx):
        return _extract.run_step(ctx)

    def tools(self, project, step):
        tap, mappers, loader = _extract.tools_of(project, step.target)
        return [t.name for t in (tap, *mappers, loader)]


@hookimpl
def eltmake_add_tables():
    return dict(_config.TABLE_DOCS)


@hookimpl
def eltmake_add_recipes():
    return [SingerExtractLoad()]


@hookimpl
def eltmake_validate_project(project):
    _config.validate(project)


@hookimpl
def eltmake_tools(project):
    return [t.spec() for t in _config.all_tools(project)]


@hookimpl
def eltmake_warehouses(project):
    from eltmake_singer.destinations import all_warehouses

    return all_warehouses(project)


@hookimpl
def eltmake_invoke(project, name, args):
    from eltmake_singer import commands

    return commands.invoke(project, name, args)


@hookimpl
def eltmake_add_commands(commands):
    from eltmake_singer import commands as _commands

    _commands.add_commands(commands)


@hookimpl
def eltmake_starter_project(name):
    from eltmake_singer.starter import files

    return files(name)

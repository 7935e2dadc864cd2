"""dbt transformations for eltmake: ``[transformers.NAME]`` and targets with ``transform = NAME``.

A built-in plugin written only against the public hooks (:mod:`eltmake.hookspecs`), as a user's
plugin would be. One concern per module:

* :mod:`~eltmake_dbt.config`: the transformer table, the target keys, the generated DuckDB profile;
* :mod:`~eltmake_dbt.manifest`: dbt's manifest, summarised and cached by the dbt project's file
  digests, so a no-op build never starts dbt;
* :mod:`~eltmake_dbt.select`: dbt's selection syntax over that summary (``dbt ls`` as fallback);
* :mod:`~eltmake_dbt.lineage`: which extract-load targets load the sources a dbt target reads;
* :mod:`~eltmake_dbt.transform`: the step's selection and key; :mod:`~eltmake_dbt.run`: running
  dbt and the table-checksum fingerprint.

dbt itself runs in its own environment from :mod:`eltmake.toolenv`. See docs/dbt.md.
"""

from __future__ import annotations

from eltmake import hookimpl
from eltmake.step import RecipeSpec
from eltmake_dbt import config as _config
from eltmake_dbt import transform as _transform

KIND = _config.KIND


@hookimpl
def eltmake_add_tables():
    return {_config.TABLE: _config.TABLE_DOC}


@hookimpl
def eltmake_add_recipes():
    return [
        RecipeSpec(
            kind=KIND,
            marker="transform",
            keys=dict(_config.RECIPE_KEYS),
            doc="a dbt command (build, run, test, seed, snapshot) over a selection of a dbt project",
        )
    ]


@hookimpl
def eltmake_validate_project(project):
    _config.validate(project)


@hookimpl
def eltmake_infer_deps(project):
    from eltmake_dbt import inference

    return inference.infer(project)


@hookimpl
def eltmake_make_step(project, target):
    if target.kind != KIND:
        return None
    return _transform.make_step(project, target)


@hookimpl
def eltmake_step_definition(project, step):
    if step.kind != KIND:
        return None
    return _transform.definition(project, step)


@hookimpl
def eltmake_step_inputs(project, step):
    if step.kind != KIND:
        return None
    return _transform.inputs(project, step)


@hookimpl
def eltmake_check_outputs(project, step, record):
    if step.kind != KIND:
        return None
    return _transform.check_outputs(project, step)


@hookimpl
def eltmake_run_step(ctx):
    if ctx.step.kind != KIND:
        return None
    from eltmake_dbt import run

    return run.run_step(ctx)


@hookimpl
def eltmake_tools(project):
    tables = project.tables.get(_config.TABLE) or {}
    return [_config.transformer(project, name).spec() for name in tables]


@hookimpl
def eltmake_step_tools(project, step):
    if step.kind != KIND:
        return None
    return [step.target.config["transform"]]


@hookimpl
def eltmake_invoke(project, name, args):
    from eltmake_dbt import run

    return run.invoke(project, name, args)

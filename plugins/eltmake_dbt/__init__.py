"""dbt transformations for eltmake: ``[transformers.NAME]`` and targets with ``transform = NAME``.

A built-in plugin written only against :mod:`eltmake.api`, as a user's plugin would be: one recipe
(a target with ``transform`` is a dbt step) and the hooks for its table, inferred edges and tools.
One concern per module:

* :mod:`~eltmake_dbt.config`: the transformer table, the target keys, the generated profile
  (DuckDB or PostgreSQL) and the warehouse the models land in;
* :mod:`~eltmake_dbt.profiles`: a project's own profiles.yml, rendered where eltmake can;
* :mod:`~eltmake_dbt.manifest`: dbt's manifest, summarised and cached by the dbt project's file
  digests, so a no-op build never starts dbt;
* :mod:`~eltmake_dbt.select`: dbt's selection syntax over that summary (``dbt ls`` as fallback);
* :mod:`~eltmake_dbt.lineage`: which extract-load targets load the sources a dbt target reads;
* :mod:`~eltmake_dbt.transform`: the step's selection, key and output checks;
  :mod:`~eltmake_dbt.run`: running dbt and the table-checksum fingerprint;
* :mod:`~eltmake_dbt.warm`: a warm dbt kept between the cycles of ``eltmake watch``
  (:mod:`~eltmake_dbt.warm_worker` is the process, run by dbt's own python);
* :mod:`~eltmake_dbt.describe`: ``eltmake config NAME`` for a transformer.

dbt itself runs in its own tool environment (``eltmake install``). See docs/dbt.md.
"""

from __future__ import annotations

import os

from eltmake.api import Recipe, hookimpl
from eltmake_dbt import config as _config

KIND = _config.KIND
# What dbt writes inside its project folder while it runs: never an edit for watch mode.
WRITTEN = ("target", "logs", "dbt_packages")


class DbtTransform(Recipe):
    """A dbt command (build, run, test, seed, snapshot) over a selection of a dbt project."""

    kind = KIND
    marker = "transform"
    keys = dict(_config.RECIPE_KEYS)
    color = "magenta"

    def validate(self, project, target):
        _config.validate_target(project, target)

    # The dbt machinery is imported on first use: a project without dbt targets pays nothing.
    def make_step(self, project, target):
        from eltmake_dbt import transform

        return transform.make_step(project, target)

    def definition(self, project, step):
        from eltmake_dbt import transform

        return transform.definition(project, step)

    def inputs(self, project, step):
        from eltmake_dbt import transform

        return transform.inputs(project, step)

    def check_outputs(self, project, step, record):
        from eltmake_dbt import transform

        return transform.check_outputs(project, step, record)

    def run(self, ctx):
        from eltmake_dbt import run

        return run.run_step(ctx)

    def secrets(self, project, step):
        # Vars and env values named like secrets: masked in dbt's output, errors and history.
        from eltmake.api import looks_secret
        from eltmake_dbt.run import secret_vars

        tf = _config.transformer(project, step.params["transformer"])
        hidden = list(secret_vars(tf, step.target.config).values())
        hidden += [v for k, v in tf.env.items() if looks_secret(k)]
        return [str(v) for v in hidden if v not in (None, "")]

    def tools(self, project, step):
        return [step.target.config["transform"]]

    def written_paths(self, project):
        out = []
        for name in project.tables.get(_config.TABLE) or {}:
            folder = _config.transformer(project, name).project_dir
            out += [os.path.relpath(folder / w, project.root) for w in WRITTEN]
        return out


@hookimpl
def eltmake_add_tables():
    return {_config.TABLE: _config.TABLE_DOC}


@hookimpl
def eltmake_add_recipes():
    return [DbtTransform()]


@hookimpl
def eltmake_validate_project(project):
    _config.validate(project)


@hookimpl
def eltmake_infer_deps(project):
    from eltmake_dbt import inference

    return inference.infer(project)


@hookimpl
def eltmake_tools(project):
    tables = project.tables.get(_config.TABLE) or {}
    return [_config.transformer(project, name).spec() for name in tables]


@hookimpl
def eltmake_build_started(build):
    # A watch cycle: start each transformer's warm dbt now, so that the first edit after a
    # cycle that skipped every dbt step is warm too (eltmake_dbt.warm).
    if not build.warm or build.dry_run:
        return
    from eltmake_dbt import warm

    names = {
        t.config["transform"]
        for name in build.targets
        if (t := build.project.targets.get(name)) is not None and t.kind == KIND
    }
    for name in sorted(names):
        try:
            warm.prewarm(build.project, _config.transformer(build.project, name))
        except Exception:  # a head start only: the step starts the worker itself if need be
            pass


def describe_config(project, name):
    """For ``eltmake config NAME`` (the Singer plugin's command asks every plugin module): the
    transformer's resolved profile, target and vars, secrets shown as ****."""
    from eltmake_dbt.describe import describe

    return describe(project, name)


@hookimpl
def eltmake_invoke(project, name, args):
    from eltmake_dbt import run

    return run.invoke(project, name, args)

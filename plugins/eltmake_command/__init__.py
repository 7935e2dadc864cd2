"""Command steps, as in Make: ``run`` a shell string or an argv list in the project folder.

This is the smallest complete built-in plugin, and the model for writing your own: it claims a
recipe (the ``run`` key), turns a target into a step and runs it, using only public hooks.
"""

from __future__ import annotations

import os
import subprocess

from eltmake import hookimpl
from eltmake.cache import digest
from eltmake.errors import ConfigError, StepError
from eltmake.step import RecipeSpec, Step, StepResult

TAIL = 20


@hookimpl
def eltmake_add_recipes():
    return [
        RecipeSpec(
            kind="command",
            marker="run",
            keys={"run": (str, list), "env": (dict,)},
            doc="run a command: a string runs in the shell, a list runs without one",
        )
    ]


@hookimpl
def eltmake_validate_project(project):
    for t in project.targets.values():
        if t.kind != "command":
            continue
        run = t.config["run"]
        where = f"{project.file.name}: targets.{t.name}.run"
        if isinstance(run, list) and (not run or not all(isinstance(a, str) for a in run)):
            raise ConfigError(f"{where}: a list must hold the program and its arguments as strings")
        if isinstance(run, str) and not run.strip():
            raise ConfigError(f"{where}: is empty; write the command to run")
        for k, v in t.config.get("env", {}).items():
            if not isinstance(v, str | int | float | bool):
                raise ConfigError(
                    f"{project.file.name}: targets.{t.name}.env.{k}: must be a string"
                )


@hookimpl
def eltmake_make_step(project, target):
    if target.kind != "command":
        return None
    return Step(
        name=target.name,
        kind="command",
        target=target,
        inputs=target.inputs,
        outputs=target.outputs,
        freshness=target.freshness,
    )


@hookimpl
def eltmake_step_definition(project, step):
    # A command sees the whole .env file in its environment, so the file is part of what it
    # does: a changed value re-runs it (as a digest: .env often holds secrets).
    if step.kind == "command" and project.dotenv:
        return {"dotenv": digest(project.dotenv)}
    return None


@hookimpl
def eltmake_run_step(ctx):
    if ctx.step.kind != "command":
        return None
    cfg = ctx.step.target.config
    env = ctx.env
    env.update({k: str(v) for k, v in cfg.get("env", {}).items()})
    for out in ctx.step.outputs:  # like `mkdir -p $(dir $@)`: a recipe should not have to
        os.makedirs(os.path.dirname(os.path.join(ctx.root, out)) or ".", exist_ok=True)
    try:
        proc = ctx.popen(
            cfg["run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except FileNotFoundError:
        prog = cfg["run"][0]
        raise StepError(
            f"{ctx.step.name}: program not found: {prog!r}; is it installed and on PATH?"
        ) from None
    tail: list[str] = []
    lines = 0
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        ctx.log(line)
        lines += 1
        tail.append(line)
        del tail[:-TAIL]
    rc = proc.wait()
    if rc != 0:
        why = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        raise StepError(f"{ctx.step.name}: command {why}", tail)
    return StepResult(stats={"lines": lines} if lines else {})

"""Command steps, as in Make: ``run`` a shell string or an argv list in the project folder.

This is the smallest complete built-in plugin, and the model for writing your own: one recipe
(a target with a ``run`` key is a command step), registered through one hook, using only
:mod:`eltmake.api`.
"""

from __future__ import annotations

import os
import subprocess

from eltmake.api import ConfigError, Recipe, StepError, StepResult, digest, hookimpl, looks_secret

TAIL = 20


class Command(Recipe):
    """Run a command: a string runs in the shell, a list runs without one."""

    kind = "command"
    marker = "run"
    keys = {"run": (str, list), "env": (dict,)}
    color = "green"

    def validate(self, project, target):
        run = target.config["run"]
        where = project.where("targets", target.name, "run")
        if isinstance(run, list) and (not run or not all(isinstance(a, str) for a in run)):
            raise ConfigError(f"{where}: a list must hold the program and its arguments as strings")
        if isinstance(run, str) and not run.strip():
            raise ConfigError(f"{where}: is empty; write the command to run")
        for k, v in target.config.get("env", {}).items():
            if not isinstance(v, str | int | float | bool):
                raise ConfigError(
                    f"{project.where('targets', target.name, 'env', k)}: must be a string"
                )

    def definition(self, project, step):
        # A command sees the .env file's variables in its environment, so their values are part
        # of what it does: the values it gets (the real environment wins over .env), as a digest
        # (.env often holds secrets).
        if not project.dotenv:
            return {}
        return {"dotenv": digest({k: project.environ.get(k) for k in sorted(project.dotenv)})}

    def secrets(self, project, step):
        # What the command may print from its environment: its own `env`, the .env file and
        # the variables eltmake passes on, wherever a name looks like a secret.
        env = {**project.environ, **step.target.config.get("env", {})}
        return [str(v) for k, v in env.items() if looks_secret(k) and v not in ("", None)]

    def run(self, ctx):
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
        return StepResult(stats={"output_lines": lines} if lines else {})


@hookimpl
def eltmake_add_recipes():
    return [Command()]

"""What every command shares: the core commands' names, the common options, exit codes and the
wrapper plugins add their commands through.

Imported by the entry point on every start, so it imports nothing at module level.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of every start
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CORE_COMMANDS = {
    "build": "build targets and what they depend on (the default command of Make)",
    "status": "say what is out of date and why; exit 1 when anything is (like make -q)",
    "list": "list the targets",
    "graph": "show the dependency graph (tree, dot, mermaid or json)",
    "watch": "build, then rebuild what each edit affects",
    "install": "install the tools that plugins declare into their own environments",
    "invoke": "run a tool in its environment with its config: invoke NAME -- ARGS",
    "state": "show or change plugin state (list, show, set, clear, unlock)",
    "runs": "the history of builds",
    "touch": "accept the current outputs of targets as built (Make's -t)",
    "forget": "drop the cache records of targets, so they build again",
    "store": "copy the store into a shared one: store migrate --to URL",
    "plugins": "list the plugins, their hooks and the commands they add",
    "init": "create a starter project",
    "ui": "a local web UI: the graph, live builds, history, logs and state (the ui extra)",
}


EXECUTOR_HELP = (
    "where steps run: local (default), dask (a Dask cluster on this machine), dask://HOST:PORT "
    "or tcp://HOST:PORT (a running Dask scheduler); else $ELTMAKE_EXECUTOR or [project] executor"
)


def executor_arg(value: str) -> str:
    """``--executor``'s check: a wrong spec is a usage error (one line, exit 2)."""
    import argparse

    from eltmake.executors import parse_executor

    try:
        parse_executor(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def common_options(p: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes; on a subcommand they default to SUPPRESS so that a value
    given before the command (``eltmake -C DIR build``) is not overwritten by the default."""
    import argparse

    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument(
        "-C",
        "--directory",
        dest="project_dir",
        metavar="DIR",
        default=d(None),
        help="the project folder (default: the nearest one with eltmake.toml, from here up)",
    )
    p.add_argument(
        "--env",
        dest="env_name",
        metavar="NAME",
        default=d(None),
        help="apply [environments.NAME] overrides",
    )
    p.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks")


class Commands:
    """What :func:`eltmake.hookspecs.eltmake_add_commands` receives: add a subcommand with
    :meth:`add`. Each gets ``-C``, ``--env`` and ``--debug`` like the core's commands."""

    def __init__(self, subparsers: Any, plugin: str = ""):
        self._sub = subparsers
        self.plugin = plugin
        self.added: list[tuple[str, str]] = []  # (name, help), for listings

    def add(
        self,
        name: str,
        help: str,
        func: Callable[[argparse.Namespace], int],
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        """Add ``eltmake NAME``; ``func(args)`` runs it and returns the exit code."""
        p = self._sub.add_parser(name, help=help, description=description or help)
        common_options(p, top=False)
        p.set_defaults(func=func)
        self.added.append((name, help))
        return p

    def common_options(self, parser: argparse.ArgumentParser) -> None:
        """Give a nested parser (``eltmake import meltano``) ``-C``, ``--env`` and ``--debug``."""
        common_options(parser, top=False)


def top_help(extra: list[tuple[str, str]] | None = None) -> str:
    """The one help text: every core command and, when known, the commands plugins add."""
    commands = list(CORE_COMMANDS.items()) + list(extra or [])
    width = max(len(c) for c, _ in commands)
    cmds = "\n".join(f"  {c:<{width}}  {h}" for c, h in commands)
    return (
        "usage: eltmake [--version] [-C DIR] [--env NAME] [--debug] [COMMAND] [ARGS]\n\n"
        "`eltmake` alone builds the default targets, as `make` does; `eltmake help` is this text.\n\n"
        "Make-style ELT builds: extract-load, transformations and commands in one cached "
        "dependency graph.\n\n"
        f"commands:\n{cmds}\n\n"
        "options:\n"
        "  -C DIR, --directory DIR  the project folder (default: the nearest one holding\n"
        "                           eltmake.toml, from the current folder up)\n"
        "  --env NAME               apply [environments.NAME] overrides\n"
        "  --debug                  show tracebacks\n"
        "  --version                print the version\n\n"
        "`eltmake COMMAND --help` tells more; `eltmake plugins` lists what each plugin adds.\n"
        "Exit codes: 0 ok, 1 a step failed, 2 bad usage or project file, 130 interrupted."
    )

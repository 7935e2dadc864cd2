"""The ``eltmake`` command line: the entry point, kept small.

``eltmake --version`` and ``--help`` must start about as fast as Python itself. With
``PYTHONDONTWRITEBYTECODE=1`` every start compiles this module again, so it holds only the fast
paths and the error handling; the parser and the commands live in :mod:`eltmake.commands`, and
nothing heavy (argparse, networkx, rich, pluggy, diskcache) is imported at module level.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of every start
if TYPE_CHECKING:
    import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CORE_COMMANDS = {
    "build": "build targets and what they depend on (the default command of Make)",
    "status": "say what is out of date and why; exit 1 when anything is (like make -q)",
    "list": "list the targets",
    "graph": "show the dependency graph (tree, dot, mermaid or json)",
    "watch": "build, then rebuild what each edit affects",
    "install": "install the tools (Singer taps/targets, dbt) into their environments",
    "invoke": "run a tool in its environment with its config: invoke NAME -- ARGS",
    "state": "show or change plugin state (list, show, set, clear, unlock)",
    "runs": "the history of builds",
    "touch": "accept the current outputs of targets as built (Make's -t)",
    "forget": "drop the cache records of targets, so they build again",
    "plugins": "list the plugins, their hooks and the commands they add",
    "init": "create a starter project",
}


def add_common_options(p: argparse.ArgumentParser) -> None:
    """``-C``, ``--env`` and ``--debug`` on a subcommand, as on every core command: for plugins'
    ``eltmake_add_commands``. Read them as ``args.project_dir``, ``args.env_name``."""
    common_options(p, top=False)


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
        help="the project folder (default: the current one)",
    )
    p.add_argument(
        "--env",
        dest="env_name",
        metavar="NAME",
        default=d(None),
        help="apply [environments.NAME] overrides",
    )
    p.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks")


def top_help() -> str:
    width = max(len(c) for c in CORE_COMMANDS)
    cmds = "\n".join(f"  {c:<{width}}  {h}" for c, h in CORE_COMMANDS.items())
    return (
        "usage: eltmake [--version] [-C DIR] [--env NAME] [--debug] COMMAND [ARGS]\n\n"
        "Make-style ELT builds: Singer extract-load, dbt and commands in one cached dependency "
        "graph.\n\n"
        f"commands:\n{cmds}\n\n"
        "options:\n"
        "  -C DIR, --directory DIR  the project folder (default: the current one)\n"
        "  --env NAME               apply [environments.NAME] overrides\n"
        "  --debug                  show tracebacks\n"
        "  --version                print the version\n\n"
        "`eltmake COMMAND --help` tells more; plugins may add commands (`eltmake plugins`).\n"
        "Exit codes: 0 ok, 1 a step failed, 2 bad usage or project file, 130 interrupted."
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # the fast path: no parser at all
        from eltmake import __version__

        print(f"eltmake {__version__}")
        return EXIT_OK
    if argv in (["--help"], ["-h"]):  # static, so it needs no argparse (start-up is a feature)
        print(top_help())
        return EXIT_OK
    debug = "--debug" in argv
    try:
        # Plugins may add commands: load them only when the core does not know the command.
        first = _command_word(argv)
        needs_plugins = first is not None and first not in CORE_COMMANDS
        from eltmake.commands import COMMANDS, build_parser

        parser = build_parser(with_plugins=needs_plugins, project_dir=_project_dir(argv))
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            print("\nPlugins may add commands: `eltmake plugins` lists them.")
            return EXIT_USAGE
        func = getattr(args, "func", None) or COMMANDS[args.command]
        return int(func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("eltmake: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:
        from eltmake.errors import EltmakeError

        if debug:
            raise
        if isinstance(e, EltmakeError):
            sys.stderr.write(f"eltmake: error: {e}\n")
            for line in getattr(e, "tail", [])[-15:]:
                sys.stderr.write(f"  | {line}\n")
            return e.exit_code
        sys.stderr.write(
            f"eltmake: internal error: {type(e).__name__}: {e}\n"
            "  this is a bug in eltmake or a plugin; run again with --debug for the traceback and report it\n"
        )
        return EXIT_FAILED


def _project_dir(argv: list[str]) -> str:
    """The folder given with ``-C DIR``, ``-CDIR``, ``--directory DIR`` or ``--directory=DIR``
    (the last one wins, as with argparse), or "." (the current folder)."""
    value = "."
    for i, word in enumerate(argv):
        if word in ("-C", "--directory") and i + 1 < len(argv):
            value = argv[i + 1]
        elif word.startswith("--directory="):
            value = word.removeprefix("--directory=")
        elif word.startswith("-C") and len(word) > 2:
            value = word[2:]
    return value


def _command_word(argv: list[str]) -> str | None:
    """The command in ``argv``: the first word that is neither an option nor an option's value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("-C", "--directory", "--env"):
            skip = True
        elif not word.startswith("-"):
            return word
    return None

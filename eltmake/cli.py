"""The ``eltmake`` command line: the entry point, kept small.

``eltmake --version`` and ``--help`` must start about as fast as Python itself. With
``PYTHONDONTWRITEBYTECODE=1`` every start compiles this module again, so it holds only the fast
paths and the error handling; the parser and the commands live in :mod:`eltmake.commands`, and
nothing heavy (argparse, networkx, rich, pluggy, diskcache) is imported at module level.
"""

from __future__ import annotations

import sys

from eltmake.commandline import CORE_COMMANDS, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # the fast path: no parser at all
        from eltmake import __version__

        print(f"eltmake {__version__}")
        return EXIT_OK
    debug = "--debug" in argv
    try:
        if argv in (["--help"], ["-h"], ["help"]):  # no argparse: start-up is a feature
            from eltmake.commandline import top_help
            from eltmake.metacache import plugin_commands

            print(top_help(plugin_commands(_project_dir(argv))))
            return EXIT_OK
        first = _command_word(argv)
        if first == "help":  # `eltmake help build` is `eltmake build --help`
            argv = [w for w in argv if w != "help"] + ["--help"]
            first = _command_word(argv)
        if first is None:  # bare `eltmake`, as bare `make`: build the default targets
            argv = ["build", *argv]
            first = "build"
        # Plugins may add commands: load them only when the core does not know the command.
        needs_plugins = first not in CORE_COMMANDS
        from eltmake.commands import COMMANDS, build_parser

        parser = build_parser(with_plugins=needs_plugins, project_dir=_project_dir(argv))
        args = parser.parse_args(argv)
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
        elif word in ("-C", "--directory", "--env", "-j", "--jobs", "--force", "--debounce"):
            skip = True
        elif not word.startswith("-"):
            return word
    return None

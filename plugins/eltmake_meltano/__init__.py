"""Importing a Meltano project: ``eltmake import meltano [PATH]``.

A built-in plugin written against the public API only (:mod:`eltmake.api`); the core knows nothing of Meltano.
The modules hold one concern each, and none of them knows argparse:

* :mod:`~eltmake_meltano.meltano`: ``meltano.yml``, its includes and lock files, read and checked;
* :mod:`~eltmake_meltano.translate`: the project → ``eltmake.toml`` text and what was left out;
* :mod:`~eltmake_meltano.expand`: Meltano's ``$VAR`` expansion in eltmake's syntax;
* :mod:`~eltmake_meltano.state`: Meltano's state → eltmake's state store;
* :mod:`~eltmake_meltano.tomlw`, :mod:`~eltmake_meltano.yamlfile`: writing TOML, reading YAML;
* :mod:`~eltmake_meltano.command`: the command itself.

See docs/from-meltano.md.
"""

from __future__ import annotations

from eltmake.api import hookimpl


@hookimpl
def eltmake_add_commands(commands):
    """All of the command-line wiring, in one place."""

    def usage(args) -> int:
        p.print_usage()
        return 2

    p = commands.add(
        "import",
        help="import a project from another tool: import meltano [PATH]",
        func=usage,
        description="Import a project from another tool into eltmake.toml.",
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    m = sources.add_parser(
        "meltano",
        help="translate meltano.yml into eltmake.toml, and copy Meltano's state",
        description="Write eltmake.toml beside meltano.yml (plugins, jobs, environments, "
        "schedules as comments), listing what could not be translated and why. With --state, "
        "copy Meltano's bookmarks into eltmake's state store instead. See docs/from-meltano.md.",
    )
    m.add_argument("path", nargs="?", help="meltano.yml or its folder (default: the project's)")
    m.add_argument("--force", action="store_true", help="replace eltmake.toml or existing state")
    m.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    m.add_argument(
        "--state", action="store_true", help="copy bookmarks from .meltano/meltano.db instead"
    )
    m.add_argument("--state-file", metavar="FILE", help="a `meltano state get ID` output to copy")
    m.add_argument("--state-id", metavar="ID", help="the Meltano state id of --state-file")
    commands.common_options(m)

    def func(args) -> int:
        from eltmake_meltano.command import Options, run

        return run(
            Options(
                project_dir=getattr(args, "project_dir", None),
                path=args.path,
                force=args.force,
                dry_run=args.dry_run,
                state=args.state,
                state_file=args.state_file,
                state_id=args.state_id,
                env_name=getattr(args, "env_name", None),
            )
        )

    m.set_defaults(func=func)

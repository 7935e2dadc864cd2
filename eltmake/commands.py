"""The parser and the core commands behind ``eltmake``; :mod:`eltmake.cli` is the entry point.

Imports stay lazy here too: a command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys

from eltmake.commandline import (
    CORE_COMMANDS,
    EXECUTOR_HELP,
    EXIT_USAGE,
    Commands,
    common_options,
    executor_arg,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2
        import re

        m = re.match(r"argument COMMAND: invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:  # a typo of a command: say which one was meant, as for project-file keys
            from eltmake.errors import did_you_mean

            choices = re.findall(r"'?([\w-]+)'?", m.group(2))
            hint = did_you_mean(m.group(1), choices)
            self.exit(
                EXIT_USAGE,
                f"eltmake: error: {m.group(1)!r} is not an eltmake command{hint}; "
                "`eltmake help` lists them\n",
            )
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _jobs(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"-j takes a whole number of parallel steps, not {value!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"-j takes a number of at least 1, not {n}")
    return n


def build_parser(
    with_plugins: bool = False, project_dir: str | None = None
) -> argparse.ArgumentParser:
    from eltmake import __version__

    p = _Parser(
        prog="eltmake",
        description="Make-style ELT builds: extract-load, transformations and "
        "commands in one cached dependency graph.",
    )
    p.add_argument("--version", action="version", version=f"eltmake {__version__}")
    common_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=CORE_COMMANDS[name], description=CORE_COMMANDS[name])
        common_options(sp, top=False)
        return sp

    for name in ("build", "status", "watch"):
        b = add(name)
        b.add_argument("targets", nargs="*", metavar="TARGET", help="default: [project].default")
        b.add_argument(
            "--only", action="store_true", help="build only these targets, not their deps"
        )
        b.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
        if name == "status":
            continue
        b.add_argument(
            "-j", "--jobs", type=_jobs, default=None, help="parallel steps (default: cores)"
        )
        b.add_argument(
            "-k",
            "--keep-going",
            action="store_true",
            help="go on with what does not depend on a failure",
        )
        b.add_argument(
            "-B", "--always-make", dest="force_all", action="store_true", help="run every step"
        )
        b.add_argument(
            "--force",
            action="append",
            default=[],
            metavar="TARGET",
            help="run TARGET even if up to date (repeatable)",
        )
        b.add_argument(
            "--full-refresh",
            action="store_true",
            help="ignore incremental state (bookmarks, incremental models)",
        )
        b.add_argument(
            "-v", "--verbose", action="store_true", help="show skipped steps and step output"
        )
        b.add_argument("--plain", action="store_true", help="plain lines even on a terminal")
        if name == "build":
            b.add_argument(
                "-n",
                "--dry-run",
                action="store_true",
                help="print what would run and why; run nothing",
            )
            b.add_argument(
                "--no-wait",
                action="store_true",
                help="fail at once if another build holds the project",
            )
            b.add_argument("--executor", type=executor_arg, metavar="SPEC", help=EXECUTOR_HELP)
        else:
            b.add_argument(
                "--debounce",
                type=float,
                default=0.05,
                metavar="SECONDS",
                help="wait this long for edits to settle (default 0.05)",
            )
            b.add_argument(
                "--clear", action="store_true", help="clear the screen before each cycle"
            )

    g = add("list")
    g.add_argument("--json", action="store_true")
    g = add("graph")
    g.add_argument("targets", nargs="*", metavar="TARGET")
    g.add_argument("--format", choices=["tree", "dot", "mermaid", "json"], default="tree")
    g = add("install")
    g.add_argument("names", nargs="*", metavar="NAME", help="default: every tool of the project")
    g.add_argument("--force", action="store_true", help="reinstall even if nothing changed")
    g = add("invoke")
    g.add_argument("name", metavar="NAME")
    g.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS")
    g = add("state")
    g.add_argument("action", choices=["list", "show", "set", "clear", "unlock"])
    g.add_argument("state_id", nargs="?", metavar="ID")
    g.add_argument(
        "value", nargs="?", metavar="JSON", help="for set: the new value (or - for stdin)"
    )
    g = add("store")
    g.add_argument("action", choices=["migrate"], help="migrate: copy the store to another")
    g.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://…, s3://bucket/prefix, gs://…, file:///path, or local (.eltmake/)",
    )
    g.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="copy from this store instead of the project's own (e.g. a shared one, --to local)",
    )
    g.add_argument("--force", action="store_true", help="replace state the target already has")
    g = add("runs")
    g.add_argument("run_id", nargs="?", type=int, metavar="ID", help="show the steps of one run")
    g.add_argument("--limit", type=int, default=20, help="show the last N builds (default 20)")
    g.add_argument("--json", action="store_true", help="the runs (or steps) as JSON")
    for name in ("touch", "forget"):
        g = add(name)
        g.add_argument("targets", nargs="*", metavar="TARGET")
        g.add_argument("--all", action="store_true", help="every target")
    add("plugins")
    g = add("init")
    g.add_argument("dir", nargs="?", default=".", metavar="DIR")
    g.add_argument("--name", help="project name (default: the folder's name)")
    g = add("ui")
    g.add_argument("--host", default="127.0.0.1", help="address (default: this machine only)")
    g.add_argument("--port", type=int, default=8321, help="port (default 8321; 0: any free)")
    g.add_argument("--open", action="store_true", help="open it in a browser")
    g.add_argument("--read-only", action="store_true", help="watch only: no builds from the UI")
    if with_plugins:
        pm = _plugin_manager()
        if project_dir is not None:
            _load_project_plugins(pm, project_dir)
        pm.hook.eltmake_add_commands(commands=Commands(sub))
    return p


def _load_project_plugins(pm, project_dir: str) -> None:
    """Register the project's own plugins (``plugins/*.py``, ``[project].plugins``) so that the
    commands they add parse. Only their names are read here: a broken project file is reported by
    ``load_project`` when the command reads the project."""
    import tomllib

    from eltmake.project import PROJECT_FILE, find_root

    root = find_root(project_dir)
    file = root / PROJECT_FILE
    if not file.is_file():
        return
    try:
        modules = tomllib.loads(file.read_text()).get("project", {}).get("plugins", [])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        modules = []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        modules = []
    pm.load_project_plugins(root, modules, file.name)


def _plugin_manager():
    from eltmake.plugins import PluginManager

    pm = PluginManager()
    pm.load_builtins_and_entrypoints()
    return pm


# --- commands ---------------------------------------------------------------------------------


def _load(args, read_only: bool = True):
    from eltmake.project import load_project

    return load_project(args.project_dir, env_name=args.env_name, read_only=read_only)


def _graph_and_selection(project, args):
    from eltmake.graph import selection

    return selection(
        project, list(getattr(args, "targets", []) or []), getattr(args, "only", False)
    )


def cmd_build(args) -> int:
    from eltmake.build import BuildRequest, run_build

    return run_build(BuildRequest.from_args(args))


def cmd_status(args) -> int:
    from eltmake.build import BuildRequest, run_status

    return run_status(BuildRequest.from_args(args, command="status"))


def cmd_watch(args) -> int:
    from eltmake.build import BuildRequest
    from eltmake.watch import WatchOptions, run_watch

    req = BuildRequest.from_args(args, command="watch")
    return run_watch(WatchOptions(req, debounce=args.debounce, clear=args.clear))


def cmd_list(args) -> int:
    import json

    project = _load(args)
    g, _, _ = _graph_and_selection(project, args)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": n,
                        "kind": t.kind,
                        "deps": sorted(g.predecessors(n)),
                        "description": t.description,
                    }
                    for n, t in project.targets.items()
                ],
                indent=2,
            )
        )
        return 0
    width = max((len(n) for n in project.targets), default=0)
    for n, t in project.targets.items():
        deps = sorted(g.predecessors(n))
        desc = f"  {t.description}" if t.description else ""
        star = "*" if n in project.default else " "
        print(
            f"{star} {n:<{width}}  {t.kind or 'aggregate':<9}{desc}"
            + (f"  ← {', '.join(deps)}" if deps else "")
        )
    return 0


def cmd_graph(args) -> int:
    from eltmake import graph as G

    project = _load(args)
    graph, names, order = _graph_and_selection(project, args)
    g = graph.nx
    if not args.targets:
        order = list(graph.order)
    if args.format == "dot":
        print(G.to_dot(g, order))
    elif args.format == "mermaid":
        print(G.to_mermaid(g, order))
    elif args.format == "json":
        print(G.to_json(g, order))
    else:
        from rich.console import Console

        console = Console(highlight=False)
        roots = names if args.targets else G.default_targets(project, graph)
        if not args.targets:  # also show targets nothing depends on that are not defaults
            roots = sorted(set(roots) | {n for n in g.nodes if g.out_degree(n) == 0})
        colors = {kind: recipe.color for kind, recipe in project.recipes.items()}
        colors["aggregate"] = "yellow"
        _print_trees(console, g, roots, colors)
    return 0


def _print_trees(console, g, roots, colors) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    from eltmake import graph as G

    stack: list = []
    for depth, name, kind, inferred, again in G.tree_lines(g, roots):
        label = f"[bold]{escape(name)}[/] [{colors.get(kind, 'blue')}]{kind}[/]"
        if inferred:
            label += " [dim](inferred edge)[/]"
        if again:
            label += " [dim](shown above)[/]"
        if depth == 0:
            if stack:
                console.print(stack[0])
            stack = [Tree(label)]
        else:
            del stack[depth:]
            stack.append(stack[-1].add(label))
    if stack:
        console.print(stack[0])


def cmd_install(args) -> int:
    from eltmake import toolenv

    project = _load(args, read_only=False)  # installs, then lets plugins learn (dbt parses)
    specs = toolenv.declared_tools(project)
    known = {s.name for s in specs}
    for name in args.names:
        if name not in known:
            from eltmake.errors import ConfigError, did_you_mean

            raise ConfigError(
                f"no tool named {name!r} in {project.file.name}{did_you_mean(name, known)}"
            )
    # Progress on stderr (stdout is for results), as during a build.
    done = toolenv.ensure_installed(
        project, specs, args.names or None, force=args.force, echo=_to_stderr
    )
    if not done:
        print("all tools are installed and up to date")
    return 0


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_invoke(args) -> int:
    project = _load(args, read_only=False)
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    rc = project.pm.hook.eltmake_invoke(project=project, name=args.name, args=rest)
    if rc is None:
        from eltmake.errors import ConfigError

        raise ConfigError(
            f"no tool named {args.name!r} in {project.file.name}; `eltmake install` lists them"
        )
    return rc


def cmd_state(args) -> int:
    from eltmake.storecli import cmd_state as run

    return run(args)


def cmd_store(args) -> int:
    from eltmake.storecli import cmd_store as run

    return run(args)


def cmd_runs(args) -> int:
    from eltmake.storecli import cmd_runs as run

    return run(args)


def cmd_touch_forget(args) -> int:
    from eltmake.build import BuildRequest, run_touch_forget

    return run_touch_forget(BuildRequest.from_args(args), everything=args.all)


def cmd_plugins(args) -> int:
    from eltmake.plugins import PluginManager

    pm = PluginManager()
    pm.load_builtins_and_entrypoints()
    from eltmake.project import PROJECT_FILE, find_root, load_project

    root = find_root(args.project_dir)
    if (root / PROJECT_FILE).exists():
        load_project(root, env_name=args.env_name, pm=pm)
    for name, origin, hooks in pm.describe():
        print(f"{name}  ({origin})")
        for h in hooks:
            print(f"    {h}")
            if h == "eltmake_add_commands":
                for command, help in _commands_of(pm, name):
                    print(f"        eltmake {command}: {help}")
    return 0


def _commands_of(pm, name: str) -> list[tuple[str, str]]:
    """The subcommands one plugin adds, found by letting it add them to a scratch parser."""
    scratch = argparse.ArgumentParser(add_help=False)
    commands = Commands(scratch.add_subparsers(parser_class=_Parser))
    others = [p for n, p in pm.list_name_plugin() if n != name]
    try:
        pm.subset_hook_caller("eltmake_add_commands", remove_plugins=others)(commands=commands)
    except Exception as e:  # listing must not fail over one plugin
        return [("?", f"(its eltmake_add_commands failed: {type(e).__name__}: {e})")]
    return commands.added


def cmd_init(args) -> int:
    from eltmake.scaffold import init_project

    return init_project(args.dir, args.name, _plugin_manager())


def cmd_ui(args) -> int:
    from eltmake.ui import main  # the optional ui extra: a one-line hint when it is missing

    return main(args)


COMMANDS = {
    "build": cmd_build,
    "status": cmd_status,
    "watch": cmd_watch,
    "list": cmd_list,
    "graph": cmd_graph,
    "install": cmd_install,
    "invoke": cmd_invoke,
    "state": cmd_state,
    "runs": cmd_runs,
    "store": cmd_store,
    "touch": cmd_touch_forget,
    "forget": cmd_touch_forget,
    "plugins": cmd_plugins,
    "init": cmd_init,
    "ui": cmd_ui,
}

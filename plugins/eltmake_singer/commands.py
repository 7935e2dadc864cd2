"""Singer commands: ``eltmake config NAME``, ``eltmake select EXTRACTOR --list`` and ``invoke``.

``eltmake config NAME`` serves every kind of tool: a name that is not a Singer tool is asked of
the other plugins' ``describe_config`` functions (:func:`describe_elsewhere`), so the dbt plugin
answers for its transformers without the core knowing either."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from eltmake.api import (
    ConfigError,
    Redactor,
    did_you_mean,
    ensure_installed,
    executable_path,
    private_dir,
    tool_identity,
)
from eltmake_singer import catalog
from eltmake_singer.config import (
    ROLES,
    all_tools,
    find_tool,
    key_facts,
    redact,
    resolve_config,
    secret_values,
    tool,
    write_config,
)

if TYPE_CHECKING:
    from eltmake.api import Commands, Project


def add_commands(commands: Commands) -> None:
    p = commands.add(
        "config",
        help="print a Singer tool's resolved config, or a transformer's profile (secrets: ****)",
        func=cmd_config,
        description="Print the config an extractor, loader or mapper receives: its table's "
        "config with ${VAR} and <TOOL>_<SETTING> environment overrides applied, secrets masked. "
        "For a dbt transformer: its resolved profile, target and vars.",
    )
    p.add_argument("name", help="an extractor, loader, mapper, or a plugin's tool (dbt)")

    p = commands.add(
        "select",
        help="show an extractor's streams and properties with their selection",
        func=cmd_select,
        description="Discover the extractor's catalog (cached) and show what its select "
        "patterns choose. With --target, use that target's select instead.",
    )
    p.add_argument("name", help="an extractor")
    p.add_argument("--list", action="store_true", help="list streams and properties (default)")
    p.add_argument("--all", action="store_true", help="show excluded properties too")
    p.add_argument("--target", help="use the select of this target")
    p.add_argument("--refresh", action="store_true", help="discover again, ignoring the cache")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _load(args: Any) -> Project:
    from eltmake.api import load_project

    return load_project(
        getattr(args, "project_dir", None),
        env_name=getattr(args, "env_name", None),
        read_only=True,  # config and select show; they install no dbt nor parse anything
    )


def _tool_or_error(project: Project, name: str, tables: tuple[str, ...] = tuple(ROLES)):
    for table in tables:
        if name in project.tables.get(table, {}):
            return tool(project, table, name)
    other = next((t for t in ROLES if name in project.tables.get(t, {})), None)
    if other:
        raise ConfigError(
            f"{project.file.name}: {name!r} is {'an' if other == 'extractors' else 'a'} "
            f"{ROLES[other]}, not an {ROLES[tables[0]]}; this command takes an extractor"
        )
    for table, value in project.tables.items():
        if table not in ROLES and isinstance(value, dict) and name in value:
            raise ConfigError(
                f"{project.file.name}: {name!r} is in [{table}], not a Singer tool; this command "
                "takes an extractor, loader or mapper"
            )
    known = sorted(n for t in tables for n in project.tables.get(t, {}))
    roles = [ROLES[t] for t in tables]
    what = roles[0] if len(roles) == 1 else f"{', '.join(roles[:-1])} or {roles[-1]}"
    hint = did_you_mean(name, known) or (
        f"; defined: {', '.join(known)}" if known else f"; none is defined in {project.file.name}"
    )
    raise ConfigError(f"{project.file.name}: no {what} named {name!r}{hint}")


def describe_elsewhere(project: Project, name: str) -> dict[str, Any] | None:
    """What another plugin says about ``name`` (a dbt transformer...): every plugin module may
    offer a plain ``describe_config(project, name)`` function returning a JSON-able dict, or None
    when ``name`` is not its own. The first answer wins."""
    if project.pm is None:
        return None
    for _, plugin in project.pm.list_name_plugin():
        fn = getattr(plugin, "describe_config", None)
        if callable(fn):
            found = fn(project, name)
            if found is not None:
                return found
    return None


def cmd_config(args: Any) -> int:
    project = _load(args)
    if find_tool(project, args.name) is None:
        other = describe_elsewhere(project, args.name)
        if other is not None:
            print(json.dumps(other, indent=2, sort_keys=True, default=str))
            return 0
    t = _tool_or_error(project, args.name)
    config = resolve_config(project, t)
    print(json.dumps(redact(t, config), indent=2, sort_keys=True))
    facts = key_facts(project, t, config)
    if "secrets_digest" in facts:
        print(
            f"# secrets are shown as ****; digest {facts['secrets_digest'][:12]}", file=sys.stderr
        )
    return 0


def cmd_select(args: Any) -> int:
    project = _load(args)
    t = _tool_or_error(project, args.name, ("extractors",))
    patterns = t.select
    if args.target:
        target = project.targets.get(args.target)
        if target is None or target.kind != "singer":
            singer = sorted(n for n, x in project.targets.items() if x.kind == "singer")
            raise ConfigError(
                f"{project.file.name}: no extract target named {args.target!r}"
                f"{did_you_mean(args.target, singer)}"
            )
        patterns = target.config.get("select", patterns)
    selected = catalog.apply_selection(_discover(project, t, refresh=args.refresh), patterns)
    rows = catalog.selection_rows(selected)
    shown = patterns or catalog.DEFAULT_SELECT
    if args.json:
        for stream, prop, status in rows:
            print(json.dumps({"stream": stream, "property": prop or None, "status": status}))
        return 0
    print(f"{t.name}: select = {json.dumps(shown)}")
    for stream, prop, status in rows:
        if not prop:
            print(f"  [{status:^11}] {stream}")
        elif args.all or status != "excluded":
            print(f"  [{status:^11}]   {stream}.{prop}")
    return 0


def _discover(project: Project, t: Any, refresh: bool) -> dict[str, Any]:
    """The extractor's catalog outside a build: installs the tool if needed, then discovers."""
    spec = t.spec()
    ensure_installed(project, [spec], echo=lambda s: print(s, file=sys.stderr))
    exe = executable_path(project, spec)
    config = resolve_config(project, t)
    redactor = Redactor(secret_values(t, config))
    identity = tool_identity(project, spec)

    def spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=project.root, env=dict(project.environ), **kw)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    caps = catalog.capabilities(project, t, exe, identity, spawn, log)
    with private_dir() as private:
        path = write_config(private, "config.json", config)
        return catalog.discover(
            project,
            t,
            exe,
            path,
            [identity, key_facts(project, t, config), caps],
            spawn,
            redactor,
            refresh=refresh,
        )


def invoke(project: Project, name: str, args: list[str]) -> int | None:
    """``eltmake invoke NAME -- ARGS``: the tool with ``--config FILE`` and ARGS, stdio inherited."""
    t = find_tool(project, name)
    if t is None:
        return None
    spec = t.spec()
    ensure_installed(project, [spec], echo=lambda s: print(s, file=sys.stderr))
    exe = executable_path(project, spec)
    with private_dir() as private:
        path = write_config(private, "config.json", resolve_config(project, t))
        return subprocess.call(
            [exe, "--config", str(path), *args], cwd=project.root, env=dict(project.environ)
        )


__all__ = ["add_commands", "all_tools", "invoke"]

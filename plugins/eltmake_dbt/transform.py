"""The dbt step as the scheduler sees it before running: its selection and what is in its key.

Kept apart from :mod:`eltmake_dbt.run` so that a no-op build imports only this part."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import TYPE_CHECKING, Any

from eltmake.api import Step, path_lock, tool_identity
from eltmake_dbt import config as _config
from eltmake_dbt import manifest as _manifest
from eltmake_dbt import select as _select

if TYPE_CHECKING:
    from eltmake.api import Project, Target
    from eltmake_dbt.config import Transformer
    from eltmake_dbt.manifest import Info

KIND = _config.KIND
# Files of a dbt project that shape every node: always in a dbt step's key when present.
PROJECT_FILES = (
    "dbt_project.yml",
    "packages.yml",
    "package-lock.yml",
    "dependencies.yml",
    "selectors.yml",
)


def make_step(project: Project, target: Target) -> Step:
    cfg = target.config
    return Step(
        name=target.name,
        kind=KIND,
        target=target,
        inputs=target.inputs,
        outputs=target.outputs,
        freshness=target.freshness,
        params={
            "transformer": cfg["transform"],
            "command": cfg.get("command", "build"),
            "select": _config.as_list(cfg.get("select")),
            "exclude": _config.as_list(cfg.get("exclude")),
        },
        # dbt writes the generated profile's DuckDB file: it takes turns with the loaders.
        locks=[path_lock(project, p)] if (p := _config.duckdb_path(project)) else [],
    )


def step_transformer(project: Project, step: Step) -> Transformer:
    return _config.transformer(project, step.params["transformer"])


def selection(
    project: Project, tf: Transformer, info: Info, data: dict[str, Any]
) -> list[str] | None:
    """The unique ids the step's dbt command runs: resolved here, else asked of ``dbt ls`` once
    per project digest (cached in the summary). None when dbt refused the selector."""
    command, select, exclude = data["command"], data["select"], data["exclude"]
    found = _select.resolve(info, tf.project_dir, select, exclude, command)
    if found is not None:
        return found
    key = json.dumps([command, select, exclude])
    if key in info.selections:
        return info.selections[key]
    found = _dbt_ls(project, tf, select, exclude, command)
    if found is not None:
        info.selections[key] = found
        _manifest.save(project, tf, info)
    return found


def _dbt_ls(
    project: Project, tf: Transformer, select: list[str], exclude: list[str], command: str
) -> list[str] | None:
    exe = _manifest.executable(project, tf, _manifest._stderr)
    argv = [exe, "--quiet", "ls", *_manifest.base_args(tf), "--output", "json"]
    argv += ["--output-keys", "unique_id"]
    if select:
        argv += ["--select", *select]
    if exclude:
        argv += ["--exclude", *exclude]
    env = _config.dbt_env(project, tf, dict(project.environ))
    with _manifest.project_lock(project, tf):
        proc = subprocess.run(
            argv, cwd=tf.project_dir, env=env, capture_output=True, text=True, errors="replace"
        )
    if proc.returncode != 0:
        return None  # the step's key holds every file; its run shows dbt's error
    types = _select.COMMAND_TYPES[command]
    out = []
    for line in proc.stdout.splitlines():
        try:
            uid = json.loads(line)["unique_id"]
        except (ValueError, KeyError, TypeError):
            continue
        if uid.split(".", 1)[0] in types:
            out.append(uid)
    return sorted(out)


def files_of(info: Info, uids: list[str]) -> set[str]:
    """The dbt project's files (relative to it) that what ``uids`` run depends on.

    Each node's own file and its YAML patch; the project macros it calls, transitively; the files
    of the ephemeral models it inlines; and the project-wide files (dbt_project.yml ...). An
    upstream model that is materialized is not here: its *data* reaches this step through the
    upstream target's fingerprint.
    """
    out = {f for f in PROJECT_FILES if f in info.files}
    macros: list[str] = implicit_macros(info)
    todo = list(uids)
    seen: set[str] = set()
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        node = info.nodes.get(uid)
        if node is None:
            src = info.sources.get(uid)
            if src and src.get("path"):
                out.add(src["path"])
            continue
        for f in (node.get("path"), node.get("patch")):
            if f:
                out.add(f)
        macros.extend(node.get("macros", []))
        for p in node.get("parents", []):
            parent = info.nodes.get(p)
            if parent is not None and parent.get("materialized") == "ephemeral":
                todo.append(p)
            elif p in info.sources:  # a source's freshness/quoting config lives in its YAML
                todo.append(p)
    done: set[str] = set()
    while macros:
        m = macros.pop()
        if m in done:
            continue
        done.add(m)
        macro = info.macros.get(m)
        if macro is None:
            continue
        if macro.get("path"):
            out.add(macro["path"])
        macros.extend(macro.get("macros", []))
    return {f for f in out if f in info.files}


def implicit_macros(info: Info) -> list[str]:
    """Project macros dbt calls by itself, for every node: overrides such as
    ``generate_schema_name`` or a materialization (no node lists them in ``depends_on``), and
    those of ``on-run-start``/``on-run-end`` hooks. Taken as: the project's macros that no node or
    macro refers to, plus the hooks' macros."""
    used = {m for n in info.nodes.values() for m in n.get("macros", [])}
    used |= {m for mac in info.macros.values() for m in mac.get("macros", [])}
    out = [m for m in info.macros if m not in used]
    for n in info.nodes.values():
        if n.get("t") == "operation":
            out.extend(n.get("macros", []))
    return out


def step_info(project: Project, step: Step) -> tuple[Transformer, Info]:
    tf = step_transformer(project, step)
    info = _manifest.load(project, tf)
    assert info is not None
    return tf, info


def step_uids(project: Project, step: Step) -> tuple[Transformer, Info, list[str] | None]:
    """The step's transformer, manifest summary and selected nodes (None: unknown, because dbt
    could not parse the project or refused the selector)."""
    tf, info = step_info(project, step)
    if info.error:
        return tf, info, None
    key = (
        str(project.root),
        project.env_name,
        json.dumps(step.params, sort_keys=True),
        info.digest,
    )
    with _SELECTED_LOCK:
        if key not in _SELECTED:
            _SELECTED[key] = selection(project, tf, info, step.params)
        return tf, info, _SELECTED[key]


# The nodes each step selects, by what decides them: a selection is resolved once per manifest.
# Shared by the threads of one process (watch mode decides on one while a build runs another).
_SELECTED: dict[tuple, list[str] | None] = {}
_SELECTED_LOCK = threading.RLock()


def inputs(project: Project, step: Step) -> list[str]:
    """The files in the step's key, relative to the eltmake project root."""
    tf, info, uids = step_uids(project, step)
    # Unknown selection: every file, so that the fix re-runs the step.
    rels = set(info.files) if uids is None else files_of(info, uids)
    out = [tf.rel(project, r) for r in sorted(rels)]
    if tf.profiles_dir is not None:
        out.append(os.path.relpath(tf.profiles_dir / "profiles.yml", project.root))
    return out


def definition(project: Project, step: Step) -> dict[str, Any]:
    """Facts outside the target table that change what dbt does."""
    tf, info, uids = step_uids(project, step)
    profile: dict[str, Any]
    if tf.profiles_dir is None:
        profile = {"duckdb": tf.duckdb_path, "threads": tf.threads}
    else:
        profile = {"profiles_dir": os.path.relpath(tf.profiles_dir, project.root)}
    return {
        "dbt_tool": tool_identity(project, tf.spec()),
        "dbt_profile": profile,
        "dbt_transformer": {
            "project_dir": os.path.relpath(tf.project_dir, project.root),
            "target": tf.target,
            "vars": tf.vars,
            "env": tf.env,
        },
        # Where each selected node lands and how, as dbt resolved it: catches what no file
        # list can, such as a changed generate_schema_name or a config set in a parent folder.
        "dbt_nodes": {
            uid: [n.get("schema"), n.get("alias"), n.get("materialized"), n.get("enabled")]
            for uid in uids or []
            for n in (info.nodes[uid],)
        },
    }


def check_outputs(project: Project, step: Step) -> str | None:
    """A deleted warehouse file means the models are gone: re-run (a stat, nothing more)."""
    tf = step_transformer(project, step)
    db = _config.database_file(project, tf)
    if db is not None and not db.exists():
        return f"DuckDB file {os.path.relpath(db, project.root)} is missing"
    return None

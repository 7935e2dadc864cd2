"""The dbt step as the scheduler sees it before running: its selection, what is in its key, and
whether the relations it built still stand.

Kept apart from :mod:`eltmake_dbt.run` so that a no-op build imports only this part.

When the selection cannot be known (dbt cannot parse the project, the selector matches nothing
or dbt refuses it, a read-only command has no summary yet), the step must run (and show dbt's
message), and ``-n``/``status`` should say why in words. The key then gets one extra definition
entry whose *name* is the cause ("dbt parse failed: <dbt's first error line>", "select 'x'
matches no node ..."), and the inputs stay what the step last selected, so the reasons read
"input changed: <the edited file>; new definition: dbt parse failed: ..." rather than a list of
every file of the dbt project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import Step, digest, tool_identity
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
        # dbt writes a DuckDB file in turns with the loaders (one writer process); a server
        # takes them all at once.
        locks=list(_warehouse_locks(project, cfg["transform"])),
    )


def _warehouse_locks(project: Project, name: str) -> list[str]:
    wh, _ = _config.models_warehouse(project, _config.transformer(project, name))
    return list(wh.locks) if wh is not None else []


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
    if not _manifest.may_start_dbt(project) or info.stale is not None:
        return None  # a read-only command starts no dbt
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
        proc = _manifest.run_dbt(argv, tf, env, stderr=subprocess.PIPE)
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
    """The transformer and a usable summary (a build parses first); for running."""
    tf = step_transformer(project, step)
    info = _manifest.load(project, tf, parse=True)
    assert info is not None
    return tf, info


def step_uids(project: Project, step: Step) -> tuple[Transformer, Info, list[str] | None]:
    """The step's transformer, manifest summary and selected nodes (None: unknown, because dbt
    could not parse the project or refused the selector)."""
    tf, info = step_info(project, step)
    if info.error:
        return tf, info, None
    return tf, info, _selected(project, tf, info, step)


def _selected(project: Project, tf: Transformer, info: Info, step: Step) -> list[str] | None:
    key = (
        str(project.root),
        project.env_name,
        json.dumps(step.params, sort_keys=True),
        info.digest,
    )
    with _SELECTED_LOCK:
        if key not in _SELECTED:
            _SELECTED[key] = selection(project, tf, info, step.params)
        return _SELECTED[key]


# The nodes each step selects, by what decides them: a selection is resolved once per manifest.
# Shared by the threads of one process (watch mode decides on one while a build runs another).
_SELECTED: dict[tuple, list[str] | None] = {}
_SELECTED_LOCK = threading.RLock()


@dataclass
class View:
    """What a decision knows of a dbt step: its summary (None: never parsed, in a read-only
    command), the nodes its key is made of, and why they are not its selection (``problem``)."""

    tf: Transformer
    info: Info | None
    uids: list[str] | None
    problem: str | None = None


def view(project: Project, step: Step) -> View:
    """The step as a decision sees it (no dbt in read-only commands; see the module docstring)."""
    tf = step_transformer(project, step)
    info = _manifest.load(project, tf)
    where = os.path.relpath(tf.project_dir, project.root)
    if info is None:
        return View(tf, None, None, f"dbt has not parsed {where}/ yet (the next build does)")
    if info.error:
        uids = (
            _select.resolve(
                info,
                tf.project_dir,
                step.params["select"],
                step.params["exclude"],
                step.params["command"],
            )
            if info.nodes
            else None
        )
        return View(
            tf, info, uids or _remembered(project, tf, step), f"dbt parse failed: {info.error}"
        )
    uids = _selected(project, tf, info, step)
    if uids:
        if info.stale is None:
            _remember(project, tf, step, uids)
        return View(tf, info, uids)
    if uids == []:
        from eltmake_dbt.run import nothing_selected

        problem = nothing_selected(step.name, info, step.params).split(";")[0]
        problem = problem.removeprefix(f"{step.name}: ")
    elif not _manifest.may_start_dbt(project):
        problem = "dbt has not resolved this selection yet (the next build asks it)"
    else:
        problem = "dbt refused the selection (`eltmake build` shows its message)"
    return View(tf, info, _remembered(project, tf, step), problem)


def _memory_file(project: Project, tf: Transformer) -> Path:
    env = f"-{project.env_name}" if project.env_name else ""
    return tf.state_dir(project) / f"selected{env}.json"


_memory: dict[str, dict[str, list[str]]] = {}


def _remembered(project: Project, tf: Transformer, step: Step) -> list[str] | None:
    """The nodes the step selected when its selection last resolved (for the key of a step whose
    selection is broken now: its inputs stay the same, so the reason names the real change)."""
    file = str(_memory_file(project, tf))
    with _SELECTED_LOCK:
        if file not in _memory:
            try:
                _memory[file] = json.loads(Path(file).read_bytes())
            except (OSError, ValueError):
                _memory[file] = {}
        found = _memory[file].get(step.name)
    return list(found) if isinstance(found, list) else None


def _remember(project: Project, tf: Transformer, step: Step, uids: list[str]) -> None:
    if not _manifest.may_start_dbt(project) or _remembered(project, tf, step) == uids:
        return
    from eltmake.api import write_atomic

    file = _memory_file(project, tf)
    with _SELECTED_LOCK:
        _memory[str(file)][step.name] = list(uids)
        write_atomic(file, json.dumps(_memory[str(file)]), best_effort=True)


def _all_files(tf: Transformer, info: Info | None) -> list[str]:
    if info is not None:
        return sorted(info.files)
    return sorted(rel for rel, _ in _manifest.walk(tf.project_dir))


def _step_files(v: View) -> set[str]:
    """The dbt project's files in the step's key (every file when its nodes are unknown)."""
    if v.info is None or v.uids is None:
        return set(_all_files(v.tf, v.info))
    known = {u for u in v.uids if u in v.info.nodes or u in v.info.sources}
    return files_of(v.info, sorted(known))


def inputs(project: Project, step: Step) -> list[str]:
    """The files in the step's key, relative to the eltmake project root."""
    v = view(project, step)
    out = [v.tf.rel(project, r) for r in sorted(_step_files(v))]
    if v.tf.profiles_dir is not None:
        out.append(os.path.relpath(v.tf.profiles_dir / "profiles.yml", project.root))
    return out


SECRET_VAR = re.compile(r"(password|passwd|token|secret|credential|apikey|(^|_)key$)", re.I)


def env_var_values(project: Project, v: View, files: set[str]) -> dict[str, str | None]:
    """The current values of the environment variables the step's files read with
    ``env_var()`` (and the profile, but for its credentials); secrets as a digest only."""
    names: set[str] = set()
    if v.info is not None:
        for rel in files:
            entry = v.info.files.get(rel)
            if entry is not None and len(entry) > 5:
                names.update(entry[5])
    prof = _config.user_profile(project, v.tf)
    if prof is not None and not prof.error:
        from eltmake_dbt.profiles import keyed_env_vars

        names.update(keyed_env_vars(prof))
    environ = {**project.environ, **v.tf.env}
    out: dict[str, str | None] = {}
    for n in sorted(names):
        value = environ.get(n)
        if value is not None and (SECRET_VAR.search(n) or n.startswith("DBT_ENV_SECRET_")):
            value = "digest:" + digest(["eltmake-env", project.name, n, value])[:32]
        out[n] = value
    return out


def definition(project: Project, step: Step) -> dict[str, Any]:
    """Facts outside the target table that change what dbt does."""
    v = view(project, step)
    tf, info, uids = v.tf, v.info, v.uids
    profile: dict[str, Any]
    if tf.profiles_dir is None and tf.warehouse is not None and tf.warehouse.type == "postgres":
        out = _config.generated_output(project, tf)
        profile = {"postgres": {k: out[k] for k in ("host", "port", "user", "dbname", "schema")}}
        profile["threads"] = tf.threads
    elif tf.profiles_dir is None:
        profile = {"duckdb": tf.duckdb_path, "threads": tf.threads}
    else:
        profile = {"profiles_dir": os.path.relpath(tf.profiles_dir, project.root)}
    nodes = info.nodes if info is not None else {}
    facts: dict[str, Any] = {
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
            if uid in nodes
            for n in (nodes[uid],)
        },
    }
    env = env_var_values(project, v, _step_files(v))
    if env:
        facts["dbt_env_vars"] = env
    if v.problem:
        # Named by its cause, so that -n and status say it ("new definition: dbt parse failed:
        # ..."); never in a record (such a step fails), so the step never looks up to date.
        facts[v.problem] = True
    return facts


def relations(info: Info, uids: list[str]) -> list[tuple[str, str]]:
    """(schema, name) of the tables and views that ``uids`` build."""
    out = []
    for uid in uids:
        node = info.nodes.get(uid) or {}
        if node.get("t") in _manifest.BUILDS_RELATION and node.get("materialized") != "ephemeral":
            out.append((node["schema"], node["alias"]))
    return sorted(set(out))


def _stale_reason(v: View) -> str | None:
    """In a read-only command: files changed since dbt last parsed that may change what this
    step selects (new or removed files, YAML); edits to its own files already changed its key."""
    if v.info is None or not v.info.stale:
        return None
    changed = [
        f
        for f in v.info.stale
        if f not in v.info.files
        or f.endswith((".yml", ".yaml"))
        or not Path(v.tf.project_dir, f).exists()
    ]
    if not changed:
        return None
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return f"dbt files changed since dbt last parsed them: {', '.join(changed[:3])}{more}"


def check_outputs(project: Project, step: Step, record: dict[str, Any] | None = None) -> str | None:
    """Whether what the step built still stands: its DuckDB file (a stat) and every relation
    its selection builds (the catalog, through the verified-state cache for DuckDB)."""
    import eltmake_warehouse as W

    v = view(project, step)
    stale = _stale_reason(v)
    if stale:
        return stale
    wh, _ = _config.models_warehouse(project, v.tf)
    if wh is None:
        return None
    if wh.type == "duckdb":
        db = _config.database_file(project, v.tf)
        assert db is not None
        if not db.exists():
            return f"DuckDB file {os.path.relpath(db, project.root)} is missing"
    rels = relations(v.info, v.uids) if v.info is not None and v.uids else []
    if not rels:
        return None
    if wh.type == "duckdb":
        missing = W.duckdb_missing(project, db, rels, "relations")
    else:
        try:
            missing = W.pg_missing_now(
                wh.settings,
                {**project.environ, **v.tf.env},
                rels,
                where=_config.warehouse_where(v.tf),
                password=_config.profile_password(project, v.tf),
            )
        except W.Unreachable as e:
            return f"cannot check its relations: {e}"
        except W.CannotCheck as e:
            W.note_once(str(e))
            return None
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return f"relation {missing[0]} is missing{more}"

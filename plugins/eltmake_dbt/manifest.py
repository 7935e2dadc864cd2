"""What the dbt project holds, from dbt's own manifest, cached by the content of its files.

dbt takes 1.5-3 s to start, so it must not run on a no-op build. The rule:

1. Walk the dbt project (``target/``, ``logs/`` and hidden folders left out) and stat every file;
   a file whose stat matches the cache keeps its recorded content digest, others are read again.
2. The digest of all (path, content digest) pairs, with what else changes the manifest (the
   profile, ``vars``, ``target``, the dbt version), is the *project digest*.
3. When the project digest equals the cached one, the cached summary is the answer. Otherwise run
   ``dbt parse``, read ``target/manifest.json`` and keep a compact summary of it (nodes, their
   files, parents, macros and relations; macros; sources) in ``.eltmake/dbt/NAME/info.json``.

Saving a file with identical content costs one read of that file, never a parse. A parse that
fails is cached too (by its digest), so a broken model does not re-run dbt on every command; the
dbt step then re-runs and fails with dbt's own message.

Read-only commands (``list``, ``graph``, ``status``, ``build -n``, ``config``, ``select``) never
install dbt nor start it (:func:`may_start_dbt`): they use the last summary as it is, marked
``stale`` with the files that changed since, or none at all on a fresh clone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import digest as json_digest
from eltmake_dbt import config as _config

if TYPE_CHECKING:
    from eltmake.api import Project
    from eltmake_dbt.config import Transformer

INFO_VERSION = 3
SKIP_DIRS = {"target", "logs", "__pycache__", "node_modules", "venv", ".venv"}
# What dbt reads: SQL and Python models, macros, YAML, seeds, docs. Anything else (a DuckDB file,
# a notebook) is left out, so a dbt project at the root of the eltmake project still works.
DBT_SUFFIXES = (".sql", ".py", ".yml", ".yaml", ".csv", ".md", ".jinja", ".jinja2", ".j2")
RACY_S = 2.0
TAIL = 25
# Node types whose file and parents matter for what a selection runs.
RUNNABLE = {"model", "seed", "snapshot", "test", "unit_test"}
BUILDS_RELATION = {"model", "seed", "snapshot"}


class ParseFailed(Exception):
    """``dbt parse`` failed: the message is dbt's, for the step to show."""

    def __init__(self, message: str, tail: list[str]):
        super().__init__(message)
        self.tail = tail


@dataclass
class Info:
    """The compact manifest summary, as cached in ``info.json``.

    ``nodes``: unique_id → {t: resource type, name, fqn, path, patch, parents, macros, tags,
    package, materialized, schema, alias, test_type}. ``macros``: unique_id → {path, package,
    macros}. ``sources``: unique_id → {source, name, schema, identifier, path}.
    ``stale`` (not stored): the files that changed since this summary was made, when a
    read-only command could not parse them (None: the summary is current).
    """

    digest: str
    # rel → [size, mtime_ns, ino, content digest, shape digest, env_var() names it reads]; a
    # summary written by an older eltmake lacks the names, and its files are read once more
    files: dict[str, list]
    project_name: str = ""
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    macros: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    tail: list[str] = field(default_factory=list)
    selections: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] | None = None
    stale: list[str] | None = None

    def to_json(self) -> bytes:
        data = {k: v for k, v in self.__dict__.items() if k not in ("children", "stale")}
        data["version"] = INFO_VERSION
        return json.dumps(data, separators=(",", ":")).encode()

    def child_map(self) -> dict[str, list[str]]:
        """unique_id → the nodes that depend on it (built once per process)."""
        if self.children is None:
            kids: dict[str, list[str]] = {}
            for uid, node in self.nodes.items():
                for p in node.get("parents", []):
                    kids.setdefault(p, []).append(uid)
            self.children = kids
        return self.children


# --- the walk ---------------------------------------------------------------------------------


def walk(project_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file of the dbt project that can change what dbt does, with its stat."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(project_dir / rel_dir if rel_dir else project_dir))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if e.is_dir(follow_symlinks=True):
                if not (rel_dir == "" and e.name in SKIP_DIRS) and e.name != "__pycache__":
                    stack.append(rel)
            elif e.name.endswith(DBT_SUFFIXES) and e.is_file(follow_symlinks=True):
                yield rel, e.stat()


_JINJA = re.compile(rb"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_ENV_VAR = re.compile(rb"""env_var\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


def env_var_names(data: bytes) -> list[str]:
    """The names a file reads with dbt's ``env_var('NAME')`` (their values enter the key)."""
    return sorted({m.decode() for m in _ENV_VAR.findall(data)})


def _digests(path: Path) -> tuple[str, str | None, list[str]]:
    """The file's content digest, and its *shape*: what of it can change dbt's manifest.

    dbt learns a SQL model's refs, sources, config and macros from its Jinja only, so the shape of
    a ``.sql`` file is the digest of its Jinja blocks: an edit to plain SQL text (a column, a
    join, a ``--`` comment) leaves it, and the manifest, as they were. A seed's rows never reach
    the manifest. Any other file has no shape (None): its edit always means a parse.
    """
    data = path.read_bytes()
    content = hashlib.blake2b(data, digest_size=16).hexdigest()
    names = env_var_names(data) if b"env_var" in data else []
    if path.suffix == ".sql":
        jinja = b"\0".join(_JINJA.findall(data))
        return content, hashlib.blake2b(jinja, digest_size=16).hexdigest(), names
    if path.suffix == ".csv":
        return content, "csv", []
    return content, None, names


def file_digests(project_dir: Path, old: dict[str, list]) -> dict[str, list]:
    """{rel: [size, mtime_ns, ino, digest, shape, env vars]}; unchanged stats reuse the recorded
    digests."""
    now = time.time()
    out: dict[str, list] = {}
    for rel, st in walk(project_dir):
        sig = [st.st_size, st.st_mtime_ns, st.st_ino]
        prev = old.get(rel)
        if prev is not None and prev[:3] == sig and prev[3] and len(prev) == 6:
            out[rel] = prev
            continue
        try:
            d, shape, names = _digests(project_dir / rel)
        except OSError:
            continue
        # A file written this very moment may change again within the same mtime tick: keep
        # no stat for it, so that the next walk reads it again ("racy git").
        racy = now - st.st_mtime_ns / 1e9 < RACY_S
        out[rel] = [-1, -1, -1, d, shape, names] if racy else [*sig, d, shape, names]
    return out


def changed_files(old: dict[str, list], new: dict[str, list]) -> list[str]:
    """The files added, removed or edited between two walks (paths in the dbt project)."""
    return sorted(
        rel
        for rel in set(old) | set(new)
        if rel not in old or rel not in new or old[rel][3] != new[rel][3]
    )


def same_shape(old: dict[str, list], new: dict[str, list]) -> bool:
    """True when the files differ only in content dbt's manifest does not see (see _digests):
    the same files, and every changed one a ``.sql`` file with the same Jinja or a seed."""
    if old.keys() != new.keys():
        return False
    for rel, entry in new.items():
        before = old[rel]
        if before[3] != entry[3] and (entry[4] is None or len(before) < 5 or before[4] != entry[4]):
            return False
    return True


def project_digest(project: Project, tf: Transformer, files: dict[str, list]) -> str:
    """The digest of everything that can change the manifest."""
    from eltmake.api import tool_identity

    context = {
        "files": sorted((rel, v[3]) for rel, v in files.items()),
        "profile": _config.profile_text(project, tf) if tf.profiles_dir is None else None,
        "target": tf.target,
        "vars": tf.vars,
        "env": tf.env,
        "tool": tool_identity(project, tf.spec()),
        "v": INFO_VERSION,
    }
    return json_digest(context)


# --- the cache ----------------------------------------------------------------------------------

_memo: dict[tuple[str, str, str], Info] = {}
_memo_lock = threading.Lock()


def _info_file(project: Project, tf: Transformer) -> Path:
    """One summary per ``--env``: switching environments (another profile) must not re-parse."""
    env = f"-{project.env_name}" if project.env_name else ""
    return tf.state_dir(project) / f"info{env}.json"


def read_cached(project: Project, tf: Transformer) -> Info | None:
    try:
        data = json.loads(_info_file(project, tf).read_bytes())
    except (OSError, ValueError):
        return None
    if data.pop("version", None) != INFO_VERSION:
        return None
    try:
        return Info(**data)
    except TypeError:
        return None


def save(project: Project, tf: Transformer, info: Info) -> None:
    file = _info_file(project, tf)
    from eltmake.api import write_atomic

    # A read-only project still builds; it only parses again next time.
    write_atomic(file, info.to_json(), best_effort=True)


def lock_file(project: Project, tf: Transformer) -> Path:
    """The file :func:`project_lock` locks (a warm dbt's warm-up takes it too)."""
    folder = project.state_dir / "dbt"
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.blake2b(str(tf.project_dir).encode(), digest_size=8).hexdigest()
    return folder / f"project-{tag}.lock"


@contextmanager
def project_lock(project: Project, tf: Transformer) -> Iterator[None]:
    """One dbt process per dbt project at a time: they share ``target/`` and, usually, a
    single-writer DuckDB file. Held for parses and runs alike."""
    with open(lock_file(project, tf), "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def may_start_dbt(project: Project) -> bool:
    """Whether this command may install dbt and start it to learn what the dbt project holds:
    not in a read-only one (``list``, ``graph``, ``status``, ``build -n``, ``config``,
    ``select``: they install nothing and start no tool, :attr:`Project.read_only`)."""
    return not project.read_only


def load(
    project: Project,
    tf: Transformer,
    *,
    parse: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Info | None:
    """The manifest summary for the dbt project as its files are now.

    Cheap when nothing changed (a walk and a small JSON read, memoised per process). Otherwise
    parses with dbt (installing it first if needed) when ``parse`` is true (default: unless this
    is a read-only command, :func:`may_start_dbt`); without a parse it returns the last summary
    with ``stale`` set to the files changed since, or None when there has never been one. A
    failed parse returns an Info whose ``error`` is set.
    """
    if parse is None:
        parse = may_start_dbt(project)
    key = (str(project.root), tf.name, project.env_name or "")
    with _memo_lock:
        memo = _memo.get(key)
    old = memo or read_cached(project, tf)
    files = file_digests(tf.project_dir, old.files if old else {})
    digest = project_digest(project, tf, files)
    if old is not None and old.digest == digest:
        if old.files != files:
            old.files = files
            save(project, tf, old)
        with _memo_lock:
            _memo[key] = old
        return old
    if (
        old is not None
        and not old.error
        and old.nodes
        and same_shape(old.files, files)
        and project_digest(project, tf, old.files) == old.digest
    ):
        # Only plain SQL text or seed rows changed: the summary stands; dbt need not parse.
        # (Answers of `dbt ls` are dropped: a `state:` selector may see the edit.)
        old.digest, old.files, old.selections = digest, files, {}
        save(project, tf, old)
        with _memo_lock:
            _memo[key] = old
        return old
    if not parse:
        if old is None:
            return None
        stale = Info(**{k: v for k, v in old.__dict__.items() if k not in ("children", "stale")})
        stale.stale = changed_files(old.files, files)
        return stale
    echo = echo or _stderr
    # Install first, then take the digest again: it holds dbt's installed versions, and one
    # taken before the install would not match the next build's (a second parse).
    executable(project, tf, echo)
    digest = project_digest(project, tf, files)
    where = os.path.relpath(tf.project_dir, project.root)
    from eltmake_dbt.warm import running

    how = ", in the warm dbt" if running(project, tf) else ""
    echo(f"dbt: parsing {where}/ to learn what its targets select (its files changed{how}) ...")
    with project_lock(project, tf):
        info = _parse(project, tf, files, digest, echo)
    if info.error and old is not None and old.nodes:
        # Keep the last good summary for lineage, so a broken model does not also drop the
        # inferred edges (the step would then run before its sources are loaded).
        info.project_name, info.nodes = old.project_name, old.nodes
        info.macros, info.sources = old.macros, old.sources
    save(project, tf, info)
    with _memo_lock:
        _memo[key] = info
    return info


def _stderr(line: str) -> None:

    print(line, file=sys.stderr, flush=True)


def executable(project: Project, tf: Transformer, echo: Callable[[str], None]) -> str:
    """dbt's path, installing its environment first when it is missing."""
    from eltmake.api import ensure_installed, executable_path, is_installed

    spec = tf.spec()
    if spec.pip_url and not is_installed(project, spec):
        ensure_installed(project, [spec], echo=echo)
    return executable_path(project, spec)


def base_args(tf: Transformer) -> list[str]:
    """Arguments every dbt command gets: ``--target`` and the transformer's ``--vars``."""
    args = []
    if tf.target:
        args += ["--target", tf.target]
    if tf.vars:
        args += ["--vars", json.dumps(tf.vars, sort_keys=True)]
    return args


def _parse(project: Project, tf: Transformer, files: dict[str, list], digest: str, echo) -> Info:
    exe = executable(project, tf, echo)
    env = _config.dbt_env(project, tf, dict(project.environ))
    if (
        any(name in files for name in ("packages.yml", "dependencies.yml"))
        and not (tf.project_dir / "dbt_packages").is_dir()
    ):
        run_dbt([exe, "deps"], tf, env)
    from eltmake_dbt import warm

    argv = [exe, "parse", *base_args(tf)]
    rc, lines = warm.parse(project, tf, exe, argv[1:], env, files, echo)
    if rc is None:
        proc = run_dbt(argv, tf, env)
        rc, lines = proc.returncode, proc.stdout.splitlines()
    if rc != 0:
        message, tail = error_summary(lines)
        return Info(digest=digest, files=files, error=message, tail=tail)
    try:
        manifest = json.loads((tf.project_dir / "target" / "manifest.json").read_bytes())
    except (OSError, ValueError) as e:
        return Info(digest=digest, files=files, error=f"cannot read dbt's manifest.json: {e}")
    return summarize(manifest, digest, files)


def run_dbt(
    argv: list[str], tf: Transformer, env: dict[str, str], **kwargs: Any
) -> subprocess.CompletedProcess:
    """dbt outside a step (a parse, a listing): supervised (it never outlives eltmake), and with
    secret vars kept out of the process table (:mod:`eltmake_dbt.launch`)."""
    from eltmake.api import private_dir, run_process
    from eltmake_dbt.launch import has_secret_vars, launch_argv

    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    opts = dict(cwd=tf.project_dir, env=env, stdin=subprocess.DEVNULL, text=True, errors="replace")
    if not has_secret_vars(argv):
        return run_process(argv, **opts, **kwargs)
    with private_dir() as private:
        return run_process(launch_argv(argv, private), **opts, **kwargs)


_TIME = re.compile(r"^\d\d:\d\d:\d\d(?:  |$)")


def clean_line(line: str) -> str:
    """A dbt log line without colour codes and its ``HH:MM:SS`` prefix."""
    return _TIME.sub("", line.replace("\x1b[0m", "").rstrip())


_MARKER = re.compile(r"^(Completed with \d+ errors?|Encountered an error)")
_KIND = re.compile(r"^(\w+ )*(Error|Failure)( in .*)?:?$")


def error_summary(lines: list[str]) -> tuple[str, list[str]]:
    """dbt's error in one line, and the lines from where dbt starts telling it.

    dbt ends a failed command with "Encountered an error:" (it could not start: a compile error)
    or "Completed with 1 error ..." followed by each failure; the headline is the first failure,
    with its detail when its first line only names the kind ("Compilation Error").
    """
    lines = [c for c in (clean_line(x) for x in lines) if c.strip()]
    start = next((i for i, x in enumerate(lines) if _MARKER.match(x.strip())), None)
    if start is None:
        start = next(
            (i for i, x in enumerate(lines) if "Error" in x or x.strip().startswith("Failure")),
            max(len(lines) - TAIL, 0),
        )
        body = lines[start:]
    else:
        body = lines[start + 1 :]
    if not body:
        return (lines[-1].strip() if lines else "(no output)"), lines[-TAIL:]
    head = body[0].strip()
    if _KIND.match(head) and len(body) > 1:
        head = f"{head.rstrip(':')}: {body[1].strip()}"
    return head, lines[start : start + TAIL]


def _strip_pkg(path: str | None) -> str | None:
    """``shop://models/x.yml`` → ``models/x.yml``."""
    if not path:
        return None
    return path.split("://", 1)[1] if "://" in path else path


def summarize(manifest: dict[str, Any], digest: str, files: dict[str, list]) -> Info:
    """Keep what eltmake needs from manifest.json (it is large; the summary is read every build)."""
    root = manifest.get("metadata", {}).get("project_name", "")
    nodes: dict[str, dict[str, Any]] = {}
    for uid, n in {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}.items():
        cfg = n.get("config") or {}
        nodes[uid] = {
            "t": n.get("resource_type"),
            "name": n.get("name"),
            "fqn": n.get("fqn", []),
            "path": n.get("original_file_path"),
            "patch": _strip_pkg(n.get("patch_path")),
            "parents": list((n.get("depends_on") or {}).get("nodes", [])),
            "macros": list((n.get("depends_on") or {}).get("macros", [])),
            "tags": list(n.get("tags") or []),
            "package": n.get("package_name"),
            "materialized": cfg.get("materialized"),
            "enabled": cfg.get("enabled", True),
            "schema": n.get("schema"),
            "alias": n.get("alias") or n.get("name"),
            "test_type": "generic" if n.get("test_metadata") else "singular",
            "attached": n.get("attached_node"),
            "version": n.get("version"),
        }
    macros = {
        uid: {
            "path": m.get("original_file_path"),
            "package": m.get("package_name"),
            "macros": list((m.get("depends_on") or {}).get("macros", [])),
        }
        for uid, m in manifest.get("macros", {}).items()
        # Only the project's own macros are files of ours; an adapter's and dbt's own macros
        # change with the tool's version (in the key), installed packages with packages.yml.
        if m.get("package_name") == root
    }
    sources = {
        uid: {
            "source": s.get("source_name"),
            "name": s.get("name"),
            "schema": s.get("schema"),
            "identifier": s.get("identifier") or s.get("name"),
            "path": s.get("original_file_path"),
            "fqn": s.get("fqn", []),
            "package": s.get("package_name"),
            "tags": list(s.get("tags") or []),
        }
        for uid, s in manifest.get("sources", {}).items()
    }
    return Info(
        digest=digest,
        files=files,
        project_name=root,
        nodes=nodes,
        macros=macros,
        sources=sources,
    )

"""Which files an edit touched, and what to ignore: the path rules of ``eltmake watch``.

Pure functions and data, tested without threads or a file system notifier: editor junk, glob
patterns as regexes, the project's ``.gitignore``, and the :class:`WatchMap` from files to the
steps that read them. What a kind of step writes while it runs (dbt's ``target/``) comes from its
recipe's ``written_paths``, so the watch never triggers itself.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eltmake.graph import Graph
    from eltmake.project import Project
    from eltmake.step import Step

# Folders whose content is never an input: eltmake's own state and tool environments, version
# control, caches, virtual environments.
IGNORED_DIRS = frozenset(
    {
        ".eltmake",
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        "node_modules",
        ".venv",
        "venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".idea",
        ".vscode",
    }
)
_JUNK_SUFFIXES = (
    "~",
    ".swp",
    ".swo",
    ".swx",
    ".swn",
    ".swpx",
    ".tmp",
    ".bak",
    ".orig",
    ".part",
    ".crdownload",
    ".kate-swp",
    "___jb_tmp___",
    "___jb_old___",
)
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", ".directory"})
_GLOB_CHARS = set("*?[")
ADDED, MODIFIED, DELETED = 1, 2, 3


def is_editor_junk(name: str) -> bool:
    """Swap, backup, lock and probe files that editors write beside the file being saved.

    Vim probes a folder's writability with files named 4913, 5036, 5159… (4913 + 123·k).
    """
    if name in _JUNK_NAMES or name.endswith(_JUNK_SUFFIXES):
        return True
    if name.startswith((".#", ".~lock.", ".goutputstream-")):
        return True
    if name.startswith("#") and name.endswith("#"):
        return True
    return name.isdigit() and int(name) >= 4913 and (int(name) - 4913) % 123 == 0


def glob_regex(pattern: str) -> str:
    """A glob pattern as a regex over ``/``-separated relative paths, as :func:`glob.glob` with
    ``recursive=True`` reads it (the way the cache expands ``inputs``): ``**`` spans folders, ``*``
    and ``?`` stay within one. Not anchored."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            whole = (i == 0 or pattern[i - 1] == "/") and pattern.startswith("**", i)
            if whole and i + 2 == n:
                out.append(".*")
                i += 2
                continue
            if whole and pattern[i + 2] == "/":
                out.append("(?:.*/)?")
                i += 3
                continue
            out.append("[^/]*")
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (``""`` is the root)."""
    return not folder or path == folder or path.startswith(folder + "/")


def norm(rel: str) -> str:
    rel = os.path.normpath(rel).replace(os.sep, "/")
    return "" if rel == "." else rel


class GitIgnore:
    """The project's own ``.gitignore`` (the root one only), read simply: ``#`` comments, ``!``
    negation (the last matching line wins), a trailing ``/`` for folders only, a leading or inner
    ``/`` to anchor at the root, ``*``, ``?``, ``[…]`` and ``**``. Good enough to keep build
    products and data dumps from triggering the watch; declared inputs are watched even when
    ignored here."""

    def __init__(self, root: Path):
        self.rules: list[tuple[re.Pattern[str], bool, bool]] = []
        try:
            text = (root / ".gitignore").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            line = line.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            line = line.replace("\\ ", " ").replace("\\#", "#").replace("\\!", "!")
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line  # a leading or inner slash anchors at the root, as in git
            line = line.lstrip("/")
            if not line:
                continue
            rx = glob_regex(line)
            rx = f"^{rx}$" if anchored else f"^(?:.*/)?{rx}$"
            self.rules.append((re.compile(rx), negate, dir_only))

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        if not self.rules:
            return False
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for rx, negate, dir_only in self.rules:
            for i, sub in enumerate(prefixes):
                if dir_only and not (i < len(parts) - 1 or is_dir):
                    continue
                if rx.match(sub):
                    result = not negate
                    break
        return result


@dataclass
class WatchMap:
    """Which files of the project feed which steps of the selected graph, and what to ignore."""

    root: Path
    order: list[str] = field(default_factory=list)
    literal: dict[str, set[str]] = field(default_factory=dict)
    globs: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    # Folders of plugin-reported files: a file added or deleted there may be a new input the
    # plugin does not know yet (a new dbt model), so it triggers a build and the cache decides.
    neighbours: dict[str, set[str]] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    config: set[str] = field(default_factory=set)
    top_dirs: set[str] = field(default_factory=set)  # first folders of inputs: always watched
    # (folder part of each pattern before any glob character, step): a folder created at or
    # above it may already hold inputs the notifier did not see being written.
    prefixes: list[tuple[str, str, str, bool]] = field(default_factory=list)  # + pattern, **
    succs: dict[str, list[str]] = field(default_factory=dict)
    # Folders that steps write while they run (from each recipe's written_paths): never edits.
    written: set[str] = field(default_factory=set)
    gitignore: GitIgnore | None = None
    loaded: bool = False  # False until a project has loaded: then any edit retries the load

    def add_inputs(self, name: str, patterns: list[str], from_plugin: bool) -> None:
        for pat in patterns:
            pat = self._rel(pat)
            if pat is None:
                continue
            first = pat.split("/", 1)[0]
            static = re.split(r"[*?\[]", pat, maxsplit=1)[0]
            folder = static.rsplit("/", 1)[0] if "/" in static else ""
            self.prefixes.append((folder, name, pat, "**" in pat))
            if _GLOB_CHARS.isdisjoint(pat):
                self.literal.setdefault(pat, set()).add(name)
                if "/" in pat:
                    self.top_dirs.add(first)
                    if from_plugin:
                        self.neighbours.setdefault(pat.rsplit("/", 1)[0], set()).add(name)
            else:
                self.globs.append((re.compile(f"^{glob_regex(pat)}$"), name))
                if _GLOB_CHARS.isdisjoint(first) and "/" in pat:
                    self.top_dirs.add(first)
                elif "/" in pat:
                    self.top_dirs.add("*")  # a glob in the first folder: watch every folder

    def _rel(self, path: str) -> str | None:
        if os.path.isabs(path):
            try:
                path = os.path.relpath(path, self.root)
            except ValueError:
                return None
        rel = norm(path)
        return None if rel.startswith("../") or rel == ".." else rel

    def classify(self, kind: int, path: str) -> tuple[str, set[str]] | None:
        """``("config", …)``, ``("input", steps)`` or ``None`` for an event to ignore."""
        rel = self._rel(path)
        if not rel:
            return None
        parts = rel.split("/")
        if any(p in IGNORED_DIRS for p in parts) or is_editor_junk(parts[-1]):
            return None
        if rel in self.config or (
            len(parts) == 2 and parts[0] == "plugins" and parts[1].endswith(".py")
        ):
            return "config", set()
        if rel in self.outputs or any(rel.startswith(o + "/") for o in self.outputs):
            return None
        if any(_under(rel, w) for w in self.written):
            return None
        steps = set(self.literal.get(rel, ()))
        for rx, name in self.globs:
            if name not in steps and rx.match(rel):
                steps.add(name)
        if steps:
            return "input", steps
        if kind == ADDED and os.path.isdir(path):
            # A new folder is watched from the moment it appears, so files written into it
            # right away (mkdir -p x && cp … x/) may never be reported: build if it may hold
            # inputs, and let the cache decide.
            steps = {
                n
                for pre, n, pat, deep in self.prefixes
                if pat not in self.outputs  # another step's output: that step's run decides
                and ((pre and _under(pre, rel)) or (deep and _under(rel, pre)))
            }
            if steps:
                return "input", steps
        if self.gitignore is not None and self.gitignore.ignored(rel):
            return None
        if not self.loaded:
            return "config", set()
        if kind in (ADDED, DELETED) and len(parts) > 1:
            near = self.neighbours.get("/".join(parts[:-1]))
            if near:
                return "input", set(near)
        return None

    def affected(self, steps: set[str]) -> set[str]:
        """``steps`` and everything below them in the selected graph."""
        out = set()
        todo = list(steps)
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(self.succs.get(n, ()))
        return out

    def watched_top_dirs(self) -> set[str]:
        """The top-level folders to watch recursively: all but ignored ones, unless they hold
        declared inputs."""
        out = set()
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return out
        for e in entries:
            if e.name in IGNORED_DIRS or not e.is_dir():
                continue
            if e.name in self.top_dirs or "*" in self.top_dirs:
                out.add(e.name)  # holds inputs: watched even if a symlink or git-ignored
                continue
            if e.is_symlink():
                continue
            if e.name in self.written:
                continue
            if e.name in self.outputs:
                continue
            if self.gitignore is not None and self.gitignore.ignored(e.name, is_dir=True):
                continue
            out.add(e.name)
        return out


def build_map(project: Project, graph: Graph, order: list[str], steps: dict[str, Step]) -> WatchMap:
    """The :class:`WatchMap` of a loaded project's selected targets."""
    wm = WatchMap(root=project.root, order=list(order), loaded=True)
    wm.gitignore = GitIgnore(project.root)
    selected = set(order)
    wm.succs = {n: [s for s in graph.successors(n) if s in selected] for n in order}
    wm.config = {"eltmake.toml", ".env", ".gitignore"}
    for mod in project.plugins:
        m = sys.modules.get(mod)
        f = getattr(m, "__file__", None)
        if f:
            rel = wm._rel(f)
            if rel:
                wm.config.add(rel)
    for recipe in project.recipes.values():
        for folder in recipe.written_paths(project) or []:
            rel = wm._rel(folder)
            if rel:
                wm.written.add(rel)
    for name in order:
        step = steps.get(name)
        if step is None:
            continue
        wm.add_inputs(name, list(step.inputs), from_plugin=False)
        extra = project.recipes[step.kind].inputs(project, step)
        wm.add_inputs(name, list(extra or []), from_plugin=True)
        for out in step.outputs:
            rel = wm._rel(out)
            if rel:
                wm.outputs.add(rel)
    return wm

"""``eltmake watch``: build once, then rebuild what each edit affects.

How it is put together, and why:

* The cache decides what re-runs. A cycle is an ordinary build of the selected targets; steps the
  edit did not touch are skipped by their keys, and early cutoff stops a re-run whose output did
  not change. The watch only decides *when* to build and *what to cancel*.
* The main thread keeps the file events and Ctrl-C; a build runs in a thread of its own, one at a
  time. An edit that arrives during a build cancels the running steps it affects (their process
  groups are terminated) and queues a new cycle; unaffected running steps may finish, and the
  cache keeps their results.
* watchfiles' Rust notifier watches the project root (not recursively) and each top-level folder
  that may hold inputs (recursively), so the tool environments under ``.eltmake/`` (thousands of
  folders) cost no inotify watch. Every event goes through :meth:`WatchMap.classify`, which
  ignores what a build writes itself (declared outputs, ``.eltmake/``, dbt's ``target/``,
  ``logs/``, ``dbt_packages/``), editor droppings and what ``.gitignore`` ignores, so the watch
  never triggers itself.
* A broken project file, a failing step or a plugin error never ends the watch: the error is
  shown, the last good graph is kept, and the next edit tries again. Only Ctrl-C ends it (130).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from eltmake.errors import ConfigError, EltmakeError
from eltmake.output import Reporter

if TYPE_CHECKING:
    from eltmake.graph import Graph
    from eltmake.project import Project
    from eltmake.scheduler import BuildOptions, Scheduler
    from eltmake.step import Outcome, Step

EXIT_INTERRUPTED = 130

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
# Folders a dbt project writes into while it runs (ignored next to a dbt_project.yml).
DBT_WRITTEN_DIRS = ("target", "logs", "dbt_packages")
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
_CHANGE_WORDS = {ADDED: "added", MODIFIED: "modified", DELETED: "deleted"}
# The Rust notifier's polling step, in ms: it returns a batch after this much quiet, and the
# watch then waits the rest of --debounce for more relevant edits.
NOTIFY_STEP_MS = 25
SHOW_NAMES = 8  # names listed per category in a cycle's summary line


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


def _norm(rel: str) -> str:
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
    gitignore: GitIgnore | None = None
    loaded: bool = False  # False until a project has loaded: then any edit retries the load
    _dbt_dirs: dict[str, bool] = field(default_factory=dict)

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
        rel = _norm(path)
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
        if self._in_dbt_written_dir(parts):
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

    def _in_dbt_written_dir(self, parts: list[str]) -> bool:
        for i, p in enumerate(parts[:-1]):
            if p in DBT_WRITTEN_DIRS:
                parent = "/".join(parts[:i])
                if parent not in self._dbt_dirs:
                    self._dbt_dirs[parent] = (self.root / parent / "dbt_project.yml").exists()
                if self._dbt_dirs[parent]:
                    return True
        return False

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
            if e.name in DBT_WRITTEN_DIRS and (self.root / "dbt_project.yml").exists():
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
    hook = project.pm.hook
    for name in order:
        step = steps.get(name)
        if step is None:
            continue
        wm.add_inputs(name, list(step.inputs), from_plugin=False)
        for extra in hook.eltmake_step_inputs(project=project, step=step):
            wm.add_inputs(name, list(extra or []), from_plugin=True)
        for out in step.outputs:
            rel = wm._rel(out)
            if rel:
                wm.outputs.add(rel)
    return wm


def _definitions(project: Project, names: list[str], steps: dict[str, Step]) -> dict[str, str]:
    """A digest of each step's definition (its table, what plugins add, its deps): a running step
    whose definition an edit of the project file changed is cancelled; the others may finish."""
    from eltmake.cache import NOT_IN_KEY, digest

    out = {}
    for name in names:
        step = steps.get(name)
        if step is None:
            continue
        parts: dict[str, Any] = {
            k: v for k, v in step.target.config.items() if k not in NOT_IN_KEY or k == "deps"
        }
        for extra in project.pm.hook.eltmake_step_definition(project=project, step=step):
            parts.update(extra or {})
        out[name] = digest(parts)
    return out


# --- watching the file system --------------------------------------------------------------------


class _Notifiers:
    """One watchfiles notifier per watched folder, each drained by its own thread into one queue.

    The root is watched alone (its files: ``eltmake.toml``, ``.env``, top-level inputs, and new
    folders); each top-level folder that may hold inputs is watched recursively.
    """

    def __init__(self, root: Path, q: queue.Queue):
        self.root = root
        self.q = q
        self.active: dict[str, threading.Event] = {}
        self.step_ms = NOTIFY_STEP_MS

    def sync(self, top_dirs: set[str]) -> None:
        wanted = {""} | top_dirs
        for rel in list(self.active):
            if rel not in wanted:
                self.active.pop(rel).set()
        for rel in sorted(wanted - set(self.active)):
            self._add(rel)

    def _add(self, rel: str) -> None:
        path = self.root / rel if rel else self.root
        if not path.is_dir():
            return
        stop = threading.Event()
        self.active[rel] = stop
        threading.Thread(
            target=self._drain,
            args=(path, bool(rel), stop),
            name=f"watch:{rel or '.'}",
            daemon=True,
        ).start()

    def drop(self, rel: str) -> None:
        """Forget a watched folder that was deleted, so that it is watched again if it returns."""
        stop = self.active.pop(rel, None)
        if stop is not None:
            stop.set()

    def _drain(self, path: Path, recursive: bool, stop: threading.Event) -> None:
        import watchfiles

        try:
            # debounce caps how long a stream of events (a dbt run writing target/) is grouped;
            # step is the quiet that ends a batch. No filter here: WatchMap.classify decides.
            for changes in watchfiles.watch(
                path,
                watch_filter=None,
                debounce=500,
                step=self.step_ms,
                stop_event=stop,
                rust_timeout=0,
                raise_interrupt=False,
                recursive=recursive,
                ignore_permission_denied=True,
            ):
                if changes:
                    self.q.put(("fs", {(int(c), p) for c, p in changes}))
        except Exception as e:  # a watched folder removed, a full inotify table…
            if not stop.is_set():
                self.q.put(("notify_error", f"{path}: {type(e).__name__}: {e}"))

    def close(self) -> None:
        for stop in self.active.values():
            stop.set()
        self.active.clear()


# --- one build cycle ----------------------------------------------------------------------------


@dataclass
class _Cycle:
    number: int
    changed: list[str]
    project: Project
    graph: Graph
    order: list[str]
    opts: BuildOptions
    install: bool
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sched: Scheduler | None = None
    stopping: bool = False
    superseded: bool = False
    status: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    error: str = ""
    new_map: WatchMap | None = None
    thread: threading.Thread | None = None
    reporter: _CycleReporter | None = None

    running: set[str] = field(default_factory=set)  # kept by the cycle's reporter


class _CycleReporter(Reporter):
    """The build's reporter, told when an edit superseded the build: its summary then says
    ``superseded`` instead of a failure made of cancelled steps."""

    def __init__(self, inner: Reporter, cycle: _Cycle):
        self.inner = inner
        self.cycle = cycle
        self.open = False

    def build_started(self, targets, opts) -> None:
        self.open = True
        self.inner.build_started(targets, opts)

    def step_started(self, name, reason) -> None:
        with self.cycle.lock:
            self.cycle.running.add(name)
        self.inner.step_started(name, reason)

    def step_log(self, name, line) -> None:
        self.inner.step_log(name, line)

    def step_progress(self, name, text) -> None:
        self.inner.step_progress(name, text)

    def step_finished(self, name, outcome) -> None:
        with self.cycle.lock:
            self.cycle.running.discard(name)
        self.inner.step_finished(name, outcome)

    def build_finished(self, status, outcomes) -> None:
        self.open = False
        if self.cycle.superseded and status != "interrupted":
            status = "superseded"
        self.inner.build_finished(status, outcomes)

    def message(self, text) -> None:
        self.inner.message(text)


# --- the watch -----------------------------------------------------------------------------------


class Watch:
    def __init__(self, args: Any):
        from eltmake.project import find_root

        self.args = args
        self.root = find_root(args.project_dir)
        self.targets = list(args.targets or [])
        self.q: queue.Queue = queue.Queue()
        self.human: IO[str] = sys.stderr if args.json else sys.stdout
        self.tty = not args.plain and self.human.isatty()
        self.map = WatchMap(root=self.root)
        self.map.gitignore = GitIgnore(self.root)
        self.notifiers = _Notifiers(self.root, self.q)
        self.project: Project | None = None
        self.graph: Graph | None = None
        self.order: list[str] = []
        self.opts: BuildOptions | None = None
        self.broken: str = ""  # the last load error, while the project file stays broken
        self.reload_needed = True
        self.install_needed = True
        self.first = True
        self.cycle: _Cycle | None = None
        self.cycles = 0
        self.pending: dict[str, int] = {}  # relevant changes not yet built: path -> change
        self.pending_steps: set[str] = set()  # the steps that read them
        self.cache = None
        self.state = None
        self._out_lock = threading.Lock()

    # --- output ----------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        """A line of the watch's own (on the terminal: bold/red/yellow; plain elsewhere)."""
        cycle = self.cycle
        if cycle is not None and cycle.reporter is not None and cycle.reporter.open:
            cycle.reporter.message(text)  # through the build's display, not across its live panel
            return
        with self._out_lock:
            if self.tty and style:
                self.human.write(f"\033[{style}m{text}\033[0m\n")
            else:
                self.human.write(text + "\n")
            self.human.flush()

    def event(self, obj: dict[str, Any]) -> None:
        if self.args.json:
            with self._out_lock:
                sys.stdout.write(json.dumps(obj, default=str) + "\n")
                sys.stdout.flush()

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        from eltmake.project import PROJECT_FILE

        if not (self.root / PROJECT_FILE).exists():
            raise ConfigError(
                f"{self.root / PROJECT_FILE}: not found; run `eltmake init` to create a project "
                "here, or pass -C DIR"
            )
        self._check_command_line()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._open_stores()
            self.notifiers.sync(self.map.watched_top_dirs())
            self._reload()
            self._announce()
            self._start_cycle([])
            while True:
                self._step()
        except KeyboardInterrupt:
            self._interrupt()
            self.say("watch: interrupted; stopped", "33")
            self.event({"event": "watch_stopped", "status": "interrupted"})
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.notifiers.close()
            if self.cache is not None:
                self.cache.close()
            if self.state is not None:
                self.state.close()

    def _check_command_line(self) -> None:
        """A target named on the command line that the project lacks is a usage error (exit 2),
        unlike a project file that is broken mid-edit, which the watch waits out."""
        from eltmake.graph import check_names
        from eltmake.project import load_project

        try:
            project = load_project(self.root, env_name=self.args.env_name)
        except ConfigError:
            return  # the first cycle shows it and waits for the fix
        check_names(project, list(self.targets) + list(getattr(self.args, "force", []) or []))

    def _open_stores(self) -> None:
        from eltmake.cache import Cache
        from eltmake.state import StateStore

        state_dir = self.root / ".eltmake"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.cache = Cache(state_dir)
        self.state = StateStore(state_dir / "state.db")

    def _announce(self) -> None:
        dirs = sorted(self.notifiers.active)
        where = ", ".join(d + "/" for d in dirs if d) or "the project folder"
        targets = ", ".join(self.order[-SHOW_NAMES:]) if self.order else "(none yet)"
        self.say(
            f"watch: {self.root}: {len(self.order)} targets ({targets}); watching . and {where}"
        )
        self.event(
            {
                "event": "watch_started",
                "root": str(self.root),
                "targets": self.order,
                "watching": ["."] + [d for d in dirs if d],
            }
        )

    def _step(self) -> None:
        """Wait for the next thing to happen (file events or a finished build) and act on it."""
        try:
            kind, payload = self.q.get(timeout=0.5)
        except queue.Empty:
            return
        if kind == "done":
            self._finished(payload)
        elif kind == "notify_error":
            # Not retried (it would fail again in a loop); edits there go unseen until restart.
            self.say(
                f"watch: stopped watching {payload}; restart the watch to see edits there", "33"
            )
        elif kind == "fs":
            relevant = self._relevant(payload)
            if not relevant:
                return
            self._settle(relevant)
            self._changed(relevant)

    def _relevant(self, changes: set[tuple[int, str]]) -> dict[str, tuple[int, str, set[str]]]:
        out: dict[str, tuple[int, str, set[str]]] = {}
        new_dirs = False
        for change, path in changes:
            rel = os.path.relpath(path, self.root)
            if "/" not in rel and change in (ADDED, DELETED) and rel not in IGNORED_DIRS:
                new_dirs = True
                if change == DELETED:
                    self.notifiers.drop(rel)
            what = self.map.classify(change, path)
            if what is not None:
                out[_norm(rel)] = (change, what[0], what[1])
        if new_dirs:
            self.notifiers.sync(self.map.watched_top_dirs())
        return out

    def _settle(self, relevant: dict[str, tuple[int, str, set[str]]]) -> None:
        """Debounce: wait until no relevant edit came for ``--debounce`` seconds (the notifier
        already waited ``NOTIFY_STEP_MS`` of quiet), so a save of several files is one cycle."""
        wait = max(0.0, self.args.debounce - NOTIFY_STEP_MS / 1000)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, payload = self.q.get(timeout=left)
            except queue.Empty:
                return
            if kind == "done":
                self._finished(payload, start_next=False)
            elif kind == "fs":
                more = self._relevant(payload)
                if more:
                    relevant.update(more)
                    deadline = time.monotonic() + wait

    def _changed(self, relevant: dict[str, tuple[int, str, set[str]]]) -> None:
        for rel, (change, _, names) in relevant.items():
            self.pending[rel] = change
            self.pending_steps |= names
        config = any(kind == "config" for _, kind, _ in relevant.values())
        if config:
            self.reload_needed = True
        cycle = self.cycle
        if cycle is None:
            self._start_cycle(self._pending_list())
            return
        # A build is running: cancel the running steps this edit affects, let the others finish,
        # and build again when it ends.
        steps: set[str] = set()
        for _, _, names in relevant.values():
            steps |= names
        if config:
            old_project = cycle.project
            if self._reload():
                with cycle.lock:
                    running = sorted(cycle.running)
                sched_steps = cycle.sched.steps if cycle.sched is not None else {}
                try:
                    from eltmake.scheduler import make_steps

                    new_steps = make_steps(self.project, [n for n in running if n in self.order])
                    before = _definitions(old_project, running, sched_steps)
                    after = _definitions(self.project, running, new_steps)
                except Exception:
                    before, after = {}, {n: "?" for n in running}
                steps |= {n for n in running if before.get(n) != after.get(n)}
        with cycle.lock:
            running = set(cycle.running)
        hit = self.map.affected(steps) & running if steps else set()
        if hit:
            cycle.superseded = True
            names = ", ".join(sorted(hit))
            self.say(
                f"watch: {self._pending_text()} changed during the build: cancelling {names}", "33"
            )
            self.event({"event": "watch_cancel", "cycle": cycle.number, "targets": sorted(hit)})
            sched = cycle.sched
            if sched is not None:
                sched.cancel(hit)

    def _pending_list(self) -> list[str]:
        return sorted(self.pending)

    def _pending_text(self) -> str:
        names = self._pending_list()
        text = ", ".join(names[:SHOW_NAMES])
        return text + (f" and {len(names) - SHOW_NAMES} more" if len(names) > SHOW_NAMES else "")

    # --- loading ---------------------------------------------------------------------------------

    def _reload(self) -> bool:
        """Load the project file again; on an error keep the last good graph and say why."""
        from eltmake.build import options_from_args
        from eltmake.graph import selection
        from eltmake.project import load_project
        from eltmake.scheduler import make_steps

        self.reload_needed = False
        self._forget_project_modules()
        try:
            project = load_project(self.root, env_name=self.args.env_name)
            graph, _, order = selection(project, self.targets, self.args.only)
            opts = options_from_args(self.args, project)
            steps = make_steps(project, order)
            wmap = build_map(project, graph, order, steps)
        except Exception as e:
            self._load_failed(e)
            return False
        if not self.first:
            opts.force = set()  # -B and --force apply to the first build only
        was_broken = bool(self.broken)
        self.project, self.graph, self.order, self.opts = project, graph, order, opts
        self.map = wmap
        self.broken = ""
        self.install_needed = True
        self.notifiers.sync(wmap.watched_top_dirs())
        if was_broken:
            self.say("watch: the project loads again", "32")
        return True

    def _load_failed(self, e: Exception) -> None:
        if isinstance(e, EltmakeError):
            msg = str(e)
        else:
            msg = (
                f"internal error while loading the project: {type(e).__name__}: {e} "
                "(a bug in eltmake or a plugin; --debug shows the traceback)"
            )
            if self.args.debug:
                import traceback

                traceback.print_exc(file=self.human)
        self.broken = msg
        keep = (
            "keeping the last good graph"
            if self.project is not None
            else "nothing to build until it loads"
        )
        self.say(f"watch: error: {msg}", "1;31")
        self.say(f"watch: {keep}; waiting for the next edit", "33")
        self.event({"event": "watch_error", "error": msg})

    def _forget_project_modules(self) -> None:
        """Make ``[project].plugins`` modules of the project folder import afresh on reload
        (files in ``plugins/`` are always executed again by a new plugin manager)."""
        if self.project is None:
            return
        for name in list(sys.modules):
            top = name.split(".", 1)[0]
            if top in {p.split(".", 1)[0] for p in self.project.plugins}:
                f = getattr(sys.modules[name], "__file__", None) or ""
                if f.startswith(str(self.root) + os.sep):
                    del sys.modules[name]

    # --- cycles ----------------------------------------------------------------------------------

    def _start_cycle(self, changed: list[str]) -> None:
        if self.reload_needed or self.broken:
            self._reload()  # while broken, every edit tries again (and shows the error again)
        if self.broken or self.project is None or self.graph is None or self.opts is None:
            return  # what changed stays pending: the first build after the fix names it
        first = self.map.affected(self.pending_steps) & set(self.order)
        self.pending.clear()
        self.pending_steps.clear()
        self.cycles += 1
        if self.args.clear and self.tty and not self.first:
            self.human.write("\033[2J\033[H")
        if not self.first:
            shown = ", ".join(changed[:SHOW_NAMES]) + (
                f" and {len(changed) - SHOW_NAMES} more" if len(changed) > SHOW_NAMES else ""
            )
            self.say(f"watch: changed: {shown}", "1")
        self.event({"event": "watch_cycle", "cycle": self.cycles, "changed": changed})
        opts = dataclasses.replace(self.opts, first=first)
        cycle = _Cycle(
            self.cycles,
            changed,
            self.project,
            self.graph,
            list(self.order),
            opts,
            install=self.install_needed,
        )
        self.install_needed = False
        self.first = False
        if self.opts.force:
            self.opts.force = set()
        self.cycle = cycle
        cycle.thread = threading.Thread(
            target=self._build, args=(cycle,), name=f"build-{cycle.number}", daemon=True
        )
        cycle.thread.start()

    def _build(self, cycle: _Cycle) -> None:
        """The build thread: one ordinary build of the selected targets."""
        from eltmake.build import install_tools
        from eltmake.lock import ProjectLock
        from eltmake.output import make_reporter
        from eltmake.scheduler import Scheduler

        reporter = _CycleReporter(
            make_reporter(self.args.json, self.args.verbose, self.args.plain), cycle
        )
        cycle.reporter = reporter
        lock = ProjectLock(cycle.project.state_dir)
        sched = None
        try:
            lock.acquire(wait=True, notify=reporter.message)
            blocked = (
                install_tools(cycle.project, cycle.order, reporter.message) if cycle.install else {}
            )
            sched = Scheduler(
                cycle.project,
                cycle.graph,
                cycle.order,
                cycle.opts,
                reporter,
                self.cache,
                self.state,
                blocked=blocked,
            )
            with cycle.lock:
                if cycle.stopping:
                    return
                cycle.sched = sched
            cycle.status = sched.run()
            cycle.outcomes = sched.outcomes
            try:
                cycle.new_map = build_map(cycle.project, cycle.graph, cycle.order, sched.steps)
            except Exception:
                cycle.new_map = None  # keep the map we have; the next load makes a new one
        except Exception as e:
            cycle.status = "failed"
            if isinstance(e, EltmakeError):
                cycle.error = str(e)
            else:
                cycle.error = (
                    f"internal error: {type(e).__name__}: {e} (a bug in eltmake or a plugin)"
                )
                if self.args.debug:
                    import traceback

                    traceback.print_exc(file=self.human)
            if sched is not None:
                cycle.outcomes = sched.outcomes
                if sched.run_id is not None and self.state is not None:
                    self.state.finish_run(sched.run_id, "failed")
            if reporter.open:
                reporter.build_finished("failed", cycle.outcomes)
        finally:
            lock.release()
            self.q.put(("done", cycle))

    def _finished(self, cycle: _Cycle, start_next: bool = True) -> None:
        if cycle is not self.cycle:
            return
        self.cycle = None
        if cycle.new_map is not None and cycle.project is self.project:
            self.map = cycle.new_map
            self.notifiers.sync(self.map.watched_top_dirs())
        self._summarize(cycle)
        if self.pending or self.reload_needed:
            if start_next:
                self._start_cycle(self._pending_list())
            return
        if start_next:
            self.say("watch: waiting for changes (Ctrl-C to stop)", "2")

    def _summarize(self, cycle: _Cycle) -> None:
        steps = {n for n in cycle.order if cycle.project.targets[n].kind is not None}
        by: dict[str, list[str]] = {}
        for n in cycle.order:
            o = cycle.outcomes.get(n)
            if o is not None and n in steps:
                by.setdefault(o.status, []).append(n)
        status = "superseded" if cycle.superseded and cycle.status != "ok" else cycle.status
        if cycle.error:
            status = "error"
        elapsed = time.monotonic() - cycle.started
        bits = []
        for key, word in (
            ("failed", "failed"),
            ("built", "re-ran"),
            ("cancelled", "cancelled"),
            ("upstream_failed", "not run (upstream failed)"),
            ("skipped", "skipped"),
        ):
            names = by.get(key, [])
            if names:
                shown = ", ".join(names[:SHOW_NAMES])
                if len(names) > SHOW_NAMES:
                    shown += f" and {len(names) - SHOW_NAMES} more"
                bits.append(f"{word} {shown}")
        verdict = {"ok": "ok", "failed": "FAILED", "superseded": "superseded by a new edit"}.get(
            status, status
        )
        line = f"watch: cycle {cycle.number} {verdict} in {elapsed:.2f}s"
        if bits:
            line += ": " + "; ".join(bits)
        style = {"ok": "32", "superseded": "33"}.get(status, "1;31")
        if cycle.error:
            self.say(f"watch: error: {cycle.error}", "1;31")
        self.say(line, style)
        self.event(
            {
                "event": "watch_result",
                "cycle": cycle.number,
                "status": status,
                "changed": cycle.changed,
                "ran": by.get("built", []),
                "skipped": by.get("skipped", []),
                "failed": by.get("failed", []),
                "cancelled": by.get("cancelled", []),
                "error": cycle.error or None,
                "duration_s": round(elapsed, 3),
            }
        )

    def _interrupt(self) -> None:
        """Ctrl-C: stop the build's process groups and wait for its thread, briefly."""
        cycle = self.cycle
        if cycle is None:
            return
        with cycle.lock:
            cycle.stopping = True
            sched = cycle.sched
        if sched is None or cycle.thread is None:
            return
        deadline = time.monotonic() + 10
        while cycle.thread.is_alive() and time.monotonic() < deadline:
            sched.interrupt()  # again: a step may have been starting at the first call
            cycle.thread.join(0.1)
        sched.procs.terminate(grace=0.0)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_watch(args: Any) -> int:
    """``eltmake watch``: see the module docstring."""
    return Watch(args).run()

"""What a recipe receives and returns: steps, tools, the run context and the result.

Plain dataclasses, so a plugin author can read the whole contract in one file (the recipe
interface itself is in :mod:`eltmake.recipe`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

    from eltmake.project import Project, Target
    from eltmake.store import Store


@dataclass(frozen=True)
class ToolSpec:
    """A tool that lives in its own virtual environment under ``.eltmake/tools/NAME``.

    ``pip_url`` is what to install (pip requirement syntax, several separated by spaces); with no
    ``pip_url`` the tool is an ``executable`` found on PATH or next to eltmake itself. A tool that
    ships with its plugin gives its own ``identity`` (e.g. the plugin's version) for step keys;
    other tools without a ``pip_url`` are identified by their executable file.
    """

    name: str
    pip_url: str | None
    executable: str
    plugin: str = ""
    identity: dict[str, Any] | None = None


@dataclass(frozen=True)
class Step:
    """One target with a recipe, as the scheduler sees it; made by :meth:`Recipe.make_step` and
    not changed afterwards.

    ``params`` is the recipe's own: what ``make_step`` works out once (a resolved tool name, a
    state id) so that later calls need not work it out again. Anything a recipe learns later
    (a parsed manifest) it keeps itself, keyed by what it depends on.
    """

    name: str
    kind: str
    target: Target
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    freshness: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # Steps that share a lock name never run at the same time: an embedded database file admits
    # one writer process (the DuckDB loader and dbt lock the file's path). From the target's
    # ``locks`` key, plus what the plugin adds.
    locks: list[str] = field(default_factory=list)


def path_lock(project: Project, path: str) -> str:
    """The lock name for a file (see :attr:`Step.locks`): its path relative to the project folder,
    normalised, so ``./warehouse.duckdb`` and ``warehouse.duckdb`` are one lock and a user can
    write ``locks = ["warehouse.duckdb"]`` on a step that reads the file."""
    full = os.path.normpath(os.path.join(project.root, os.path.expanduser(path)))
    rel = os.path.relpath(full, project.root)
    return full if rel.startswith("..") else rel


@dataclass
class StepResult:
    """What a successful run returns.

    ``fingerprint`` identifies what the step produced; downstream keys hold it (not this step's
    key), so a re-run that produces the same fingerprint leaves them skipped (early cutoff). When
    ``None``, the core uses the digest of the declared ``outputs`` files, or the step's key when it
    declares none. ``stats`` are shown in the summary and stored in the run history
    (e.g. ``{"records": 1200}``); keep them JSON-able and free of secrets.
    """

    fingerprint: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    # Lines the user should see even on success (a tool's deprecation warnings), where the rest
    # of the step's output shows only with -v.
    warnings: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """How a step ended, as shown to the user and sent as a ``--json`` event."""

    status: str  # built | skipped | failed | upstream_failed | cancelled
    reason: str = ""
    duration_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    tail: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BuildInfo:
    """The build in progress, handed to lifecycle hooks."""

    project: Project
    targets: list[str]
    run_id: int | None = None
    dry_run: bool = False
    full_refresh: bool = False
    # A cycle of ``eltmake watch``: more builds follow soon, so a plugin may start a warm tool
    # server now (see :attr:`StepContext.warm`).
    warm: bool = False


class StepContext:
    """Everything a running step may use. Created by the scheduler, one per step run.

    Child processes must be started with :meth:`popen`: each gets its own process group, which
    the core terminates on Ctrl-C, on cancellation (watch mode) and when the step fails.
    """

    def __init__(
        self,
        project: Project,
        step: Step,
        *,
        key: str,
        record: dict[str, Any] | None,
        state: Store,
        full_refresh: bool,
        log: Callable[[str], None],
        progress: Callable[[str], None],
        procs: Any,
        run_id: int | None = None,
        changed_inputs: list[str] | None = None,
        cancelled: threading.Event | None = None,
        warm: bool = False,
    ):
        self.project = project
        self.step = step
        self.key = key
        self.record = record  # the previous successful run's record, or None
        self.state = state
        self.full_refresh = full_refresh
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        # The build is a cycle of `eltmake watch`: more runs of this step will follow soon, so a
        # recipe may keep its tool warm between them (spawn_helper) instead of starting it cold.
        self.warm = warm
        self.run_id = run_id
        # The input files whose content differs from the last successful run, when nothing else
        # does (definition, upstream fingerprints, tool): a step that can run partially (dbt:
        # only the edited models and their descendants) may limit itself to them. ``None`` means
        # run the whole step: never built, forced, full refresh, or more than inputs changed.
        # Because it is measured against the last *recorded* run, edits made across failed or
        # cancelled runs (watch mode) accumulate instead of being lost.
        self.changed_inputs = changed_inputs
        self._log = log
        self._progress = progress
        self._procs = procs

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def env(self) -> dict[str, str]:
        """The environment for child processes: ours, plus the project's ``.env`` file."""
        return dict(self.project.environ)

    def log(self, line: str) -> None:
        """Show a line of the step's output (prefixed with the target's name)."""
        self._log(line)

    def progress(self, text: str) -> None:
        """Replace the step's one-line live status (records, rows per second...)."""
        self._progress(text)

    def popen(self, argv: list[str] | str, **kwargs: Any) -> subprocess.Popen:
        """Start a child process in its own process group, registered for cancellation.

        Takes the arguments of :class:`subprocess.Popen`; ``cwd`` defaults to the project root and
        ``env`` to :attr:`env`.
        """
        kwargs.setdefault("cwd", str(self.project.root))
        kwargs.setdefault("env", self.env)
        # The registry checks ``cancelled`` under the lock that cancellation takes, so a child
        # is either started before a cancel looks (and stopped by it) or not started at all.
        return self._procs.spawn(argv, owner=self, cancelled=self.cancelled, **kwargs)

    def private_dir(self) -> contextlib.AbstractContextManager[Path]:
        """A temporary folder only the owner can read, removed afterwards (for config files)."""
        return private_dir()


@contextmanager
def private_dir() -> Iterator[Path]:
    """A temporary folder only the owner can read, for config files that hold secrets.

    Removed when the block ends; if eltmake is killed first, the guard process removes it
    (:mod:`eltmake.procs`), and the next private folder made sweeps those of dead processes.
    Module-level too, for code that runs a tool outside a step (``eltmake invoke``, commands).
    """
    import shutil
    import tempfile

    from eltmake.procs import GUARD

    base = _private_base()
    path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
    os.chmod(path, 0o700)
    GUARD.keep_private(str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        GUARD.drop_private(str(path))


def _private_base() -> str | None:
    """``$TMPDIR/eltmake-UID``, ours alone (else None: the system's temporary folder), with the
    folders of processes that no longer exist swept away."""
    import shutil
    import tempfile

    from eltmake.procs import pid_alive

    base = os.path.join(tempfile.gettempdir(), f"eltmake-{os.getuid()}")
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        st = os.lstat(base)
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or not os.path.isdir(base):
            return None  # not ours alone: never put a secret there
        for name in os.listdir(base):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    except OSError:
        return None
    return base


@dataclass(frozen=True)
class Warehouse:
    """A database that steps write, declared by the plugin whose table configures it.

    ``type`` names the engine ("duckdb", "postgres"); ``settings`` holds what another plugin needs
    to reach it, never a password (``path`` for a file database, ``host``/``port``/``user``/
    ``database``/``schema`` for a server). ``locks`` are the lock names its writers share (a
    DuckDB file admits one writer process; a server needs none).
    """

    name: str
    type: str
    settings: dict[str, Any] = field(default_factory=dict)
    locks: list[str] = field(default_factory=list)

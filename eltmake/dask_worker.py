"""What runs on a Dask worker: one step of a build, exactly as the coordinator asked for it.

The coordinator (the ``eltmake build`` process, :mod:`eltmake.dask_executor`) decides, records
and writes history; a worker only runs steps. :func:`run_step` is the Dask task. It loads the
project from the same path (workers share the coordinator's filesystem), makes the step, installs
its tools when missing, and runs ``recipe.run(ctx)`` with a context whose

* output (``ctx.log``, ``ctx.progress``) goes back to the coordinator in batches while the step
  runs, as Dask worker events on a topic the coordinator subscribes to;
* state is the project's store opened here (the SQLite file under ``.eltmake/``), so a Singer
  bookmark reaches the store as the target commits it, not when the step ends;
* processes are stopped when the coordinator sets the run's Dask ``Event`` (Ctrl-C, an edit in
  watch mode): a Dask future's cancel cannot stop a running task, so the task watches the event
  itself and terminates its process groups.

Nothing here imports Dask at module level: the coordinator imports this module for its digests.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.digest import digest
from eltmake.errors import Cancelled, ConfigError, EltmakeError, StepError
from eltmake.procs import ProcessRegistry
from eltmake.project import PROJECT_FILE
from eltmake.redact import Redactor
from eltmake.step import StepContext, StepResult

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.recipe import Recipe
    from eltmake.step import Step
    from eltmake.store import Store

FLUSH_S = 0.05  # buffered output goes to the coordinator this often...
BATCH_BYTES = 16 * 1024  # ...or as soon as this much is buffered (10k lines/s = a few events/s)
CANCEL_POLL_S = 2.0  # one long-poll of the cancel event; a set event answers it at once
KILL_GRACE_S = 1.0  # SIGTERM, then SIGKILL after this: a cancelled step stops within a second
LOCK_POLL_S = 0.5  # how often a step waiting for a cluster lock checks for cancellation

# Per worker process: every step's children (terminated on cancel and at exit), and the loaded
# projects, keyed by folder and environment, valid while the project's files are unchanged.
_PROCS = ProcessRegistry()
_projects: dict[tuple[str, str | None], tuple[tuple, Project, dict[str, str]]] = {}
_projects_lock = threading.Lock()
atexit.register(lambda: _PROCS.terminate(grace=KILL_GRACE_S))


def dask_setup(worker: Any) -> None:
    """The preload of the local cluster's worker processes (``--executor dask``): a terminal's
    Ctrl-C goes to eltmake's whole process group, workers included; a worker killed by it would
    orphan its steps' processes, so it lets eltmake stop them instead. A handler, not SIG_IGN:
    the steps' own processes must not inherit an ignored SIGINT."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda signum, frame: None)


def table_digests(project: Project) -> dict[str, str]:
    """A digest per plugin table (``[extractors]``...), as this process resolved it (variables
    interpolated): the coordinator sends its own, and a worker that resolves the project
    differently (another environment variable, another ``.env``) refuses to run the step."""
    return {f"[{name}]": digest(value) for name, value in project.tables.items()}


def target_digest(project: Project, name: str) -> str | None:
    target = project.targets.get(name)
    return digest(target.config) if target is not None else None


class Channel:
    """One step run's output on its way to the coordinator: lines and the latest progress text,
    sent as one worker event per batch (never per line, so a chatty step does not flood the
    scheduler). Sent under the lock, so batches arrive in order."""

    def __init__(self, worker: Any, topic: str, token: str):
        self._worker = worker
        self._topic = topic
        self._token = token
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._size = 0
        self._progress: str | None = None

    def send(self, **fields: Any) -> None:
        self._worker.log_event(self._topic, {"eltmake": self._token, **fields})

    def log(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            self._size += len(line) + 1
            if self._size >= BATCH_BYTES:
                self._flush()

    def progress(self, text: str) -> None:
        with self._lock:
            self._progress = text

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._lines and self._progress is None:
            return
        fields: dict[str, Any] = {}
        if self._lines:
            fields["lines"] = self._lines
        if self._progress is not None:
            fields["progress"] = self._progress
        self._lines, self._size, self._progress = [], 0, None
        self.send(**fields)


class LazyState:
    """The project's store, opened on this worker at first use (a command step never opens it),
    read-only exactly when the build's own store is (a pull-request build writes nothing).

    That is the store the project configures: a shared one (``[project] store``,
    ``ELTMAKE_STORE``) works from any machine; the local SQLite file under ``.eltmake/`` is right
    for workers on the coordinator's machine, and for a shared disk whose locking SQLite can
    trust (not NFS)."""

    def __init__(self, project: Project, read_only: bool):
        self._project = project
        self._read_only = read_only
        self._store: Store | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._store is None:
                from eltmake.api import open_state

                self._store = open_state(self._project)
                self._store.read_only = self._read_only
        return getattr(self._store, name)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: run one step here and say how it ended.

    Never raises: Dask would wrap the error (and lose a StepError's tail), so the outcome comes
    back as ``{"ok": True, "fingerprint", "stats", "message"}`` or ``{"ok": False, "kind":
    "step" | "config" | "cancelled" | "internal", "message", "tail"}``. It is also sent as the
    run's last event, after its output: the coordinator then needs no round trip to fetch it.
    """
    from distributed import get_worker

    worker = get_worker()
    out = Channel(worker, spec["topic"], spec["token"])
    out.send(started=os.getpid())  # the coordinator learns where the step runs, before it does
    outcome = _outcome(spec, worker.address, out)
    out.flush()
    try:
        out.send(result=outcome)
    except TypeError:  # stats that msgpack cannot carry: the coordinator fetches the return value
        pass
    return outcome


def _outcome(spec: dict[str, Any], address: str, out: Channel) -> dict[str, Any]:
    mask = Redactor([])  # the step's secrets, once its recipe names them
    try:
        result = _run(spec, address, out, mask)
        return {
            "ok": True,
            "fingerprint": result.fingerprint,
            "stats": dict(result.stats),
            "message": mask(result.message),
        }
    except Cancelled as e:
        return {"ok": False, "kind": "cancelled", "message": str(e) or "cancelled"}
    except ConfigError as e:
        return {"ok": False, "kind": "config", "message": mask(str(e))}
    except EltmakeError as e:
        tail = [mask(line) for line in getattr(e, "tail", [])]
        return {"ok": False, "kind": "step", "message": mask(str(e)), "tail": tail}
    except BaseException as e:  # a bug in a recipe: one line, the traceback with --debug
        tail = traceback.format_exc().splitlines() if spec.get("debug") else []
        message = mask(f"{type(e).__name__}: {e}")
        return {"ok": False, "kind": "internal", "message": message, "tail": tail}


def _run(spec: dict[str, Any], address: str, out: Channel, mask: Redactor) -> StepResult:
    from distributed import Event, get_client

    from eltmake import __version__
    from eltmake.scheduler import make_steps
    from eltmake.store import store_url

    name = spec["target"]
    root = Path(spec["root"])
    if spec["version"] != __version__:
        raise StepError(
            f"{name}: Dask worker {address} runs eltmake {__version__}, this machine "
            f"{spec['version']}; install the same version on every worker"
        )
    if not (root / PROJECT_FILE).is_file():
        raise StepError(
            f"{name}: Dask worker {address} does not see the project at {root}; workers must "
            "see the project folder at the same path (a shared filesystem)"
        )
    client = get_client()
    cancel = Event(spec["cancel"], client=client)
    if cancel.is_set():  # cancelled before it started, or a retry after its worker died
        raise Cancelled("cancelled")
    project = _project(root, spec["env"], spec["digests"], name, address)
    if digest(store_url(project) or "") != spec["store"]:
        raise ConfigError(
            f"{name}: Dask worker {address} would keep state in another store than this machine "
            "(its ELTMAKE_STORE or [project] store differs); set the same store on every worker"
        )
    step = make_steps(project, [name])[name]
    recipe = project.recipes[step.kind]
    # The step's secrets, masked before its lines and errors leave this machine.
    mask.values = Redactor(recipe.secrets(project, step) or []).values
    state = LazyState(project, spec["read_only"])
    ctx = StepContext(
        project,
        step,
        key=spec["key"],
        record=spec["record"],
        state=state,  # type: ignore[arg-type]
        full_refresh=spec["full_refresh"],
        log=(lambda line: out.log(mask(line))) if mask else out.log,
        progress=out.progress,
        procs=_PROCS,
        run_id=spec["run_id"],
        changed_inputs=spec["changed_inputs"],
        cancelled=threading.Event(),
        warm=spec["warm"],
    )
    finished = threading.Event()
    threading.Thread(target=_flush_loop, args=(out, finished), daemon=True).start()
    threading.Thread(target=_watch, args=(cancel, ctx, finished), daemon=True).start()
    try:
        _install(project, recipe, step, ctx.log)
        with _cluster_locks(root, spec["locks"], ctx):
            result = recipe.run(ctx)
    finally:
        finished.set()
        state.close()
    return result if result is not None else StepResult()


def _flush_loop(out: Channel, finished: threading.Event) -> None:
    while not finished.wait(FLUSH_S):
        out.flush()


def _watch(cancel: Any, ctx: StepContext, finished: threading.Event) -> None:
    """Wait on the run's cancel event (a long poll the scheduler answers as soon as it is set);
    when set, refuse new children and terminate the step's process groups."""
    while not finished.is_set():
        try:
            if cancel.wait(timeout=CANCEL_POLL_S):
                break
        except Exception:  # the scheduler is gone: the coordinator fails the step itself
            return
    else:
        return
    ctx.cancelled.set()
    _PROCS.terminate(owner=ctx, grace=KILL_GRACE_S)


def _project(
    root: Path, env_name: str | None, digests: dict[str, str], name: str, address: str
) -> Project:
    """The project, loaded once per worker process while its files are unchanged (loading it
    costs more than a short step), and checked against the coordinator's digests."""
    from eltmake.project import load_project

    key = (str(root), env_name)
    differs: list[str] = []
    for attempt in (0, 1):  # a cached project that differs is loaded again once
        sig = _signature(root)
        with _projects_lock:
            hit = _projects.get(key)
            if hit is None or hit[0] != sig or attempt:
                try:
                    project = load_project(root, env_name=env_name)
                except ConfigError as e:
                    raise ConfigError(f"{name}: on Dask worker {address}: {e}") from None
                hit = (sig, project, table_digests(project))
                _projects[key] = hit
        project, tables = hit[1], hit[2]
        mine = {**tables, f"targets.{name}": target_digest(project, name)}
        differs = sorted(k for k in set(mine) | set(digests) if mine.get(k) != digests.get(k))
        if not differs:
            return project
    raise ConfigError(
        f"{name}: Dask worker {address} reads {differs[0]} of {root.name}/{PROJECT_FILE} "
        "differently from this machine (an environment variable or .env differs there?); a "
        "step must run with the configuration its key was made from"
    )


def _signature(root: Path) -> tuple:
    """What a cached project depends on: the project file, ``.env`` and local plugin files."""
    out: list[Any] = []
    for path in (root / PROJECT_FILE, root / ".env"):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    plugins = root / "plugins"
    if plugins.is_dir():
        out.extend(sorted((p.name, p.stat().st_mtime_ns) for p in plugins.glob("*.py")))
    return tuple(out)


def _install(project: Project, recipe: Recipe, step: Step, echo: Any) -> None:
    """Install the step's tools on this worker when missing: tools live in each user's cache
    folder (or ``ELTMAKE_TOOLS_DIR``), so a worker on another machine installs them once."""
    names = recipe.tools(project, step) or []
    if not names:
        return
    from eltmake import toolenv

    specs = toolenv.declared_tools(project)
    known = {s.name for s in specs}
    wanted = [n for n in names if n in known]
    if wanted:
        toolenv.ensure_installed(project, specs, wanted, echo=echo)


@contextmanager
def _cluster_locks(root: Path, names: list[str], ctx: StepContext) -> Iterator[None]:
    """Hold a Dask ``Lock`` per lock name for the whole step.

    The coordinator already never runs two steps that share a lock; these guard the cluster
    against a second coordinator (another build of the same project, from another machine)."""
    if not names:
        yield
        return
    from distributed import Lock

    held = []
    try:
        for lock_name in sorted(set(names)):
            lock = Lock(f"eltmake:{root}:{lock_name}")
            told = False
            while not lock.acquire(timeout=LOCK_POLL_S):
                if ctx.cancelled.is_set():
                    raise Cancelled("cancelled while waiting for a lock")
                if not told:
                    ctx.log(
                        f"waiting for the lock {lock_name!r}: another build on the cluster holds it"
                    )
                    told = True
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            try:
                lock.release()
            except Exception:  # its lease expires on the scheduler by itself
                pass

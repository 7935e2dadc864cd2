"""The store: state (bookmarks) under leases, step records, run history and artifacts, in one
place shared by every machine that builds a project.

Backends, chosen by URL (``[project] store`` or ``ELTMAKE_STORE``, the variable wins):

* the project's own folder, the default: SQLite in ``.eltmake/state.db`` (:mod:`eltmake.state`);
* PostgreSQL, ``postgresql://…`` (:mod:`eltmake.store_postgres`), a schema of its own;
* object storage through fsspec, ``s3://bucket/prefix``, ``gs://…``, ``file:///path``
  (:mod:`eltmake.store_objects`).

What holds on every backend (the contract of :class:`Store`):

* a state write is atomic: a reader sees the old value or the new, never half;
* a lease on a state id is exclusive per holder-run across machines, renewed while held, and
  expires :data:`LEASE_TTL_S` after its holder stops renewing (a holder on this machine that is
  known dead is taken over at once);
* records are scoped by environment (``--env``) and read in one round trip per build;
* ``read_only`` (``ELTMAKE_STORE_READONLY=1``, for untrusted pull-request builds) reads and
  writes nothing: state writes and leases are refused, records and history are not written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.errors import ConfigError, EltmakeError

if TYPE_CHECKING:
    from eltmake.project import Project

STORE_ENV = "ELTMAKE_STORE"
READONLY_ENV = "ELTMAKE_STORE_READONLY"
LEASE_TTL_S = 30.0  # a holder that stops renewing loses its lease this much later
RENEW_EVERY_S = LEASE_TTL_S / 3


class LeaseHeld(EltmakeError):
    """Another run holds the lease on a state id."""

    exit_code = 1


class StoreError(ConfigError):
    """The store cannot be used as it is (damaged, unreachable, refused): one line, exit 2."""


def holder() -> dict[str, Any]:
    """Who takes a lease: this host, its boot and pid namespace (so a pid is only ever compared
    on the machine and namespace it belongs to), this pid and its start time."""
    machine = os.uname().nodename
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            machine += ":" + f.read().strip()
        machine += ":" + os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    from eltmake.procs import _start_time

    return {
        "host": os.uname().nodename,
        "machine": machine,
        "pid": os.getpid(),
        "started": _start_time(os.getpid()),
    }


def holder_is_dead(row: dict[str, Any], me: dict[str, Any]) -> bool:
    """True only when the holder ran on this very machine and namespace and is gone (its pid
    absent, or reused by another process): then its lease need not wait for expiry."""
    if row.get("machine") != me["machine"] or row.get("pid") is None:
        return False
    from eltmake.procs import _start_time, pid_alive

    pid = int(row["pid"])
    if not pid_alive(pid):
        return True
    return row.get("started") is not None and _start_time(pid) != row["started"]


def describe_holder(row: dict[str, Any]) -> str:
    return f"pid {row.get('pid')} on {row.get('host')}"


class Store:
    """The operations every backend offers. Backends implement the ``_``-prefixed primitives;
    leases (renewal, messages), buffering of history rows and read-only mode live here."""

    url = ""
    read_only = False
    # Whether declared outputs are uploaded as artifacts: yes for a shared store (another
    # runner restores them), no for the project's own folder (the files are right there).
    shares_artifacts = True

    def __init__(self) -> None:
        self._me = holder()
        self._held: dict[str, str] = {}  # state id -> lease token, renewed by a thread
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._steps: list[tuple] = []

    # --- state ---------------------------------------------------------------------------------

    def get(self, state_id: str) -> Any:
        raise NotImplementedError

    def set(self, state_id: str, value: Any) -> None:
        self._writable("write state")
        self._set(state_id, json.dumps(value, sort_keys=True))

    def update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        """Read, change and write a value atomically (for per-stream merges)."""
        self._writable("write state")
        return self._update(state_id, fn)

    def clear(self, state_id: str) -> bool:
        self._writable("clear state")
        return self._clear(state_id)

    def list(self) -> list[tuple[str, float, int]]:
        """(state id, last update time, size of the JSON value in bytes), by name."""
        raise NotImplementedError

    def _set(self, state_id: str, text: str) -> None:
        raise NotImplementedError

    def _update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def _clear(self, state_id: str) -> bool:
        raise NotImplementedError

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(
                f"store {self.url} is read-only ({READONLY_ENV}=1): cannot {what}; a read-only "
                "build may only run steps that keep no state"
            )

    # --- leases --------------------------------------------------------------------------------

    @contextmanager
    def lease(self, state_id: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the only right to write ``state_id`` for the duration of the block.

        Exclusive per holder-run: a second ``lease()`` of the same id waits or is refused, even
        from this process. Renewed in the background while held. Raises :class:`LeaseHeld`
        naming the holder when another run still holds it after ``wait_s``.
        """
        self._writable(f"take the lease on {state_id!r}")
        token = os.urandom(16).hex()  # not uuid: it imports platform (70 ms of every start)
        deadline = time.monotonic() + wait_s
        while True:
            held_by = self._acquire(state_id, token)
            if held_by is None:
                break
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"state {state_id!r} is in use by another run ({held_by}); wait for it to "
                    f"finish (a lease lapses {LEASE_TTL_S:.0f} s after its holder stops), or "
                    f"remove it with `eltmake state unlock {state_id}` if you know it is gone"
                )
            time.sleep(0.2)
        with self._held_lock:
            self._held[state_id] = token
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_loop, daemon=True)
                self._renewer.start()
        try:
            yield
        finally:
            with self._held_lock:
                self._held.pop(state_id, None)
            self._release(state_id, token)

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            with self._held_lock:
                held = list(self._held.items())
            for state_id, token in held:
                try:
                    self._renew(state_id, token)
                except Exception:  # a passing outage: the next round tries again
                    pass

    LEASE_COLUMNS = ("owner", "host", "pid", "expires", "machine", "started")

    def _held_by(self, row: Any) -> str | None:
        """Who holds a lease, from a row of :attr:`LEASE_COLUMNS`; None when there is no row,
        it lapsed, or its holder is known dead (then it may be taken)."""
        if not row:
            return None
        held = dict(zip(self.LEASE_COLUMNS, row, strict=True))
        if held["expires"] > time.time() and not holder_is_dead(held, self._me):
            return describe_holder(held)
        return None

    def _lease_values(self, state_id: str, token: str) -> tuple:
        """A new lease as the values of (state_id, owner, host, pid, acquired, expires, machine,
        started)."""
        r = self._lease_row(token)
        return (state_id, token, r["host"], r["pid"], r["acquired"], r["expires"]) + (
            r["machine"],
            r["started"],
        )

    def _lease_row(self, token: str) -> dict[str, Any]:
        now = time.time()
        return {**self._me, "owner": token, "acquired": now, "expires": now + LEASE_TTL_S}

    def _acquire(self, state_id: str, token: str) -> str | None:
        """Take the lease, or return who holds it."""
        raise NotImplementedError

    def _renew(self, state_id: str, token: str) -> None:
        raise NotImplementedError

    def _release(self, state_id: str, token: str) -> None:
        raise NotImplementedError

    def leases(self) -> list[dict[str, Any]]:
        """Every lease: state_id, host, pid, acquired, expires."""
        raise NotImplementedError

    def unlock(self, state_id: str) -> bool:
        raise NotImplementedError

    # --- step records --------------------------------------------------------------------------

    def records(self, scope: str) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        if not self.read_only:
            self._put_record(scope, name, record)

    def forget_record(self, scope: str, name: str) -> bool:
        self._writable("forget a record")
        return self._forget_record(scope, name)

    def scopes(self) -> list[str]:
        """The environments that have records ("" for none): what ``store migrate`` copies."""
        raise NotImplementedError

    def _put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _forget_record(self, scope: str, name: str) -> bool:
        raise NotImplementedError

    # --- run history ---------------------------------------------------------------------------

    def start_run(self, command: str, targets: list[str], env: str | None = None) -> int:
        if self.read_only:
            return 0
        return self._start_run(command, targets, env)

    def finish_run(self, run_id: int, status: str) -> None:
        self.flush_steps()
        if not self.read_only and run_id:
            self._finish_run(run_id, status)

    def record_step(
        self,
        run_id: int,
        target: str,
        status: str,
        reason: str,
        started: float,
        ended: float,
        stats: dict[str, Any],
        error: str = "",
    ) -> None:
        """Buffered: skipped steps are written together with the next step that ran, or at the
        end of the run, so a no-op build of thousands of targets costs one write."""
        if self.read_only or not run_id:
            return
        stats_text = json.dumps(stats) if stats else "{}"
        self._steps.append((run_id, target, status, reason, started, ended, stats_text, error))
        if status != "skipped":
            self.flush_steps()

    def flush_steps(self) -> None:
        if self._steps:
            rows, self._steps = self._steps, []
            self._write_steps(rows)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        raise NotImplementedError

    def add_run(self, run: dict[str, Any], steps: list[dict[str, Any]]) -> int:
        """Copy a finished run, with its times and steps, from another store (``migrate``)."""
        self._writable("copy history")
        return self._add_run(run, steps)

    def _add_run(self, run: dict[str, Any], steps: list[dict[str, Any]]) -> int:
        """A backend that cannot set a run's times copies it as a run starting now."""
        from eltmake.storerows import steps_rows

        rid = self._start_run(
            run.get("command") or "build", run.get("targets") or [], run.get("env")
        )
        self._write_steps(steps_rows(rid, steps))
        self._finish_run(rid, run.get("status") or "?")
        return rid

    def run_steps(self, run_id: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _start_run(self, command: str, targets: list[str], env: str | None) -> int:
        raise NotImplementedError

    def _finish_run(self, run_id: int, status: str) -> None:
        raise NotImplementedError

    def _write_steps(self, rows: list[tuple]) -> None:
        raise NotImplementedError

    # --- artifacts (declared outputs, content-addressed) ----------------------------------------

    def has_artifact(self, digest: str) -> bool:
        raise NotImplementedError

    def put_artifact(self, digest: str, source: Path) -> None:
        raise NotImplementedError

    def get_artifact(self, digest: str, dest: Path) -> bool:
        raise NotImplementedError

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        try:
            self.flush_steps()
        except Exception:
            pass


def store_url(project: Project) -> str | None:
    """The configured store: ``ELTMAKE_STORE`` wins over ``[project] store``; None: the folder."""
    url = project.environ.get(STORE_ENV) or os.environ.get(STORE_ENV)
    return url or project.store or None


def open_store(project: Project, create: bool = True) -> Store | None:
    """The project's store; with ``create=False`` a project never built opens no local store
    (read-only commands create nothing) and gives None."""
    url = store_url(project)
    read_only = (project.environ.get(READONLY_ENV) or os.environ.get(READONLY_ENV) or "") not in (
        "",
        "0",
        "false",
    )
    if not url:
        from eltmake.state import StateStore

        path = project.state_dir / "state.db"
        if not create and not path.exists():
            return None
        store: Store = StateStore(path)
    elif url.startswith(("postgresql://", "postgres://")):
        from eltmake.store_postgres import PostgresStore

        store = PostgresStore(url, project.environ)
    elif "://" in url:
        from eltmake.store_objects import ObjectStore

        store = ObjectStore(url, project.environ)
    else:
        raise StoreError(
            f"store {url!r}: not a store URL; use postgresql://…, s3://bucket/prefix, gs://…, "
            "or file:///path (set in [project] store or ELTMAKE_STORE)"
        )
    store.read_only = read_only
    return store


def redact_url(url: str) -> str:
    """A store URL fit to show: no password."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username}:****@{host}" if parts.username else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url

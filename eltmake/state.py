"""Plugin state (e.g. Singer bookmarks), leases and the run history, in one SQLite file.

SQLite in WAL mode with ``synchronous=FULL``: every write is one transaction, so a ``kill -9`` of
eltmake at any instant leaves either the old or the new value, never a torn one. Leases live in the
same database as the state they guard, so two overlapping builds (a cron overlap, a developer and
CI) cannot both write one state id.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eltmake.errors import EltmakeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    state_id TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    state_id TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    acquired REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, ended REAL, status TEXT,
    command TEXT, targets TEXT);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    started REAL, ended REAL, stats TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id);
CREATE TABLE IF NOT EXISTS records (
    scope TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, parts TEXT,
    PRIMARY KEY (scope, name));
"""

LEASE_TTL_S = 6 * 3600.0  # a lease of a process on another host is trusted this long


class LeaseHeld(EltmakeError):
    """Another run holds the lease on a state id."""

    exit_code = 1


class StateStore:
    """Key → JSON value per state id (by default the target's name), atomic and durable."""

    def __init__(self, path: Path | str):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        for table, column in (("runs", "env"), ("records", "parts")):  # older stores
            cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in cols:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{id(self)}"
        self._steps: list[tuple] = []

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- state ---------------------------------------------------------------------------------

    def get(self, state_id: str) -> Any:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE state_id=?", (state_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def set(self, state_id: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO state(state_id, value, updated) VALUES (?, ?, ?)",
                (state_id, json.dumps(value, sort_keys=True), time.time()),
            )

    def update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        """Read, change and write a value in one transaction (for per-stream merges)."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM state WHERE state_id=?", (state_id,)).fetchone()
            value = fn(json.loads(row[0]) if row else None)
            db.execute(
                "INSERT OR REPLACE INTO state(state_id, value, updated) VALUES (?, ?, ?)",
                (state_id, json.dumps(value, sort_keys=True), time.time()),
            )
        return value

    def clear(self, state_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM state WHERE state_id=?", (state_id,))
        return cur.rowcount > 0

    def list(self) -> list[tuple[str, float, int]]:
        """(state id, last update time, size of the JSON value in bytes), by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state_id, updated, length(value) FROM state ORDER BY state_id"
            ).fetchall()
        return [tuple(r) for r in rows]

    # --- leases --------------------------------------------------------------------------------

    @contextmanager
    def lease(self, state_id: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the only right to write ``state_id`` for the duration of the block.

        A lease whose holder has died (same host, its pid gone) or expired is taken over. Raises
        :class:`LeaseHeld` naming the holder when another live run holds it after ``wait_s``.
        """
        deadline = time.monotonic() + wait_s
        while True:
            holder = self._try_acquire(state_id)
            if holder is None:
                break
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"state {state_id!r} is in use by another run ({holder}); "
                    "wait for it to finish, or clear a stale lease with `eltmake state unlock "
                    f"{state_id}`"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            with self._tx() as db:
                db.execute(
                    "DELETE FROM leases WHERE state_id=? AND owner=?", (state_id, self.owner)
                )

    def _try_acquire(self, state_id: str) -> str | None:
        host = os.uname().nodename
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, host, pid, expires FROM leases WHERE state_id=?", (state_id,)
            ).fetchone()
            if row and row[0] != self.owner:
                owner, lhost, pid, expires = row
                alive = _pid_alive(pid) if lhost == host else expires > now
                if alive:
                    return f"pid {pid} on {lhost}"
            db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                (state_id, self.owner, host, os.getpid(), now, now + LEASE_TTL_S),
            )
        return None

    def leases(self) -> dict[str, dict[str, Any]]:
        """The lease held on each state id (host, pid, since when), to show who holds it."""
        with self._lock:
            rows = self._db.execute("SELECT state_id, host, pid, acquired FROM leases").fetchall()
        return {r[0]: {"host": r[1], "pid": r[2], "acquired": r[3]} for r in rows}

    def unlock(self, state_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM leases WHERE state_id=?", (state_id,))
        return cur.rowcount > 0

    # --- step records (what each step produced; scoped by environment) ------------------------

    def records(self, scope: str) -> dict[str, dict[str, Any]]:
        """Every record of a scope, in one query (a no-op build reads them all at once).

        A record's ``parts`` (the key's parts, needed only to explain why a step runs) come as
        the JSON text they are stored as: decoding them for every skipped step would cost a
        no-op build of 10,000 targets a tenth of a second."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value, parts FROM records WHERE scope=?", (scope,)
            ).fetchall()
        out = {}
        for name, value, parts in rows:
            try:
                rec = json.loads(value)
            except ValueError:  # a damaged record: the step runs again and writes a good one
                continue
            if isinstance(rec, dict):
                rec["parts"] = parts
                out[name] = rec
        return out

    def put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        head = {k: v for k, v in record.items() if k != "parts"}
        parts = record.get("parts")
        if parts is not None and not isinstance(parts, str):
            parts = json.dumps(parts, separators=(",", ":"))
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO records(scope, name, value, parts) VALUES (?, ?, ?, ?)",
                (scope, name, json.dumps(head, separators=(",", ":")), parts),
            )

    def forget_record(self, scope: str, name: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM records WHERE scope=? AND name=?", (scope, name))
        return cur.rowcount > 0

    # --- run history ---------------------------------------------------------------------------

    def start_run(self, command: str, targets: list[str], env: str | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(started, status, command, targets, env) "
                "VALUES (?, 'running', ?, ?, ?)",
                (time.time(), command, json.dumps(targets), env),
            )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str) -> None:
        self.flush_steps()
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET ended=?, status=? WHERE id=?", (time.time(), status, run_id)
            )

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
        end of the run, so a no-op build of thousands of targets costs one transaction."""
        row = (
            run_id,
            target,
            status,
            reason,
            started,
            ended,
            json.dumps(stats) if stats else "{}",
            error,
        )
        self._steps.append(row)
        if status != "skipped":
            self.flush_steps()

    def flush_steps(self) -> None:
        if not self._steps:
            return
        with self._tx() as db:
            db.executemany("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._steps)
        self._steps.clear()

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT r.id, r.started, r.ended, r.status, r.command, r.targets, "
                "(SELECT COUNT(*) FROM steps s WHERE s.run_id=r.id AND s.status='built'), "
                "(SELECT COUNT(*) FROM steps s WHERE s.run_id=r.id AND s.status='skipped'), "
                "(SELECT COUNT(*) FROM steps s WHERE s.run_id=r.id AND s.status IN "
                "('failed','upstream_failed','cancelled')) "
                "FROM runs r ORDER BY r.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = [
            "id",
            "started",
            "ended",
            "status",
            "command",
            "targets",
            "built",
            "skipped",
            "failed",
        ]
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["targets"] = json.loads(r["targets"] or "[]")
        return out

    def run_steps(self, run_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT target, status, reason, started, ended, stats, error FROM steps "
                "WHERE run_id=? ORDER BY started",
                (run_id,),
            ).fetchall()
        keys = ["target", "status", "reason", "started", "ended", "stats", "error"]
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["stats"] = json.loads(r["stats"] or "{}")
        return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

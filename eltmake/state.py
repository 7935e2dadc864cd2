"""The local store: state, leases, step records and run history in one SQLite file,
``.eltmake/state.db`` (the default store; see :mod:`eltmake.store` for the contract).

SQLite in WAL mode with ``synchronous=FULL``: every write is one transaction, so a ``kill -9`` of
eltmake at any instant leaves either the old or the new value, never a torn one. The file is
created whole (schema written to a temporary file, then linked into place), so an existing empty
or foreign file is never taken for a new store: state is precious, and a damaged store is refused
with one line naming the file and the remedy instead of being silently reset.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

from eltmake import store as _store
from eltmake.store import (
    LeaseHeld,
    Store,
    StoreError,
)
from eltmake.storerows import (
    decode_records,
    encode_record,
    history_rows,
    run_row,
    step_rows,
    steps_rows,
)

__all__ = ["LeaseHeld", "StateStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    state_id TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    state_id TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    acquired REAL NOT NULL, expires REAL NOT NULL, machine TEXT, started INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, ended REAL, status TEXT,
    command TEXT, targets TEXT, env TEXT);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    started REAL, ended REAL, stats TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS steps_run ON steps(run_id);
CREATE TABLE IF NOT EXISTS records (
    scope TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, parts TEXT,
    PRIMARY KEY (scope, name));
"""
# The columns each table must have; older stores get the ones added since (ALTER TABLE).
COLUMNS = {
    "state": ["state_id", "value", "updated"],
    "leases": ["state_id", "owner", "host", "pid", "acquired", "expires", "machine", "started"],
    "runs": ["id", "started", "ended", "status", "command", "targets", "env"],
    "steps": ["run_id", "target", "status", "reason", "started", "ended", "stats", "error"],
    "records": ["scope", "name", "value", "parts"],
}
ADDED_LATER = {("runs", "env"), ("records", "parts"), ("leases", "machine"), ("leases", "started")}


def _guarded(method: Callable) -> Callable:
    """A damaged database found mid-build is one line naming the file, not a traceback."""

    @wraps(method)
    def wrapper(self: StateStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    return wrapper


class StateStore(Store):
    """The store in one SQLite file."""

    shares_artifacts = False  # the outputs are in the project folder already

    def __init__(self, path: Path | str):
        super().__init__()
        self.path = Path(path)
        self.url = str(self.path)
        self._lock = threading.RLock()
        self._db = self._open()

    # --- opening -------------------------------------------------------------------------------

    def _damaged(self, e: BaseException) -> StoreError:
        return StoreError(
            f"{self.path}: the state database is damaged ({e}); it holds the bookmarks, so "
            "eltmake will not reset it: restore it from a backup, or move it aside "
            f"(mv {self.path.name} {self.path.name}.damaged) to start again with no bookmarks"
        )

    def _open(self) -> sqlite3.Connection:
        from eltmake.files import ensure_dir

        folder = self.path.parent
        ensure_dir(folder)
        if self.path.is_dir():
            raise StoreError(
                f"{self.path}: is a folder, not eltmake's state database; move it aside "
                f"(mv {self.path} {self.path}.bak) and run eltmake again"
            )
        try:
            if not self.path.exists():
                self._create()
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the state database: {e}") from None
        if self.path.stat().st_size == 0:
            raise StoreError(
                f"{self.path}: is empty (0 bytes), so its bookmarks are gone; restore it from a "
                f"backup, or delete it (rm {self.path}) to start again with no bookmarks"
            )
        try:
            db = sqlite3.connect(
                str(self.path), timeout=30, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._check_schema(db)
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None
        return db

    def _create(self) -> None:
        """Write the schema to a temporary file and link it into place: a store is whole or
        absent, and two processes creating it at once end with one."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.new")
        try:
            db = sqlite3.connect(str(tmp))
            db.executescript(SCHEMA)
            db.commit()
            db.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first
        finally:
            tmp.unlink(missing_ok=True)

    def _check_schema(self, db: sqlite3.Connection) -> None:
        for table, columns in COLUMNS.items():
            have = [r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()]
            if not have:
                raise sqlite3.DatabaseError(f"table {table!r} is missing")
            for column in columns:
                if column in have:
                    continue
                if (table, column) not in ADDED_LATER:
                    raise sqlite3.DatabaseError(f"table {table!r} has no column {column!r}")
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_TYPES.get(column, 'TEXT')}")

    def close(self) -> None:
        super().close()
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

    def _decode(self, state_id: str, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise StoreError(
                f"{self.path}: the state of {state_id!r} is not JSON; set a good value with "
                f"`eltmake state set {state_id} JSON`, or `eltmake state clear {state_id}` to "
                "start that target again from no bookmark"
            ) from None

    # --- state ---------------------------------------------------------------------------------

    @_guarded
    def get(self, state_id: str) -> Any:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM state WHERE state_id=?", (state_id,)
            ).fetchone()
        return self._decode(state_id, row[0]) if row else None

    @_guarded
    def _set(self, state_id: str, text: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO state(state_id, value, updated) VALUES (?, ?, ?)",
                (state_id, text, time.time()),
            )

    @_guarded
    def _update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        with self._tx() as db:
            row = db.execute("SELECT value FROM state WHERE state_id=?", (state_id,)).fetchone()
            value = fn(self._decode(state_id, row[0]) if row else None)
            db.execute(
                "INSERT OR REPLACE INTO state(state_id, value, updated) VALUES (?, ?, ?)",
                (state_id, json.dumps(value, sort_keys=True), time.time()),
            )
        return value

    @_guarded
    def _clear(self, state_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM state WHERE state_id=?", (state_id,))
        return cur.rowcount > 0

    @_guarded
    def list(self) -> list[tuple[str, float, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state_id, updated, length(value) FROM state ORDER BY state_id"
            ).fetchall()
        return [tuple(r) for r in rows]

    # --- leases --------------------------------------------------------------------------------

    @_guarded
    def _acquire(self, state_id: str, token: str) -> str | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, host, pid, expires, machine, started FROM leases WHERE state_id=?",
                (state_id,),
            ).fetchone()
            held_by = self._held_by(row)
            if held_by:
                return held_by
            db.execute(
                "INSERT OR REPLACE INTO leases(state_id, owner, host, pid, acquired, expires, "
                "machine, started) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._lease_values(state_id, token),
            )
        return None

    @_guarded
    def _renew(self, state_id: str, token: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE leases SET expires=? WHERE state_id=? AND owner=?",
                (time.time() + _store.LEASE_TTL_S, state_id, token),
            )

    @_guarded
    def _release(self, state_id: str, token: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE state_id=? AND owner=?", (state_id, token))

    @_guarded
    def leases(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state_id, host, pid, acquired, expires FROM leases ORDER BY state_id"
            ).fetchall()
        keys = ["state_id", "host", "pid", "acquired", "expires"]
        return [dict(zip(keys, r, strict=True)) for r in rows]

    @_guarded
    def unlock(self, state_id: str) -> bool:
        self._writable(f"remove the lease on {state_id!r}")
        with self._tx() as db:
            cur = db.execute("DELETE FROM leases WHERE state_id=?", (state_id,))
        return cur.rowcount > 0

    # --- step records --------------------------------------------------------------------------

    @_guarded
    def records(self, scope: str) -> dict[str, dict[str, Any]]:
        """Every record of a scope, in one query (a no-op build reads them all at once).

        A record's ``parts`` (the key's parts, needed only to explain why a step runs) come as
        the JSON text they are stored as: decoding them for every skipped step would cost a
        no-op build of 10,000 targets a tenth of a second."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, value, parts FROM records WHERE scope=?", (scope,)
            ).fetchall()
        return decode_records(rows)

    @_guarded
    def _put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        value, parts = encode_record(record)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO records(scope, name, value, parts) VALUES (?, ?, ?, ?)",
                (scope, name, value, parts),
            )

    @_guarded
    def scopes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT scope FROM records")]

    @_guarded
    def _forget_record(self, scope: str, name: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM records WHERE scope=? AND name=?", (scope, name))
        return cur.rowcount > 0

    # --- run history ---------------------------------------------------------------------------

    @_guarded
    def _start_run(self, command: str, targets: list[str], env: str | None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(started, status, command, targets, env) "
                "VALUES (?, 'running', ?, ?, ?)",
                (time.time(), command, json.dumps(targets), env),
            )
        return int(cur.lastrowid)

    @_guarded
    def _finish_run(self, run_id: int, status: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET ended=?, status=? WHERE id=?", (time.time(), status, run_id)
            )

    @_guarded
    def _write_steps(self, rows: list[tuple]) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    @_guarded
    def _add_run(self, run: dict[str, Any], steps: list[dict[str, Any]]) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(started, ended, status, command, targets, env) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                run_row(run),
            )
            rid = int(cur.lastrowid)
            db.executemany(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", steps_rows(rid, steps)
            )
        return rid

    @_guarded
    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, started, ended, status, command, targets, env FROM runs "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            counts = self._db.execute(
                "SELECT run_id, status, COUNT(*) FROM steps WHERE run_id >= ? GROUP BY run_id, "
                "status",
                (rows[-1][0] if rows else 0,),
            ).fetchall()
        return history_rows(rows, counts)

    @_guarded
    def run_steps(self, run_id: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT target, status, reason, started, ended, stats, error FROM steps "
                "WHERE run_id=? ORDER BY started",
                (run_id,),
            ).fetchall()
        return step_rows(rows)

    # --- artifacts: files beside the database ---------------------------------------------------

    def _artifact(self, digest: str) -> Path:
        return self.path.parent / "artifacts" / digest[:2] / digest

    def has_artifact(self, digest: str) -> bool:
        return self._artifact(digest).is_file()

    def put_artifact(self, digest: str, source: Path) -> None:
        if self.read_only or self.has_artifact(digest):
            return
        dest = self._artifact(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def get_artifact(self, digest: str, dest: Path) -> bool:
        src = self._artifact(digest)
        if not src.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return True


_TYPES = {"pid": "INTEGER", "started": "INTEGER"}

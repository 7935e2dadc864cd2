"""The store in PostgreSQL: ``postgresql://user@host:port/db?schema=eltmake``.

A schema of its own (``eltmake`` unless the URL's ``schema`` parameter names another), the same
tables as the local store. The libpq variables (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``…) fill what the URL leaves out, so ``postgresql://`` alone works in
CI. Each operation is one transaction; a state id's read-change-write and its lease are
serialised with a transaction-level advisory lock on the id, so two runners never interleave.
A no-op build costs one connection and three round trips (records, run start, run end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from eltmake import store as _store
from eltmake.store import Store, StoreError, redact_url
from eltmake.storerows import (
    decode_records,
    encode_record,
    history_rows,
    run_row,
    step_rows,
    steps_rows,
)

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.state (
    state_id TEXT PRIMARY KEY, value TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.leases (
    state_id TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL,
    acquired DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, machine TEXT,
    started BIGINT);
CREATE TABLE IF NOT EXISTS {s}.runs (
    id BIGSERIAL PRIMARY KEY, started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION,
    status TEXT, command TEXT, targets TEXT, env TEXT);
CREATE TABLE IF NOT EXISTS {s}.steps (
    run_id BIGINT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    started DOUBLE PRECISION, ended DOUBLE PRECISION, stats TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS steps_run ON {s}.steps(run_id);
CREATE TABLE IF NOT EXISTS {s}.records (
    scope TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, parts TEXT,
    PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS {s}.artifacts (digest TEXT PRIMARY KEY, data BYTEA NOT NULL);
"""
_DDL_LOCK = 7_236_911  # an advisory lock id: two runners creating the schema take turns


class PostgresStore(Store):
    def __init__(self, url: str, environ: dict[str, str]):
        super().__init__()
        self.url = redact_url(url)
        conninfo, self.schema = _split(url)
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                f"store {self.url}: needs the PostgreSQL driver: pip install 'eltmake[postgres]'"
            ) from None
        self._errors = psycopg.Error
        import threading

        self._lock = threading.RLock()
        self._db = self._connect_with(psycopg, conninfo, environ)
        s = f'"{self.schema}"'
        try:
            with self._tx() as cur:
                cur.execute("SELECT to_regclass(%s)", (f"{s}.artifacts",))
                if cur.fetchone()[0] is None:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                    cur.execute(SCHEMA.format(s=s))
        except psycopg.Error as e:
            raise self._failed(f"cannot create the schema {self.schema!r}", e) from None
        self.s = s

    def _connect_with(self, psycopg: Any, conninfo: str, environ: dict[str, str]) -> Any:
        """Connect with the project's libpq variables (its .env included), not only ours: libpq
        reads them from the process environment, so they are set there for the connect only."""
        import os

        saved = {k: os.environ.get(k) for k in environ if k.startswith("PG")}
        os.environ.update({k: v for k, v in environ.items() if k.startswith("PG")})
        try:
            return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise self._failed("cannot connect", e) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _failed(self, what: str, e: BaseException) -> StoreError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return StoreError(f"store {self.url}: {what}: {first}")

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    yield cur
            except self._errors as e:
                raise self._failed("the store refused an operation", e) from None

    def close(self) -> None:
        super().close()
        with self._lock:
            self._db.close()

    # --- state ---------------------------------------------------------------------------------

    def _decode(self, state_id: str, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise StoreError(
                f"store {self.url}: the state of {state_id!r} is not JSON; set a good value with "
                f"`eltmake state set {state_id} JSON`, or `eltmake state clear {state_id}`"
            ) from None

    def get(self, state_id: str) -> Any:
        with self._tx() as cur:
            cur.execute(f"SELECT value FROM {self.s}.state WHERE state_id=%s", (state_id,))
            row = cur.fetchone()
        return self._decode(state_id, row[0]) if row else None

    def _set(self, state_id: str, text: str) -> None:
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO {self.s}.state(state_id, value, updated) VALUES (%s, %s, %s) "
                "ON CONFLICT (state_id) DO UPDATE SET value=EXCLUDED.value, updated=EXCLUDED.updated",
                (state_id, text, time.time()),
            )

    def _update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"state:{state_id}",))
            cur.execute(f"SELECT value FROM {self.s}.state WHERE state_id=%s", (state_id,))
            row = cur.fetchone()
            value = fn(self._decode(state_id, row[0]) if row else None)
            cur.execute(
                f"INSERT INTO {self.s}.state(state_id, value, updated) VALUES (%s, %s, %s) "
                "ON CONFLICT (state_id) DO UPDATE SET value=EXCLUDED.value, updated=EXCLUDED.updated",
                (state_id, json.dumps(value, sort_keys=True), time.time()),
            )
        return value

    def _clear(self, state_id: str) -> bool:
        with self._tx() as cur:
            cur.execute(f"DELETE FROM {self.s}.state WHERE state_id=%s", (state_id,))
            return cur.rowcount > 0

    def list(self) -> list[tuple[str, float, int]]:
        with self._tx() as cur:
            cur.execute(
                f"SELECT state_id, updated, length(value) FROM {self.s}.state ORDER BY state_id"
            )
            return [tuple(r) for r in cur.fetchall()]

    # --- leases --------------------------------------------------------------------------------

    def _acquire(self, state_id: str, token: str) -> str | None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"lease:{state_id}",))
            cur.execute(
                f"SELECT owner, host, pid, expires, machine, started FROM {self.s}.leases "
                "WHERE state_id=%s",
                (state_id,),
            )
            row = cur.fetchone()
            held_by = self._held_by(row)
            if held_by:
                return held_by
            cur.execute(
                f"INSERT INTO {self.s}.leases(state_id, owner, host, pid, acquired, expires, "
                "machine, started) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (state_id) DO UPDATE SET owner=EXCLUDED.owner, host=EXCLUDED.host, "
                "pid=EXCLUDED.pid, acquired=EXCLUDED.acquired, expires=EXCLUDED.expires, "
                "machine=EXCLUDED.machine, started=EXCLUDED.started",
                self._lease_values(state_id, token),
            )
        return None

    def _renew(self, state_id: str, token: str) -> None:
        with self._tx() as cur:
            cur.execute(
                f"UPDATE {self.s}.leases SET expires=%s WHERE state_id=%s AND owner=%s",
                (time.time() + _store.LEASE_TTL_S, state_id, token),
            )

    def _release(self, state_id: str, token: str) -> None:
        with self._tx() as cur:
            cur.execute(
                f"DELETE FROM {self.s}.leases WHERE state_id=%s AND owner=%s", (state_id, token)
            )

    def leases(self) -> list[dict[str, Any]]:
        with self._tx() as cur:
            cur.execute(
                f"SELECT state_id, host, pid, acquired, expires FROM {self.s}.leases "
                "ORDER BY state_id"
            )
            rows = cur.fetchall()
        keys = ["state_id", "host", "pid", "acquired", "expires"]
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def unlock(self, state_id: str) -> bool:
        with self._tx() as cur:
            cur.execute(f"DELETE FROM {self.s}.leases WHERE state_id=%s", (state_id,))
            return cur.rowcount > 0

    # --- step records --------------------------------------------------------------------------

    def records(self, scope: str) -> dict[str, dict[str, Any]]:
        with self._tx() as cur:
            cur.execute(f"SELECT name, value, parts FROM {self.s}.records WHERE scope=%s", (scope,))
            return decode_records(cur.fetchall())

    def _put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        value, parts = encode_record(record)
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO {self.s}.records(scope, name, value, parts) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (scope, name) DO UPDATE SET value=EXCLUDED.value, parts=EXCLUDED.parts",
                (scope, name, value, parts),
            )

    def scopes(self) -> list[str]:
        with self._tx() as cur:
            cur.execute(f"SELECT DISTINCT scope FROM {self.s}.records")
            return [r[0] for r in cur.fetchall()]

    def _forget_record(self, scope: str, name: str) -> bool:
        with self._tx() as cur:
            cur.execute(f"DELETE FROM {self.s}.records WHERE scope=%s AND name=%s", (scope, name))
            return cur.rowcount > 0

    # --- run history ---------------------------------------------------------------------------

    def _start_run(self, command: str, targets: list[str], env: str | None) -> int:
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO {self.s}.runs(started, status, command, targets, env) "
                "VALUES (%s, 'running', %s, %s, %s) RETURNING id",
                (time.time(), command, json.dumps(targets), env),
            )
            return int(cur.fetchone()[0])

    def _finish_run(self, run_id: int, status: str) -> None:
        with self._tx() as cur:
            cur.execute(
                f"UPDATE {self.s}.runs SET ended=%s, status=%s WHERE id=%s",
                (time.time(), status, run_id),
            )

    def _write_steps(self, rows: list[tuple]) -> None:
        with self._tx() as cur:
            cur.executemany(
                f"INSERT INTO {self.s}.steps VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows
            )

    def _add_run(self, run: dict[str, Any], steps: list[dict[str, Any]]) -> int:
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO {self.s}.runs(started, ended, status, command, targets, env) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                run_row(run),
            )
            rid = int(cur.fetchone()[0])
            cur.executemany(
                f"INSERT INTO {self.s}.steps VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                steps_rows(rid, steps),
            )
        return rid

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._tx() as cur:
            cur.execute(
                f"SELECT id, started, ended, status, command, targets, env FROM {self.s}.runs "
                "ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            rows = cur.fetchall()
            cur.execute(
                f"SELECT run_id, status, COUNT(*) FROM {self.s}.steps WHERE run_id >= %s "
                "GROUP BY run_id, status",
                (rows[-1][0] if rows else 0,),
            )
            counts = cur.fetchall()
        return history_rows(rows, counts)

    def run_steps(self, run_id: int) -> list[dict[str, Any]]:
        with self._tx() as cur:
            cur.execute(
                f"SELECT target, status, reason, started, ended, stats, error FROM {self.s}.steps "
                "WHERE run_id=%s ORDER BY started",
                (run_id,),
            )
            return step_rows(cur.fetchall())

    # --- artifacts -----------------------------------------------------------------------------

    def has_artifact(self, digest: str) -> bool:
        with self._tx() as cur:
            cur.execute(f"SELECT 1 FROM {self.s}.artifacts WHERE digest=%s", (digest,))
            return cur.fetchone() is not None

    def put_artifact(self, digest: str, source: Path) -> None:
        if self.read_only:
            return
        data = source.read_bytes()
        with self._tx() as cur:
            cur.execute(
                f"INSERT INTO {self.s}.artifacts(digest, data) VALUES (%s, %s) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, data),
            )

    def get_artifact(self, digest: str, dest: Path) -> bool:
        with self._tx() as cur:
            cur.execute(f"SELECT data FROM {self.s}.artifacts WHERE digest=%s", (digest,))
            row = cur.fetchone()
        if row is None:
            return False
        from eltmake.files import write_atomic

        write_atomic(dest, bytes(row[0]))
        return True


def _split(url: str) -> tuple[str, str]:
    """(the URL for libpq, without eltmake's own ``schema`` parameter; the schema)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "eltmake")
    if not schema.replace("_", "").isalnum():
        raise StoreError(
            f"store {redact_url(url)}: schema {schema!r} must be letters, digits and '_'"
        )
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    # Built by hand: urlunsplit drops the "//" of "postgresql:///" (an empty host: libpq's).
    conninfo = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
    return conninfo, schema

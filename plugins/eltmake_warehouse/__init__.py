"""Asking a warehouse what it holds, from eltmake's own process, and cheaply.

A step is skipped only while the warehouse still holds what it recorded: the Singer steps ask
whether the tables their streams were loaded into still exist, the dbt plugin whether the
relations its models built do (and fingerprints their rows). Both ask through this package: a
library the two built-in plugins share (it registers no hooks; the Singer plugin declares the
warehouses, :mod:`eltmake_singer.destinations`), as a user's plugins may share one.

DuckDB, on every no-op build, must cost next to nothing: importing duckdb (~0.1 s) and opening
the file cost more than a whole no-op build of a small project. So a small *verified-state
cache* (``.eltmake/warehouses.json``) keeps, per DuckDB file, its stat identity (size, mtime,
inode, ctime of the file and of its ``.wal``) and the relations found there at that identity: an
unchanged file costs two ``stat`` calls. Only when the file changed since it was last verified is
it opened, read-only, and its catalog read (never a table scan). A file written in the last two
seconds is not trusted to the cache (the same mtime tick could hide a second write, as in git).

DuckDB admits one writer process, and a read-only open fails while a writer holds the file. Then
this module waits briefly, and if the writer stays, answers from what it saw earlier (in this
process, or in the cache): a writer of the file holds it now, and a table it does not write
cannot disappear meanwhile. A deleted file is always seen (a ``stat``), so a removed warehouse is
never taken for an intact one.

PostgreSQL: psycopg 3, an optional extra (``pip install 'eltmake[postgres]'``), imported only
when a Postgres warehouse is asked; one query on the catalog answers which relations exist.
Connection failures become one line naming the setting (:class:`Unreachable`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake.api import Project

CACHE_FILE = "warehouses.json"
CACHE_VERSION = 1
RACY_S = 2.0  # a file written this recently may change again within the same mtime tick
BUSY_S = 2.0  # how long a check waits for another process's write lock on a DuckDB file
PG_INSTALL = "pip install 'eltmake[postgres]'"


class CannotCheck(Exception):
    """The warehouse cannot be asked now; the message says why, in one line."""


class Unreachable(CannotCheck):
    """A PostgreSQL server refused or could not be reached: bad input (host, user, password,
    database), said in one line naming the setting."""


def name_of(schema: str, name: str) -> str:
    return f"{schema}.{name}"


# --- DuckDB -----------------------------------------------------------------------------------


def duckdb_identity(path: Path) -> list[int] | None:
    """The stat identity of a DuckDB file and its write-ahead log; None when the file is missing.

    A change DuckDB has not checkpointed yet lives in the ``.wal`` beside the file, so its stat
    is part of the identity (0s when there is none)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    ident = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    try:
        wal = os.stat(f"{path}.wal")
        ident += [wal.st_size, wal.st_mtime_ns, wal.st_ino, wal.st_ctime_ns]
    except FileNotFoundError:
        ident += [0, 0, 0, 0]
    return ident


def _racy(ident: list[int]) -> bool:
    now = time.time()
    return now - ident[1] / 1e9 < RACY_S or (ident[5] and now - ident[5] / 1e9 < RACY_S)


# What this process saw per file: (identity or None when it moved while being read, relations).
_seen: dict[str, tuple[list[int] | None, set[str]]] = {}
_caches: dict[str, dict[str, Any]] = {}
_lock = threading.RLock()
_noted: set[str] = set()


def note_once(text: str) -> None:
    """A warning on stderr, once per process (a no-op build asks for every step)."""
    with _lock:
        if text in _noted:
            return
        _noted.add(text)
    print(f"eltmake: warning: {text}", file=sys.stderr, flush=True)


def _cache(project: Project) -> dict[str, Any]:
    key = str(project.state_dir)
    with _lock:
        data = _caches.get(key)
        if data is None:
            try:
                data = json.loads((project.state_dir / CACHE_FILE).read_bytes())
                if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
                    data = {}
            except (OSError, ValueError):
                data = {}
            data.setdefault("version", CACHE_VERSION)
            data.setdefault("duckdb", {})
            _caches[key] = data
        return data


def _save_cache(project: Project, data: dict[str, Any]) -> None:
    from eltmake.api import write_atomic

    write_atomic(project.state_dir / CACHE_FILE, json.dumps(data), best_effort=True)


def open_duckdb(path: Path, wait_s: float = BUSY_S) -> Any:
    """A read-only connection to a DuckDB file, waiting up to ``wait_s`` for a writer to let go.

    Raises :class:`CannotCheck` when the file stays locked or cannot be read."""
    import duckdb

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as e:
            text = str(e)
            locked = "lock" in text.lower()
            if not locked or time.monotonic() > deadline:
                first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
                raise CannotCheck(
                    f"{path.name} is held by another process that writes it" if locked else first
                ) from None
            time.sleep(0.1)
        except duckdb.Error as e:
            raise CannotCheck(f"{path.name}: {str(e).strip().splitlines()[0]}") from None


def _duckdb_relations(path: Path) -> set[str]:
    con = open_duckdb(path)
    try:
        rows = con.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    finally:
        con.close()
    return {name_of(s, n).lower() for s, n in rows}


def duckdb_missing(
    project: Project, path: Path, wanted: Iterable[tuple[str, str]], what: str = "tables"
) -> list[str]:
    """Which of ``wanted`` (schema, name) the DuckDB file at ``path`` lacks, as "schema.name".

    Every one when the file is missing. One ``stat`` when the file is as last verified; else a
    read-only look at its catalog. When another process holds the file for writing, the answer
    is what was seen last (see the module docstring), with a warning when nothing was."""
    want = {name_of(s, n): name_of(s, n).lower() for s, n in wanted}
    if not want:
        return []
    ident = duckdb_identity(path)
    if ident is None:
        return sorted(want)
    key = str(path)
    with _lock:
        cache = _cache(project)
        entry = cache["duckdb"].get(key)
        verified = set(entry["relations"]) if entry and entry.get("id") == ident else set()
        if set(want.values()) <= verified:
            return []
        seen = _seen.get(key)
        if seen is not None and seen[0] == ident:
            _verified(project, key, ident, {low for low in want.values() if low in seen[1]})
            return sorted(k for k, low in want.items() if low not in seen[1])
    try:
        present = _duckdb_relations(path)
    except CannotCheck as e:
        known = seen[1] if seen is not None else (set(entry["relations"]) if entry else None)
        if known is None:
            note_once(f"cannot check the {what} in {path.name} now ({e}); taken as they were")
            return []
        return sorted(k for k, low in want.items() if low not in known)
    after = duckdb_identity(path)
    with _lock:
        _seen[key] = (after if after == ident else None, present)
        if after == ident:
            _verified(project, key, ident, {low for low in want.values() if low in present})
    return sorted(k for k, low in want.items() if low not in present)


def _verified(project: Project, key: str, ident: list[int], found: set[str]) -> None:
    """Add ``found`` to the relations verified at ``ident`` (kept unless the file is racy)."""
    if _racy(ident) or not found:
        return
    cache = _cache(project)
    old = cache["duckdb"].get(key)
    if old and old.get("id") == ident:
        if found <= set(old["relations"]):
            return
        found = found | set(old["relations"])
    cache["duckdb"][key] = {"id": ident, "relations": sorted(found)}
    _save_cache(project, cache)


def forget_duckdb(path: Path) -> None:
    """Drop what this process saw of a file (after writing it ourselves, e.g. in tests)."""
    with _lock:
        _seen.pop(str(path), None)


# --- PostgreSQL -------------------------------------------------------------------------------


def pg_settings_text(settings: dict[str, Any]) -> str:
    return f"{settings.get('host') or 'localhost'}:{settings.get('port') or 5432}"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise CannotCheck(
            f"a PostgreSQL warehouse needs psycopg in eltmake's own environment (table checks, "
            f"row checksums, the connection check): {PG_INSTALL}"
        ) from None
    return psycopg


def pg_connect(
    settings: dict[str, Any],
    environ: dict[str, str],
    *,
    where: str,
    password: str | None = None,
    password_where: str = "PGPASSWORD",
) -> Any:
    """A psycopg connection (autocommit) to the server in ``settings`` (host, port, user,
    database), with ``password`` or else ``PGPASSWORD`` from the project's environment.

    ``where`` names the settings for messages ("loaders.postgres.config"). Raises
    :class:`Unreachable` with one line naming what to fix, :class:`CannotCheck` when psycopg is
    not installed."""
    psycopg = _psycopg()
    pw = password if password not in (None, "") else environ.get("PGPASSWORD", "")
    kwargs: dict[str, Any] = {
        "host": str(settings.get("host") or environ.get("PGHOST") or "localhost"),
        "port": str(settings.get("port") or environ.get("PGPORT") or 5432),
        "user": str(settings.get("user") or environ.get("PGUSER") or ""),
        "dbname": str(settings.get("database") or environ.get("PGDATABASE") or ""),
        "connect_timeout": int(environ.get("PGCONNECT_TIMEOUT") or 10),
        "application_name": "eltmake",
        "autocommit": True,
    }
    if pw:
        kwargs["password"] = pw
    for var, key in (("PGSSLMODE", "sslmode"), ("PGSSLROOTCERT", "sslrootcert")):
        if environ.get(var):
            kwargs[key] = environ[var]
    kwargs = {k: v for k, v in kwargs.items() if v != ""}
    try:
        return psycopg.connect(**kwargs)
    except psycopg.Error as e:
        raise Unreachable(
            describe_pg_error(str(e), kwargs, where, password_where, bool(pw))
        ) from None


def describe_pg_error(
    text: str, kw: dict[str, Any], where: str, password_where: str, had_password: bool
) -> str:
    """One line for a libpq connection error, naming the setting to fix."""
    server = f"PostgreSQL at {kw.get('host')}:{kw.get('port')}"
    low = text.lower()
    user, db = kw.get("user", ""), kw.get("dbname", "")
    if "password authentication failed" in low:
        return (
            f"{server} refused the password of user {user!r} ({password_where}): password "
            "authentication failed; check the password"
        )
    if "no password supplied" in low or ("password" in low and not had_password):
        return (
            f"{server} asks user {user!r} for a password, and none is set: export "
            f"{password_where} (eltmake never writes it to a file)"
        )
    if "database" in low and "does not exist" in low:
        return (
            f"database {db!r} does not exist on {server} ({where}.database, PGDATABASE): create "
            "it, or point the setting at one that exists"
        )
    if "role" in low and "does not exist" in low:
        return f"{server} has no user {user!r} ({where}.user, PGUSER): create it or fix the name"
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    if "failed:" in first:
        first = first.rsplit("failed:", 1)[1].strip()
    return (
        f"cannot reach {server} ({where}.host and .port, PGHOST and PGPORT): {first}; is the "
        "server running there?"
    )


def pg_missing(conn: Any, wanted: Iterable[tuple[str, str]]) -> list[str]:
    """Which of ``wanted`` (schema, name; exact, as the server stores them) do not exist as a
    table, view, materialized view, partitioned or foreign table: one catalog query."""
    pairs = sorted(set(wanted))
    if not pairs:
        return []
    rows = conn.execute(
        "select w.s, w.n from unnest(%s::text[], %s::text[]) as w(s, n) "
        "where not exists (select 1 from pg_class c join pg_namespace ns on ns.oid = c.relnamespace "
        "where ns.nspname = w.s and c.relname = w.n and c.relkind in ('r', 'v', 'm', 'p', 'f'))",
        [[p[0] for p in pairs], [p[1] for p in pairs]],
    ).fetchall()
    return sorted(name_of(s, n) for s, n in rows)


# One connection per server and process for the checks of a build (decisions run on one thread).
_pg_conns: dict[tuple, Any] = {}


def pg_missing_now(
    settings: dict[str, Any],
    environ: dict[str, str],
    wanted: Iterable[tuple[str, str]],
    *,
    where: str,
    password: str | None = None,
) -> list[str]:
    """:func:`pg_missing` over a connection shared by the decisions of this process (opened once
    per server; a connection that broke since, say in a long watch, is opened again once).
    Raises :class:`Unreachable` / :class:`CannotCheck` like :func:`pg_connect`."""
    psycopg = _psycopg()
    pw = password if password not in (None, "") else environ.get("PGPASSWORD", "")
    key = tuple(settings.get(k) for k in ("host", "port", "user", "database")) + (pw,)
    for attempt in (1, 2):
        with _lock:
            conn = _pg_conns.get(key)
        if conn is None or conn.closed:
            conn = pg_connect(settings, environ, where=where, password=password)
            with _lock:
                _pg_conns[key] = conn
        try:
            return pg_missing(conn, wanted)
        except psycopg.Error as e:
            with _lock:
                _pg_conns.pop(key, None)
            try:
                conn.close()
            except psycopg.Error:
                pass
            if attempt == 2:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise Unreachable(f"PostgreSQL at {pg_settings_text(settings)}: {first}") from None
    raise AssertionError("unreachable")

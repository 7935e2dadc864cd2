"""A throwaway PostgreSQL server for the test suite, and a fresh database per test.

Use it from a test module (or, later, from conftest.py) by importing the fixtures::

    from pgserver import pg_env, pg_server  # noqa: F401

    def test_load(pg_server, pg_env):
        # pg_env: {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"} of a new, empty
        # database, dropped after the test; pass it to a subprocess as its environment.
        subprocess.run(["target-postgres", ...], env={**os.environ, **pg_env}, check=True)
        assert pg_server.psql("select count(*) from raw.orders", dbname=pg_env["PGDATABASE"]) == "3"

``pg_server`` (session scope) is a :class:`PgServer`: where the server is, its superuser and
password, and :meth:`PgServer.psql` to run SQL there. It is started once per test session with
``initdb`` and ``postgres`` from PATH (or Debian's ``/usr/lib/postgresql/N/bin``), in a temporary
folder, on a free port on 127.0.0.1, with

* a known superuser (``eltmake``) and password; ``scram-sha-256`` on 127.0.0.1 (and ::1), so a
  wrong password is refused like on a real server; ``trust`` only on the unix socket, which lies
  in the temporary folder and which the fixture does not hand out;
* ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: the data is thrown away;
* locale C and UTF8, so server messages are in English whatever the machine's locale.

It stops at the end of the session, after failures too: the fixture's finalizer shuts it down
(immediate shutdown) and removes the folder. Should the test process die without running it
(SIGKILL, a crash), the postmaster gets SIGQUIT from the kernel as its parent-death signal (set with
``setpriv --pdeathsig``, or prctl), so no postgres process outlives the tests; folders of such dead
sessions are removed by the next one.

As root (CI runs as root), ``initdb`` and ``postgres`` refuse to run, so both run as the
``postgres`` user (the child process switches user itself: no ``su``/``runuser`` in between, which
would stand between the postmaster and its parent-death signal); the temporary folder is created
directly in the system temp folder (not pytest's ``tmp_path``, which is private to root) and
handed to that user.

``ELTMAKE_TEST_PG=postgresql://user:pass@host:port/db`` uses that server instead and starts
nothing (the user needs CREATEDB: each test gets its own database there too, dropped after it).

Where no server can be had (no ``initdb``, no ``postgres`` user as root, the server does not
start, ``ELTMAKE_TEST_PG`` unreachable, no ``psql``), the tests that use these fixtures are skipped
with the reason; with ``ELTMAKE_TEST_PG_REQUIRED=1`` they fail instead, so a CI that means to run
them cannot pass by skipping them.

Parallel tests (pytest-xdist ``-n auto``): one server per worker. The fixture is session-scoped,
and an xdist worker is its own session, so each worker starts its own server, lazily, only when
one of its tests asks for it. Sharing one server between workers would need a file lock plus a
count of the workers still using it to know who stops it last, and a server left running when the
last one dies; that saves ~1-2 s of start per worker (2 workers on the 2-core CI machines), and
costs ~40 MB each. Databases are per test anyway, so a shared server would isolate nothing more.
Ports come from the kernel (bind to port 0); should two workers still race for one, the loser
retries on another port.

Setup SQL runs through the ``psql`` client (a subprocess): the test process does not import a
PostgreSQL driver. Where ``psql`` is missing but ``psycopg`` (3) is importable, that is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

USER = "eltmake"
PASSWORD = "eltmake-test-pw"
ENV_URL = "ELTMAKE_TEST_PG"
ENV_REQUIRED = "ELTMAKE_TEST_PG_REQUIRED"
PREFIX = "eltmake-pg-"
START_TIMEOUT = 30.0
# libpq settings inherited from the developer's shell would redirect or break our connections.
_LIBPQ_VARS = re.compile(r"^PG[A-Z]+$")


class Unavailable(Exception):
    """No PostgreSQL server can be had here; the message says why."""


@dataclass
class PgServer:
    """Where the test server is, and how to reach it as its superuser."""

    host: str
    port: int
    user: str
    password: str
    dbname: str  # the maintenance database to connect to for CREATE/DROP DATABASE
    started: bool = False  # True: this session started it; False: ELTMAKE_TEST_PG
    datadir: Path | None = None
    logfile: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # sslmode etc. from the URL

    def env(self, dbname: str | None = None) -> dict[str, str]:
        """The libpq environment variables for database ``dbname`` (default: the maintenance one)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": dbname or self.dbname,
            **self.extra_env,
        }

    def url(self, dbname: str | None = None) -> str:
        """A libpq URL for ``dbname`` (password included: for configs, not for logs)."""
        from urllib.parse import quote

        host = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host}:{self.port}/{quote(dbname or self.dbname, safe='')}"
        )

    def psql(self, sql: str, dbname: str | None = None, check: bool = True) -> str:
        """Run ``sql`` in ``dbname``; return its output unaligned, tuples only, stripped
        (columns separated by ``|``, rows by newlines). Raises on an SQL error when ``check``."""
        return _run_sql(self.env(dbname), sql, check=check)

    def version(self) -> int:
        """``server_version_num``, e.g. 150014."""
        return int(self.psql("show server_version_num"))

    def log_tail(self, lines: int = 30) -> str:
        if self.logfile is None:
            return ""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- running SQL ------------------------------------------------------------------------------


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """``os.environ`` without any PG* variable, plus ``extra``: what a subprocess needs to reach
    exactly the server named in ``extra`` (and no ~/.pgpass or service file interferes)."""
    env = {k: v for k, v in os.environ.items() if not _LIBPQ_VARS.match(k)}
    env.update(extra)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return env


def _run_sql(pgenv: dict[str, str], sql: str, check: bool = True) -> str:
    psql = shutil.which("psql")
    if psql:
        proc = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            env=clean_env(pgenv),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()
    try:
        import psycopg  # noqa: PLC0415 - only where psql is missing
    except ImportError as e:
        raise Unavailable("neither the psql client nor psycopg is installed") from e
    kw = {
        "host": pgenv["PGHOST"],
        "port": pgenv["PGPORT"],
        "user": pgenv["PGUSER"],
        "password": pgenv["PGPASSWORD"],
        "dbname": pgenv["PGDATABASE"],
        "connect_timeout": 10,
    }
    if "PGSSLMODE" in pgenv:
        kw["sslmode"] = pgenv["PGSSLMODE"]
    try:
        with psycopg.connect(**kw, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                return ""
            return "\n".join("|".join("" if v is None else str(v) for v in r) for r in cur)
    except psycopg.Error as e:
        if check:
            raise RuntimeError(f"psycopg failed: {e}") from e
        return ""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- an external server (ELTMAKE_TEST_PG) ----------------------------------------------------


def from_url(url: str) -> PgServer:
    """A :class:`PgServer` for a libpq URL ``postgresql://user:pass@host:port/db?sslmode=...``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise Unavailable(f"{ENV_URL} must be a postgresql:// URL, not {url.split(':')[0]!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host") or "127.0.0.1"
    try:
        port = parts.port or int(query.get("port", 5432))
    except ValueError as e:
        raise Unavailable(f"{ENV_URL}: bad port: {e}") from e
    user = unquote(parts.username or "") or query.get("user") or "postgres"
    extra = {}
    for key, var in (("sslmode", "PGSSLMODE"), ("connect_timeout", "PGCONNECT_TIMEOUT")):
        if key in query:
            extra[var] = query[key]
    return PgServer(
        host=host,
        port=port,
        user=user,
        password=unquote(parts.password or "") or query.get("password", ""),
        dbname=unquote(parts.path.lstrip("/")) or query.get("dbname") or "postgres",
        extra_env=extra,
    )


# --- a server of our own ---------------------------------------------------------------------


def find_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres``: from PATH, else Debian's newest."""
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent
        if (bindir / "postgres").is_file():
            return bindir
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if found:
        return found[-1].parent
    raise Unavailable("no PostgreSQL server binaries (initdb) on PATH or in /usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> tuple[int, int] | None:
    """``(uid, gid)`` of the ``postgres`` user when we are root (the server refuses root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
    raise Unavailable("running as root and there is no 'postgres' user to run the server as")


def _reachable_by_others(path: Path) -> bool:
    """Whether every folder above ``path`` lets another user through (o+x)."""
    for parent in path.resolve().parents:
        try:
            if not parent.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _base_dir(as_other_user: bool) -> Path:
    base = Path(tempfile.gettempdir())
    # The socket path (base/PREFIX.../sock/.s.PGSQL.NNNNN) must fit in 107 bytes.
    if (as_other_user and not _reachable_by_others(base / "x")) or len(str(base)) > 60:
        base = Path("/tmp")
    return base


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(base: Path) -> None:
    """Remove folders left by test sessions that died (their owner process is gone)."""
    for d in base.glob(PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(d, ignore_errors=True)


def _pdeathsig() -> tuple[list[str], dict]:
    """How to give the postmaster SIGQUIT (immediate shutdown) when the test process's thread that
    started it ends, however it ends: ``setpriv --pdeathsig`` (util-linux) in front of the
    command, else prctl() in a ``preexec_fn`` (not safe in every threaded program, hence second).
    Both act after the switch to the ``postgres`` user, which would clear the setting."""
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "QUIT", "--"], {}
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return [], {}
    pr_set_pdeathsig = 1

    def die_with_parent() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGQUIT), 0, 0, 0)

    return [], {"preexec_fn": die_with_parent}


class LocalServer:
    """A postmaster of our own in a temporary folder (see the module docstring)."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.ids = _run_as()
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        base = _base_dir(self.ids is not None)
        remove_stale(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{worker}-", dir=base))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.sockdir.mkdir(mode=0o700)
        self.datadir.mkdir(mode=0o700)  # initdb takes an empty folder
        if self.ids is not None:
            # The folder stays root's (so a server cannot remove the owner file); the user may
            # pass through it, and owns data/ and sock/.
            os.chmod(self.root, 0o711)
            for d in (self.datadir, self.sockdir):
                os.chown(d, *self.ids)

    def _user_kw(self) -> dict:
        if self.ids is None:
            return {}
        uid, gid = self.ids
        return {"user": uid, "group": gid, "extra_groups": []}

    def _child_env(self) -> dict[str, str]:
        env = clean_env({})
        env.pop("PGCONNECT_TIMEOUT", None)
        env.update({"LC_ALL": "C", "LANG": "C", "TZ": "UTC"})
        if self.ids is not None:
            env["HOME"] = str(self.root)
        return env

    def initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.ids is not None:
            os.chown(pwfile, *self.ids)
        os.chmod(pwfile, 0o600)
        proc = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=self.root,
            env=self._child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            **self._user_kw(),
        )
        pwfile.unlink()
        if proc.returncode != 0:
            raise Unavailable(
                f"initdb failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}"
            )

    def start(self) -> None:
        last = ""
        for _attempt in range(4):
            self.port = _free_port()
            try:
                self._start_once()
                return
            except Unavailable as e:
                last = str(e)
                if "already in use" not in last and "could not create any TCP/IP" not in last:
                    raise
        raise Unavailable(last)

    def _start_once(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockdir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "40",
            "shared_buffers": "32MB",
            "max_wal_size": "1GB",
            "lc_messages": "C",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        prefix, deathsig_kw = _pdeathsig()
        args = [*prefix, str(self.bindir / "postgres"), "-D", str(self.datadir)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=self.root,
                env=self._child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C goes to pytest, which stops it
                **deathsig_kw,
                **self._user_kw(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        pidfile = self.datadir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(
                    f"postgres exited with code {self.proc.returncode} at start:\n{self._log()}"
                )
            with contextlib.suppress(OSError, IndexError):
                # Line 8 of postmaster.pid is the postmaster's status: "ready" once it accepts
                # connections (what pg_ctl -w waits for).
                if pidfile.read_text().splitlines()[7].strip() == "ready":
                    return
            time.sleep(0.02)
        self.stop()
        raise Unavailable(f"postgres did not start within {START_TIMEOUT:.0f} s:\n{self._log()}")

    def _log(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # Immediate shutdown: nothing here is worth a checkpoint.
        for sig, wait in ((signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def server(self) -> PgServer:
        return PgServer(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            dbname="postgres",
            started=True,
            datadir=self.datadir,
            logfile=self.logfile,
        )


def _unavailable(reason: str) -> None:
    if os.environ.get(ENV_REQUIRED, "") not in ("", "0"):
        pytest.fail(f"PostgreSQL required ({ENV_REQUIRED}) but unavailable: {reason}")
    pytest.skip(f"no PostgreSQL server: {reason}")


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """A :class:`PgServer` for the whole ``with`` block: ``ELTMAKE_TEST_PG``'s, or one started
    here and stopped on leaving. Raises :class:`Unavailable` when none can be had."""
    url = os.environ.get(ENV_URL, "").strip()
    if url:
        server = from_url(url)
        try:
            server.psql("select 1")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"{ENV_URL} server: {e}") from e
        yield server
        return
    local = LocalServer()
    try:
        local.initdb()
        local.start()
        server = local.server()
        try:
            server.psql("select 1")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"started, but a login failed: {e}\n{server.log_tail()}") from e
        yield server
    finally:
        local.cleanup()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (one per xdist worker); skips where none can be had."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_server())
        except Unavailable as e:
            _unavailable(str(e))
        yield server


_counter = 0


def database_name(test_name: str) -> str:
    """A unique, valid database name mentioning the test (at most 63 bytes)."""
    global _counter
    _counter += 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "m")
    slug = re.sub(r"[^a-z0-9_]+", "_", test_name.lower()).strip("_")[:32]
    return f"t_{worker}_{_counter}_{secrets.token_hex(3)}_{slug}"[:63]


def create_database(server: PgServer, name: str) -> None:
    server.psql(f"create database {quote_ident(name)} template template0 encoding 'UTF8'")


def drop_database(server: PgServer, name: str) -> None:
    """Drop ``name``, ending the connections a test left open (PostgreSQL 13+: WITH (FORCE))."""
    ident = quote_ident(name)
    try:
        server.psql(f"drop database if exists {ident} with (force)")
    except RuntimeError:
        server.psql(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            f"where datname = '{name}' and pid <> pg_backend_pid()",
            check=False,
        )
        server.psql(f"drop database if exists {ident}", check=False)


@pytest.fixture
def pg_env(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A new, empty database for this test, dropped after it, as libpq environment variables:
    ``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE`` (plus ``PGSSLMODE`` when
    ``ELTMAKE_TEST_PG`` names one). The user is the server's superuser (or ``ELTMAKE_TEST_PG``'s
    user) and owns the database."""
    name = database_name(request.node.name)
    create_database(pg_server, name)
    try:
        yield pg_server.env(name)
    finally:
        drop_database(pg_server, name)

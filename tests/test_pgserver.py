"""The throwaway PostgreSQL server of tests/pgserver.py: it starts, checks passwords, hands each
test an empty database, and leaves no postgres process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pgserver
import pytest
from pgserver import PgServer, clean_env, create_database, drop_database

# The fixtures, until conftest.py imports them for every test module.
pg_server = pgserver.pg_server
pg_env = pgserver.pg_env

needs_psql = pytest.mark.skipif(shutil.which("psql") is None, reason="no psql client")


def psql(env: dict[str, str], sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-c", sql],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_server_starts(pg_server: PgServer):
    assert pg_server.psql("select 1") == "1"
    assert pg_server.version() >= 100000
    if pg_server.started:
        assert pg_server.psql("show fsync") == "off"
        assert pg_server.psql("show password_encryption") == "scram-sha-256"


@needs_psql
def test_password_login_and_refusal(pg_server: PgServer, pg_env: dict[str, str]):
    assert set(pg_env) >= {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    ok = psql(pg_env, "select current_user, current_database()")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{pg_env['PGUSER']}|{pg_env['PGDATABASE']}"

    wrong = psql({**pg_env, "PGPASSWORD": "not-the-password"}, "select 1")
    if wrong.returncode == 0:
        pytest.skip("this server lets the user in without checking the password")
    assert wrong.returncode == 2
    # psql: error: connection to server at "127.0.0.1", port 41234 failed: FATAL:  password
    # authentication failed for user "eltmake"
    assert f'password authentication failed for user "{pg_env["PGUSER"]}"' in wrong.stderr


def test_fresh_database_is_empty(pg_server: PgServer, pg_env: dict[str, str]):
    db = pg_env["PGDATABASE"]
    assert db != pg_server.dbname
    relations = pg_server.psql(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname not in ('pg_catalog', 'information_schema') "
        "and n.nspname not like 'pg_toast%'",
        dbname=db,
    )
    assert relations == "0"
    pg_server.psql("create schema raw; create table raw.t (id int primary key)", dbname=db)
    assert pg_server.psql("select count(*) from raw.t", dbname=db) == "0"


def test_create_and_drop_database(pg_server: PgServer):
    name = "t_pgserver_create_drop"
    drop_database(pg_server, name)
    create_database(pg_server, name)
    exists = "select count(*) from pg_database where datname = 't_pgserver_create_drop'"
    assert pg_server.psql(exists) == "1"
    drop_database(pg_server, name)
    assert pg_server.psql(exists) == "0"


def test_no_server_left_when_the_test_process_is_killed(pg_server: PgServer):
    """A test process killed with SIGKILL (no finalizer runs) takes its postmaster with it."""
    if not pg_server.started:
        pytest.skip("ELTMAKE_TEST_PG names a server: this session started none")
    script = textwrap.dedent(
        """
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from pgserver import running_server
        with running_server() as s:
            print(s.datadir, flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = ""
    try:
        line = child.stdout.readline().strip()
        assert line, child.stderr.read()
        datadir = Path(line)
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid), f"postmaster {pid} outlived the killed test process"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if line:
            shutil.rmtree(Path(line).parent, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has not been reaped yet, but is no server either.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False

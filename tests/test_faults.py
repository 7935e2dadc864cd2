"""Damaged or hostile files in ``.eltmake/``: the cache is disposable (set aside with a warning,
the build goes on), state is precious (refused with one line naming the file and the remedy,
exit 2, never silently reset). No case is ever an internal error."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

PROJECT = """
[targets.a]
run = "echo a > a.txt"
outputs = ["a.txt"]
"""


def built(project):
    project.toml(PROJECT)
    project.run("build", check=True)
    project.run("state", "set", "orders", '{"bookmarks": {"orders": {"id": 5}}}', check=True)
    return project.root / ".eltmake"


def one_line(proc) -> str:
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def garbage(path):
    path.write_bytes(b"\x00garbage, not what eltmake wrote\n" * 40)


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 3)])


def empty(path):
    path.write_bytes(b"")


def folder(path):
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


def wrong_schema(path):
    con = sqlite3.connect(path)
    con.execute("DROP TABLE state")
    con.execute("CREATE TABLE state (state_id TEXT PRIMARY KEY, other TEXT)")
    con.commit()
    con.close()


def bad_value(path):
    con = sqlite3.connect(path)
    con.execute("UPDATE state SET value = '{not json' WHERE state_id = 'orders'")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (garbage, "the state database is damaged"),
        (truncated, "the state database is damaged"),
        (empty, "is empty (0 bytes)"),
        (folder, "is a folder, not eltmake's state database"),
        (wrong_schema, "the state database is damaged"),
    ],
)
def test_a_damaged_state_database_is_refused_not_reset(project, damage, needle):
    state_dir = built(project)
    db = state_dir / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        (state_dir / extra).unlink(missing_ok=True)
    damage(db)
    for args in (["build"], ["state", "list"], ["runs"], ["status"]):
        proc = project.run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_line(proc)
        assert needle in line and "state.db" in line
    # The remedy it names works: moved aside, the next build starts with no bookmarks.
    shutil.move(db, state_dir / "state.db.damaged")
    project.run("build", check=True)
    assert "no state stored" in project.run("state", "list", check=True).stdout


def test_a_state_value_that_is_not_json_names_the_id_and_the_remedy(project):
    db = built(project) / "state.db"
    bad_value(db)
    proc = project.run("state", "show", "orders")
    assert proc.returncode == 2
    line = one_line(proc)
    assert "'orders' is not JSON" in line and "eltmake state clear orders" in line
    project.run("state", "clear", "orders", check=True)
    project.run("state", "list", check=True)


@pytest.mark.parametrize("damage", [garbage, truncated, empty, folder])
def test_a_damaged_cache_is_set_aside_and_rebuilt(project, damage):
    state_dir = built(project)
    cache_db = state_dir / "cache" / "cache.db"
    damage(cache_db)
    proc = project.run("build", "--plain", check=True)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    if damage is not empty:  # an empty SQLite file is simply an empty cache
        assert "warning: the file-digest cache" in proc.stdout
        assert list(state_dir.glob("cache.damaged-*"))
    again = project.run("build", "--plain", check=True)  # the new cache works
    assert "warning" not in again.stdout and "1 skipped" in again.stdout


@pytest.mark.parametrize("name", ["graph.json", "project.json"])
@pytest.mark.parametrize("content", [b"garbage", b"[1, 2]", b"null", b'{"tag": 1}'])
def test_damaged_parse_caches_are_parsed_again(project, name, content):
    state_dir = built(project)
    (state_dir / name).write_bytes(content)
    proc = project.run("build", "--plain", check=True)
    assert "1 skipped" in proc.stdout


def test_eltmake_folder_being_a_file_is_one_line(project):
    project.toml(PROJECT)
    (project.root / ".eltmake").write_text("not a folder")
    for args in (["build"], ["state", "set", "x", "{}"], ["watch"]):
        proc = project.run(*args, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "is a file, not eltmake's folder" in one_line(proc)


def test_the_lock_being_a_folder_is_one_line(project):
    state_dir = built(project)
    (state_dir / "lock").unlink()
    (state_dir / "lock").mkdir()
    proc = project.run("build")
    assert proc.returncode == 2 and "cannot open the project lock" in one_line(proc)


def test_no_pickle_is_read_from_eltmake_folder(project):
    """Every cache eltmake reads back is JSON (or SQLite): a planted pickle runs nothing."""
    state_dir = built(project)
    for path in state_dir.rglob("*"):
        if path.is_file() and path.suffix in (".pickle", ".pkl"):
            raise AssertionError(f"{path} is a pickle")
    graph = json.loads((state_dir / "graph.json").read_text())
    assert graph["order"] == ["a"]


TAP = """\
#!/usr/bin/env python3
import json, sys, time
args = sys.argv[1:]
start = 0
if "--state" in args:
    start = json.load(open(args[args.index("--state") + 1]))["bookmarks"]["items"]["id"]
print(json.dumps({"type": "SCHEMA", "stream": "items", "key_properties": ["id"],
    "schema": {"properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}}))
for i in range(start + 1, 2001):
    print(json.dumps({"type": "RECORD", "stream": "items", "record": {"id": i, "v": f"v{i}"}}))
    if i % 50 == 0:
        print(json.dumps({"type": "STATE", "value": {"bookmarks": {"items": {"id": i}}}}),
              flush=True)
        time.sleep(0.02)
print(json.dumps({"type": "STATE", "value": {"bookmarks": {"items": {"id": 2000}}}}))
"""


@pytest.mark.parametrize("kill_after", [100, 700, 1500])
def test_kill_9_during_a_singer_load_loses_and_repeats_nothing(project, kill_after):
    """eltmake killed while a tap streams into eltmake-target-duckdb, once the saved bookmark
    has passed ``kill_after``: the bookmark is never past what the warehouse holds, and the next
    build leaves every record in the warehouse exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    from eltmake.state import StateStore

    project.toml(
        """
        [extractors.tap]
        executable = "./tap.py"
        capabilities = ["state"]

        [loaders.duckdb]
        executable = "eltmake-target-duckdb"
        config = { path = "warehouse.duckdb", default_target_schema = "raw", batch_size_rows = 40 }

        [targets.items]
        extract = "tap"
        load = "duckdb"
        """
    )
    (project.root / "tap.py").write_text(TAP)
    (project.root / "tap.py").chmod(0o755)
    build = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build", "--plain"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    db = project.root / ".eltmake" / "state.db"

    def bookmark() -> int:
        if not db.exists():
            return 0
        store = StateStore(db)
        try:
            value = store.get("items") or {}
        finally:
            store.close()
        return value.get("bookmarks", {}).get("items", {}).get("id", 0)

    deadline = time.monotonic() + 120
    while bookmark() < kill_after:
        if build.poll() is not None:
            raise AssertionError(f"the load ended first: {build.stdout.read()}")
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    mark = bookmark()

    def ids() -> list[int]:
        con = duckdb.connect(str(project.root / "warehouse.duckdb"), read_only=True)
        try:
            return [r[0] for r in con.execute("select id from raw.items order by id").fetchall()]
        finally:
            con.close()

    deadline = time.monotonic() + 30
    while True:  # the guard stops the loader: wait until the file can be opened
        try:
            loaded = ids()
            break
        except duckdb.IOException:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert loaded and mark <= max(loaded)  # state never past the warehouse
    project.run("build", check=True)
    assert ids() == list(range(1, 2001))  # nothing lost, nothing twice

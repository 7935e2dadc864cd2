"""The store's contract, on every backend that can be had here: the local SQLite file and a
real PostgreSQL server (started by the test session)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from eltmake.store import LeaseHeld, StoreError


def _postgres(pg_env, schema="eltmake"):
    from eltmake.store_postgres import PostgresStore

    # libpq variables fill what the URL leaves out, as in CI.
    return lambda: PostgresStore(f"postgresql:///?schema={schema}", dict(pg_env))


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    if request.param == "sqlite":
        from eltmake.state import StateStore

        path = tmp_path / "state.db"
        factory = lambda: StateStore(path)  # noqa: E731
    else:
        pg_env = request.getfixturevalue("pg_env")
        factory = _postgres(pg_env)
    opened = []

    def make():
        s = factory()
        opened.append(s)
        return s

    yield make
    for s in opened:
        try:
            s.close()
        except Exception:
            pass


def test_state_round_trip_and_atomic_update(make_store):
    s = make_store()
    assert s.get("orders") is None
    s.set("orders", {"bookmarks": {"orders": {"id": 1}}})
    assert s.get("orders") == {"bookmarks": {"orders": {"id": 1}}}
    s.update("orders", lambda old: {**old, "seen": 2})
    assert make_store().get("orders") == {"bookmarks": {"orders": {"id": 1}}, "seen": 2}
    assert [row[0] for row in s.list()] == ["orders"]
    assert s.clear("orders") and s.get("orders") is None


def test_concurrent_updates_lose_nothing(make_store):
    """Per-stream merges from two writers (threads on two connections): every increment lands."""
    a, b = make_store(), make_store()
    a.set("n", {"a": 0, "b": 0})

    def bump(store, key):
        for _ in range(25):
            store.update("n", lambda v, k=key: {**v, k: v[k] + 1})

    threads = [threading.Thread(target=bump, args=(st, k)) for st, k in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert a.get("n") == {"a": 25, "b": 25}


def test_a_lease_is_exclusive_across_runners_and_names_its_holder(make_store):
    a, b = make_store(), make_store()
    b._me = {**b._me, "machine": "runner-2", "host": "runner-2"}  # another CI machine
    with a.lease("orders"):
        with pytest.raises(LeaseHeld, match=rf"pid {os.getpid()} on {os.uname().nodename}"):
            with b.lease("orders"):
                pass
        with b.lease("customers"):
            pass
    with b.lease("orders"):
        assert [lease["state_id"] for lease in a.leases()] == ["orders"]
    assert a.leases() == []


def test_records_are_scoped_by_environment_and_read_at_once(make_store):
    s = make_store()
    s.put_record("", "raw", {"key": "k1", "fingerprint": "f1", "parts": {"inputs": {}}})
    s.put_record("prod", "raw", {"key": "k2", "fingerprint": "f2", "parts": {"inputs": {}}})
    dev, prod = make_store().records(""), make_store().records("prod")
    assert dev["raw"]["fingerprint"] == "f1" and prod["raw"]["fingerprint"] == "f2"
    assert s.forget_record("prod", "raw") and s.records("prod") == {}


def test_history_from_two_runners(make_store):
    a, b = make_store(), make_store()
    r1 = a.start_run("build", ["warehouse"], None)
    a.record_step(r1, "raw", "built", "never built", 1.0, 2.0, {"records": 3})
    a.record_step(r1, "marts", "failed", "never built", 2.0, 3.0, {}, "boom")
    a.record_step(r1, "report", "upstream_failed", "upstream marts failed", 3.0, 3.0, {})
    a.finish_run(r1, "failed")
    r2 = b.start_run("build", ["report"], "prod")
    b.finish_run(r2, "ok")
    runs = make_store().runs()
    assert [r["id"] for r in runs] == [r2, r1]
    assert runs[1]["counts"] == {"built": 1, "failed": 1, "upstream_failed": 1}
    assert runs[0]["env"] == "prod"
    assert [s["target"] for s in make_store().run_steps(r1)] == ["raw", "marts", "report"]


def test_read_only_writes_nothing(make_store):
    s = make_store()
    s.set("orders", {"v": 1})
    ro = make_store()
    ro.read_only = True
    assert ro.get("orders") == {"v": 1}
    with pytest.raises(StoreError, match="read-only"):
        ro.set("orders", {"v": 2})
    with pytest.raises(StoreError, match="read-only"):
        with ro.lease("orders"):
            pass
    ro.put_record("", "x", {"key": "k", "fingerprint": "f"})
    assert ro.start_run("build", [], None) == 0
    assert s.records("") == {} and s.runs() == [] and s.get("orders") == {"v": 1}


def test_artifacts_round_trip(make_store, tmp_path):
    from eltmake.digest import file_digest

    s = make_store()
    src = tmp_path / "report.csv"
    src.write_text("a,b\n1,2\n")
    d = file_digest(str(src))
    assert not s.has_artifact(d)
    s.put_artifact(d, src)
    assert make_store().has_artifact(d)
    out = tmp_path / "restored" / "report.csv"
    assert make_store().get_artifact(d, out) and out.read_text() == "a,b\n1,2\n"
    assert not s.get_artifact("0" * 32, tmp_path / "nothing")


def test_postgres_unreachable_or_refused_is_one_line(pg_env):
    from eltmake.store_postgres import PostgresStore

    wrong = {**pg_env, "PGPASSWORD": "not-the-password"}
    with pytest.raises(StoreError, match=r"store postgresql:///: cannot connect: .*password"):
        PostgresStore("postgresql:///", wrong)
    with pytest.raises(StoreError, match=r"store postgresql://u:\*\*\*\*@127.0.0.1:1/x: cannot"):
        PostgresStore("postgresql://u:secret@127.0.0.1:1/x", {})
    with pytest.raises(StoreError, match="schema"):
        PostgresStore("postgresql:///?schema=a;b", dict(pg_env))


def test_a_build_against_a_postgres_store(project, pg_env):
    """Two fresh clones of one project (two CI runners) sharing a Postgres store: the second
    skips what the first built and shows the first's run."""
    import shutil

    project.toml(
        '[targets.a]\nrun = "echo a"\n'
        '[targets.b]\nrun = "mkdir -p out && echo b >> out/b.txt"\noutputs = ["out/b.txt"]\n'
        'deps = ["a"]\n'
    )
    env = {**pg_env, "ELTMAKE_STORE": "postgresql:///?schema=ci"}
    assert project.statuses(env=env) == {"a": "built", "b": "built"}
    clone = Path(str(project.root) + "-clone")
    shutil.copytree(project.root, clone, ignore=shutil.ignore_patterns(".eltmake", "out"))
    from conftest import Project

    second = Project(clone)
    events = second.events("build", env=env)
    steps = {e["target"]: e for e in events if e["event"] == "step"}
    assert {n: e["status"] for n, e in steps.items()} == {"a": "skipped", "b": "skipped"}
    # b's output was not in the clone: restored from the store's artifacts, not run again
    assert "restored out/b.txt from the store" in steps["b"]["reason"]
    assert second.read("out/b.txt") == "b\n"
    runs = second.run("runs", env=env, check=True).stdout
    # both runners' runs, newest first: the second's no-op, then the first's build
    assert runs.count("\n#") == 2 and runs.index("2 skipped") < runs.index("2 built")
    bad = second.run("build", env={**env, "PGPASSWORD": "wrong"})
    assert bad.returncode == 2 and "store postgresql:///?schema=ci: cannot connect" in bad.stderr


def test_store_migrate_moves_a_laptop_project_to_a_shared_store_and_back(project, pg_env):
    import shutil

    from conftest import Project

    project.toml(
        '[targets.a]\nrun = "mkdir -p out && echo a > out/a.txt"\noutputs = ["out/a.txt"]\n'
    )
    project.run("build", check=True)
    project.run("state", "set", "orders", '{"bookmarks": {"orders": {"id": 41}}}', check=True)
    url = "postgresql:///?schema=moved"
    out = project.run("store", "migrate", "--to", url, env=pg_env, check=True).stdout
    assert "copied 1 state id(s), 1 step record(s), 1 run(s) and 1 artifact(s)" in out
    # A CI runner: a fresh clone, the shared store, no outputs and no .eltmake.
    clone = Path(str(project.root) + "-ci")
    shutil.copytree(project.root, clone, ignore=shutil.ignore_patterns(".eltmake", "out"))
    ci = Project(clone)
    env = {**pg_env, "ELTMAKE_STORE": url}
    assert ci.statuses(env=env) == {"a": "skipped"}
    assert ci.read("out/a.txt") == "a\n"
    assert '"id": 41' in ci.run("state", "show", "orders", env=env, check=True).stdout
    # ... and back into a project's own folder.
    back = ci.run("store", "migrate", "--from", url, "--to", "local", env=pg_env, check=True)
    assert "copied 1 state id(s)" in back.stdout
    assert '"id": 41' in ci.run("state", "show", "orders", env=pg_env, check=True).stdout
    assert ci.statuses(env=pg_env) == {"a": "skipped"}

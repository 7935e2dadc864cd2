"""The state store: atomic values, per-id leases, history, and durability across kill -9."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from eltmake.state import LeaseHeld, StateStore


def test_set_get_update_clear(tmp_path):
    store = StateStore(tmp_path / "state.db")
    assert store.get("orders") is None
    store.set("orders", {"bookmarks": {"a": 1}})
    assert store.get("orders") == {"bookmarks": {"a": 1}}
    merged = store.update("orders", lambda v: {"bookmarks": {**v["bookmarks"], "b": 2}})
    assert merged == store.get("orders") == {"bookmarks": {"a": 1, "b": 2}}
    assert [r[0] for r in store.list()] == ["orders"]
    assert store.clear("orders") and store.get("orders") is None


def test_a_failed_update_leaves_the_old_value(tmp_path):
    store = StateStore(tmp_path / "state.db")
    store.set("s", {"v": 1})

    def boom(value):
        raise RuntimeError("plugin bug")

    with pytest.raises(RuntimeError):
        store.update("s", boom)
    assert store.get("s") == {"v": 1}


def test_lease_excludes_a_second_holder(tmp_path):
    a = StateStore(tmp_path / "state.db")
    b = StateStore(tmp_path / "state.db")
    with a.lease("orders"):
        with pytest.raises(LeaseHeld, match="in use by another run"):
            with b.lease("orders"):
                pass
        with b.lease("customers"):  # other ids are free
            pass
    with b.lease("orders"):  # released
        pass


def test_a_lease_is_exclusive_per_holder_run_even_in_one_process(tmp_path):
    """Two steps of one build that share a state id: the second never gets the lease while the
    first holds it, and the first's release does not free the second's."""
    store = StateStore(tmp_path / "state.db")
    with store.lease("orders"):
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} on "):
            with store.lease("orders"):
                pass
    with store.lease("orders"):
        pass


def test_a_lease_of_a_holder_elsewhere_lapses_unless_renewed(tmp_path, monkeypatch):
    import eltmake.store as store_module

    db = tmp_path / "state.db"
    store = StateStore(db)
    # A holder on another machine (or pid namespace): its pid means nothing here.
    con = sqlite3.connect(db)
    con.execute(
        "INSERT INTO leases VALUES ('orders', 'tok', 'ci-runner-7', 1, ?, ?, 'other-machine', 1)",
        (time.time(), time.time() + 0.5),
    )
    con.commit()
    con.close()
    with pytest.raises(LeaseHeld, match="pid 1 on ci-runner-7"):
        with store.lease("orders"):
            pass
    with store.lease("orders", wait_s=10):  # it lapses: taken over without unlock
        pass
    # A live holder renews: with a one-second lease it is still held after two seconds.
    monkeypatch.setattr(store_module, "LEASE_TTL_S", 1.0)
    monkeypatch.setattr(store_module, "RENEW_EVERY_S", 0.2)
    holder = StateStore(db)
    other = StateStore(db)
    other._me = {**other._me, "machine": "another-machine"}  # cannot check our pid: waits
    with holder.lease("orders"):
        time.sleep(2.0)
        with pytest.raises(LeaseHeld):
            with other.lease("orders"):
                pass


def test_lease_of_a_dead_process_is_taken_over(tmp_path):
    db = tmp_path / "state.db"
    StateStore(db)
    code = textwrap.dedent(
        f"""
        import os, sys
        from eltmake.state import StateStore
        s = StateStore({str(db)!r})
        with s.lease("orders"):
            os._exit(0)  # dies holding the lease
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with StateStore(db).lease("orders"):
        pass


def test_kill_9_at_any_instant_leaves_a_whole_value(tmp_path):
    import random

    db = tmp_path / "state.db"
    StateStore(db).close()
    code = textwrap.dedent(
        f"""
        from eltmake.state import StateStore
        s = StateStore({str(db)!r})
        i = 0
        while True:
            i += 1
            s.set("counter", {{"i": i, "payload": "x" * 5000, "check": i * 7}})
        """
    )
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", code])
        # Event-driven: kill once the writer is writing (a few values in), at a random instant.
        target = random.randint(5, 60) + (StateStore(db).get("counter") or {"i": 0})["i"]
        deadline = time.monotonic() + 60
        while (StateStore(db).get("counter") or {"i": 0})["i"] < target:
            assert time.monotonic() < deadline and proc.poll() is None, "the writer never wrote"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = StateStore(db)
        value = store.get("counter")
        assert value is not None and value["check"] == value["i"] * 7
        assert len(value["payload"]) == 5000
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()


def test_history(tmp_path):
    store = StateStore(tmp_path / "state.db")
    run = store.start_run("build", ["a", "b"])
    store.record_step(run, "a", "built", "never built", 1.0, 2.0, {"records": 3})
    store.record_step(run, "b", "skipped", "up to date", 2.0, 2.0, {})
    store.finish_run(run, "ok")
    (r,) = store.runs()
    assert (r["status"], r["built"], r["skipped"], r["failed"]) == ("ok", 1, 1, 0)
    steps = store.run_steps(run)
    assert [s["target"] for s in steps] == ["a", "b"] and steps[0]["stats"] == {"records": 3}


def test_state_cli(project):
    project.toml("[targets.a]\nrun = 'true'\n")
    project.run("state", "set", "orders", '{"bookmarks": {"orders": {"id": 5}}}', check=True)
    shown = project.run("state", "show", "orders", check=True).stdout
    assert '"id": 5' in shown
    assert "orders" in project.run("state", "list", check=True).stdout
    bad = project.run("state", "set", "orders", "{not json")
    assert bad.returncode == 2 and "not JSON" in bad.stderr and "Traceback" not in bad.stderr
    project.run("state", "clear", "orders", check=True)
    missing = project.run("state", "show", "orders")
    assert missing.returncode == 2 and "no state stored" in missing.stderr

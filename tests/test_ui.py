"""``eltmake ui`` as a real server: its API, its event stream, its guards, and its command line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed")
pytest.importorskip("sse_starlette", reason="the ui extra is not installed")

from uiserver import UIServer, eltmake, make_project  # noqa: E402


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def ui(root: Path):
    server = UIServer(root)
    yield server
    server.stop()


def _go(root: Path) -> None:
    (root / "go").write_text("")


def test_graph_and_status_describe_the_project(ui: UIServer):
    g = ui.get("/api/graph")
    assert [n["name"] for n in g["nodes"]][-1] == "all"
    kinds = {n["name"]: n["kind"] for n in g["nodes"]}
    assert kinds == {"a": "command", "slow": "command", "many": "command", "all": "aggregate"}
    assert {"from": "a", "to": "slow", "inferred": False} in g["edges"]
    st = ui.get("/api/status")["targets"]
    assert st["a"]["status"] == "never_built"
    assert st["all"]["status"] == "out_of_date"
    assert "would run" in st["all"]["reason"]


def test_target_details_mask_secrets(ui: UIServer):
    t = ui.get("/api/targets/a")
    assert t["table"]["env"]["API_TOKEN"] == "****"
    assert t["description"] == "prints a line and its token"
    status, body = ui.request("GET", "/api/targets/nope")
    assert status == 400 and "unknown target 'nope'" in body["error"]


def test_pages_are_served_with_a_strict_policy(ui: UIServer):
    for page in ("/graph", "/build", "/runs", "/runs/1", "/state"):
        status, body = ui.request("GET", page)
        assert status == 200 and "<html" in body, page
    import urllib.request

    with urllib.request.urlopen(ui.url + "/graph") as r:
        csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_nothing_is_served_from_outside_the_static_folder(ui: UIServer):
    assert ui.request("GET", "/static/vendor/dagre/dagre.min.js")[0] == 200
    for path in (
        "/static/../__init__.py",
        "/static/%2e%2e/__init__.py",
        "/static/..%2f..%2fstate.py",
        "/static/%2e%2e/%2e%2e/steplogs.py",
        "/eltmake.toml",
        "/static//etc/passwd",
    ):
        status, _ = ui.request("GET", path)
        assert status == 404, path


def test_state_changing_requests_need_the_token_and_the_same_origin(ui: UIServer):
    body = {"targets": ["a"], "dry_run": True}
    status, r = ui.post("/api/builds", body, x_eltmake_csrf="wrong")
    assert status == 403 and "CSRF" in r["error"]
    status, r = ui.post("/api/builds", body, origin="http://evil.example")
    assert status == 403 and "another site" in r["error"]
    status, r = ui.post("/api/builds", body, sec_fetch_site="cross-site")
    assert status == 403
    assert ui.get("/api/build")["build"] is None  # nothing started
    status, r = ui.request("GET", "/api/builds")  # a GET never starts anything
    assert status == 405
    status, r = ui.post("/api/builds", body)
    assert status == 202
    assert ui.wait_build()["steps"]["a"]["status"] == "would_run"


def test_another_host_name_is_refused_on_loopback(ui: UIServer):
    status, r = ui.request("GET", "/api/session", headers={"host": "evil.example"})
    assert status == 421 and "this machine only" in r["error"]


def test_read_only_refuses_builds(root: Path):
    with UIServer(root, "--read-only") as ui:
        assert ui.get("/api/session")["read_only"] is True
        status, r = ui.post("/api/builds", {"targets": []})
        assert status == 403 and "read-only" in r["error"]
        assert ui.get("/api/build")["build"] is None


def test_bad_build_requests_are_one_line(ui: UIServer):
    status, r = ui.post("/api/builds", {"targets": ["alpah"]})
    assert status == 400 and "unknown target 'alpah'" in r["error"]
    status, r = ui.post("/api/builds", {"targets": "a"})
    assert status == 400 and "list" in r["error"]
    status, r = ui.post("/api/builds", [1, 2])
    assert status == 400


def test_a_build_streams_live_and_resumes_after_a_reconnect(ui: UIServer, root: Path):
    start = ui.get("/api/session")["last_event"]
    assert ui.post("/api/builds", {"targets": ["slow"]})[0] == 202
    seen = ui.events(start, until=lambda k, d: k == "step_log" and d["line"] == "waiting for go")
    kinds = [k for _, k, _ in seen if k != "lock"]  # the lock watcher's news may come between
    assert kinds[:2] == ["build_queued", "build_started"]
    assert ("step_started", "slow") in [(k, d.get("target")) for _, k, d in seen]
    masked = [d["line"] for _, k, d in seen if k == "step_log" and d["target"] == "a"]
    assert masked == ["hello from a", "token is ****"]
    # The connection drops; the step goes on; the client comes back with the last id it saw.
    last = seen[-1][0]
    _go(root)
    rest = ui.events(last, until=lambda k, d: k == "build_finished")
    ids = [i for i, _, _ in rest]
    assert ids[0] == last + 1 and ids == sorted(set(ids))
    lines = [d["line"] for _, k, d in rest if k == "step_log"]
    assert lines == ["went"]
    assert rest[-1][2]["status"] == "ok"
    # An id from before a restart (or long gone) is told to reset, not left waiting.
    stale = ui.events(10**6, until=lambda k, d: True)
    assert stale[0][1] == "reset"


def test_statuses_change_after_a_build_and_logs_are_kept(ui: UIServer, root: Path):
    _go(root)
    assert ui.post("/api/builds", {"targets": []})[0] == 202
    b = ui.wait_build()
    assert b["status"] == "ok" and b["run_id"] == 1
    st = ui.get("/api/status")["targets"]
    assert {n: s["status"] for n, s in st.items()} == dict.fromkeys(st, "up_to_date")
    run = ui.get("/api/runs/1")
    assert {s["target"]: s["has_log"] for s in run["steps"]} == {
        "a": True,
        "many": True,
        "slow": True,
        "all": False,
    }
    tail = ui.get("/api/runs/1/logs/many")
    assert tail.splitlines()[0] == "line 300" and tail.splitlines()[-1] == "line 499"
    whole = ui.get("/api/runs/1/logs/many?full=1")
    assert len(whole.splitlines()) == 500
    assert "s3cr3t" not in ui.get("/api/runs/1/logs/a?full=1")
    status, r = ui.request("GET", "/api/runs/1/logs/nope")
    assert status == 404 and "no log kept" in r["error"]
    assert ui.request("GET", "/api/runs/99")[0] == 404
    runs = ui.get("/api/runs")["runs"]
    assert runs[0]["id"] == 1 and runs[0]["built"] == 4


def test_ui_and_cli_builds_never_run_at_once(ui: UIServer, root: Path):
    # A build from the UI holds the project: the CLI's --no-wait build is refused.
    assert ui.post("/api/builds", {"targets": ["slow"]})[0] == 202
    ui.events(0, until=lambda k, d: k == "step_started" and d["target"] == "slow")
    cli = eltmake(root, "build", "--no-wait")
    assert cli.returncode == 1
    assert f"pid {ui.proc.pid} is building it" in cli.stderr
    _go(root)
    assert ui.wait_build()["status"] == "ok"
    # A build from a terminal holds it: the UI says who, and does not start one.
    (root / "go").unlink()
    (root / "slow.pid").unlink()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "-C", str(root), "build", "--force", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # (the UI's own build may still be releasing the lock: wait for the terminal's)
        while (
            not (root / "slow.pid").exists()
            or (ui.get("/api/session")["lock"] or {}).get("pid") != proc.pid
        ):
            assert proc.poll() is None, "the terminal's build ended early"
            time.sleep(0.05)
        lock = ui.get("/api/session")["lock"]
        assert "build --force slow" in lock["command"]
        status, r = ui.post("/api/builds", {"targets": ["a"]})
        assert status == 409 and f"pid {proc.pid}" in r["error"]
    finally:
        _go(root)
        assert proc.wait(timeout=60) == 0


def test_state_shows_bookmarks_and_lease_holders_read_only(ui: UIServer, root: Path):
    from eltmake.state import StateStore

    store = StateStore(root / ".eltmake" / "state.db")
    bookmark = {"replication_key": "updated_at", "replication_key_value": "2024-01-02"}
    store.set("tap-orders", {"bookmarks": {"orders": bookmark}, "note": "s3cr3t-value-42"})
    store.set("tap-free", {"bookmarks": {}})
    with store.lease("tap-orders"):
        rows = {s["id"]: s for s in ui.get("/api/state")["state"]}
        assert rows["tap-orders"]["lease"]["pid"] == os.getpid()
        assert rows["tap-free"]["lease"] is None
    value = ui.get("/api/state/tap-orders")["value"]
    assert value["bookmarks"]["orders"] == bookmark  # a column name, not a secret
    assert value["note"] == "****"  # a value the project holds as a secret
    assert ui.request("GET", "/api/state/none")[0] == 404
    assert ui.request("POST", "/api/state/tap-orders", {})[0] in (403, 405)
    store.close()


def test_ctrl_c_stops_a_running_build_and_exits_130(root: Path):
    ui = UIServer(root)
    assert ui.post("/api/builds", {"targets": ["slow"]})[0] == 202
    ui.events(0, until=lambda k, d: k == "step_started" and d["target"] == "slow")
    while not (root / "slow.pid").exists():
        time.sleep(0.02)
    step_pid = int((root / "slow.pid").read_text())
    assert ui.stop() == 130
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the step's process group was terminated (it may be reaped late)
            os.kill(step_pid, 0)
            time.sleep(0.05)
    runs = eltmake(root, "runs", "--json")
    assert '"status": "interrupted"' in runs.stdout


# --- the command line ------------------------------------------------------------------------


def test_missing_extra_is_a_one_line_hint(monkeypatch, capsys, root: Path):
    import importlib.util

    from eltmake.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "uvicorn" else real(n, *a)
    )
    assert main(["-C", str(root), "ui"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'eltmake[ui]'" in err and "uvicorn" in err


def test_version_and_builds_never_import_the_ui(root: Path):
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    for args in (["--version"], ["-C", str(root), "build", "a"]):
        p = subprocess.run(
            [sys.executable, "-m", "eltmake", *args], capture_output=True, text=True, env=env
        )
        assert p.returncode == 0, p.stderr
        imported = p.stderr
        assert "eltmake.ui" not in imported and "starlette" not in imported, args


def test_bad_ports_and_hosts_are_one_line(root: Path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cases = [
            (["--port", "70000"], "between 0 and 65535"),
            (["--port", "x"], "invalid int value"),
            (["--port", str(busy.getsockname()[1])], "already in use"),
            (["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
        ]
        for args, words in cases:
            p = eltmake(root, "ui", *args)
            assert p.returncode == 2, (args, p.stderr)
            assert words in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    finally:
        busy.close()
    broken = root / "eltmake.toml"
    broken.write_text(broken.read_text() + "\n[targets.x]\ndeps = ['alpah']\n")
    p = eltmake(root, "ui", "--port", "0")
    assert p.returncode == 2 and "unknown target 'alpah'" in p.stderr


def test_another_host_is_served_only_with_a_warning(root: Path):
    ui = UIServer(root, "--host", "0.0.0.0")
    try:
        assert ui.get("/api/session")["project"] == "uitest"
    finally:
        ui.proc.send_signal(signal.SIGINT)
        ui.proc.wait(timeout=30)
        err = ui.proc.stderr.read()
        ui.stop()
    assert "warning: listening on 0.0.0.0" in err and "--read-only" in err


def test_stop_interrupts_the_uis_build(ui: UIServer, root: Path):
    assert ui.post("/api/builds", {"targets": ["slow"]})[0] == 202
    ui.events(0, until=lambda k, d: k == "step_started" and d["target"] == "slow")
    status, r = ui.post("/api/builds/stop", {})
    assert status == 202 and r["stopping"] is True
    b = ui.wait_build()
    assert b["status"] == "interrupted" and b["steps"]["slow"]["status"] == "cancelled"
    assert ui.post("/api/builds/stop", {})[0] == 409  # nothing left to stop

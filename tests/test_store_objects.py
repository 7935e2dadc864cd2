"""The store on object storage: S3 through moto's standalone server and the real s3fs client,
and a shared folder (file://). Two store objects stand for two CI runners on different machines;
the end-to-end test builds two fresh copies of one project against one bucket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eltmake.store import LeaseHeld, StoreError

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(extra_env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def moto() -> Iterator[str]:
    """moto's standalone S3 on a free loopback port, for the whole session."""
    proc, url = _start_moto()
    yield url
    _stop(proc)


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", **CREDENTIALS}


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"eltmake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys()).create_bucket(
        Bucket=name
    )
    return name


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


class Where:
    """One shared store location, and store objects opened on it (each one a "runner")."""

    def __init__(self, url: str, environ: dict[str, str], objects: Callable[[], list[str]]):
        self.url, self.environ, self.objects = url, environ, objects
        self.opened: list = []

    def open(self, read_only: bool = False):
        from eltmake.store_objects import ObjectStore

        store = ObjectStore(self.url, self.environ)
        store.read_only = read_only
        self.opened.append(store)
        return store


@pytest.fixture(params=["s3", "file"])
def where(request, tmp_path: Path) -> Iterator[Where]:
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto")
        bucket = new_bucket(endpoint)
        w = Where(
            f"s3://{bucket}/ci/store", s3_env(endpoint), lambda: bucket_keys(endpoint, bucket)
        )
    else:
        root = tmp_path / "shared"
        root.mkdir()
        w = Where(
            root.as_uri(),
            {},
            lambda: sorted(
                str(p.relative_to(root))
                for p in root.rglob("*")
                if p.is_file() and p.name != ".lock"
            ),
        )
    yield w
    for store in w.opened:
        store.close()


# --- state ------------------------------------------------------------------------------------


def test_state_set_get_update_clear_list(where):
    store = where.open()
    assert store.get("orders") is None and store.list() == []
    store.set("orders", {"bookmarks": {"a": 1}})
    assert store.get("orders") == {"bookmarks": {"a": 1}}
    merged = store.update("orders", lambda v: {"bookmarks": {**v["bookmarks"], "b": 2}})
    assert merged == store.get("orders") == {"bookmarks": {"a": 1, "b": 2}}
    store.set("tap/with spaces", [1])
    other = where.open()  # another runner sees it all
    rows = other.list()
    assert [r[0] for r in rows] == ["orders", "tap/with spaces"]
    assert rows[0][2] == len(b'{"bookmarks": {"a": 1, "b": 2}}') and rows[0][1] > 0
    assert other.clear("orders") and store.get("orders") is None
    assert not other.clear("orders")


def test_a_failed_update_leaves_the_old_value(where):
    store = where.open()
    store.set("s", {"v": 1})

    def boom(value):
        raise RuntimeError("plugin bug")

    with pytest.raises(RuntimeError):
        store.update("s", boom)
    assert store.get("s") == {"v": 1}


def test_updates_from_two_runners_at_once_lose_nothing(where):
    a, b = where.open(), where.open()
    a.set("counter", {"n": 0})

    def bump(store):
        for _ in range(15):
            store.update("counter", lambda v: {"n": v["n"] + 1})

    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert where.open().get("counter") == {"n": 30}


def test_a_state_value_that_is_not_json_names_the_id_and_the_remedy(where):
    store = where.open()
    store.set("orders", {"a": 1})
    store.io.write("state/orders.json", b"{not json")
    with pytest.raises(StoreError, match=r"the state of 'orders' is not JSON; set a good value"):
        store.get("orders")


# --- leases -----------------------------------------------------------------------------------


def test_a_lease_is_exclusive_across_runners(where):
    a, b = where.open(), where.open()
    b._me = {**b._me, "machine": "ci-runner-2"}  # another machine: a's pid means nothing there
    with a.lease("orders"):
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} on {os.uname().nodename}"):
            with b.lease("orders"):
                pass
        with pytest.raises(LeaseHeld):  # even the same runner, for a second holder-run
            with a.lease("orders"):
                pass
        with b.lease("customers"):  # other ids are free
            pass
        assert [lease["state_id"] for lease in b.leases()] == ["orders"]
    with b.lease("orders"):  # released
        pass
    assert b.leases() == []


def test_a_lapsed_lease_is_taken_over_and_a_renewed_one_is_kept(where, monkeypatch):
    import eltmake.store as store_module

    store = where.open()
    store.set("orders", {})  # the store exists
    lapsing = {
        **{"owner": "tok", "host": "ci-runner-7", "pid": 1, "machine": "other-machine"},
        **{"started": 1, "acquired": time.time(), "expires": time.time() + 0.5},
    }
    store.io.write("leases/orders.json", json.dumps(lapsing).encode())
    with pytest.raises(LeaseHeld, match="pid 1 on ci-runner-7"):
        with store.lease("orders"):
            pass
    with store.lease("orders", wait_s=20):  # it lapses: taken over without unlock
        pass
    # A live holder renews: past its first expiry it still holds the lease.
    monkeypatch.setattr(store_module, "LEASE_TTL_S", 2.0)
    monkeypatch.setattr(store_module, "RENEW_EVERY_S", 0.1)
    holder, other = where.open(), where.open()
    other._me = {**other._me, "machine": "another-machine"}
    with holder.lease("orders"):
        first = json.loads(holder.io.read("leases/orders.json")[0])["expires"]
        deadline = time.monotonic() + 60
        while time.time() < first + 0.2:  # event-driven: past the first expiry
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(holder.io.read("leases/orders.json")[0])["expires"] > first
        with pytest.raises(LeaseHeld):
            with other.lease("orders"):
                pass
    assert other.unlock("orders") is False  # released, nothing to unlock


def test_unlock_removes_a_stuck_lease(where):
    a, b = where.open(), where.open()
    b._me = {**b._me, "machine": "ci-runner-2"}
    with a.lease("orders"):
        assert b.unlock("orders")
        with b.lease("orders"):
            pass


# --- records ----------------------------------------------------------------------------------


def record(n: int) -> dict:
    return {"key": f"k{n}", "fingerprint": f"f{n}", "parts": {"inputs": {"a.sql": f"d{n}"}}}


def test_records_written_by_two_runners_at_once_all_survive(where):
    a, b = where.open(), where.open()
    assert a.records("") == {} and b.records("") == {}  # both hold the (empty) version read
    a.put_record("", "x", record(1))
    a.flush_writes()
    b.put_record("", "y", record(2))  # written over a version b has not seen
    b.flush_writes()

    def many(store, prefix):
        for i in range(20):
            store.put_record("", f"{prefix}{i}", record(i))
            if i % 5 == 4:
                store.flush_writes()

    threads = [threading.Thread(target=many, args=(s, p)) for s, p in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    got = where.open().records("")
    assert set(got) == {"x", "y"} | {f"a{i}" for i in range(20)} | {f"b{i}" for i in range(20)}
    assert got["y"]["fingerprint"] == "f2"
    assert json.loads(got["a3"]["parts"]) == {"inputs": {"a.sql": "d3"}}  # parts stay JSON text


def test_records_are_scoped_by_environment(where):
    a = where.open()
    a.put_record("", "t", record(1))
    a.put_record("prod", "t", record(2))
    a.put_record("prod/eu", "u", record(3))
    a.close()
    b = where.open()
    assert b.records("")["t"]["key"] == "k1"
    assert b.records("prod")["t"]["key"] == "k2" and "u" not in b.records("prod")
    assert set(b.records("prod/eu")) == {"u"}
    assert b.forget_record("prod", "t") and not b.forget_record("prod", "t")
    assert b.records("prod") == {} and b.records("")["t"]["key"] == "k1"


def test_a_damaged_records_object_is_rebuilt_not_fatal(where):
    store = where.open()
    store.put_record("", "t", record(1))
    store.flush_writes()
    store.io.write("records/default.json", b"\x00 not json")
    assert where.open().records("") == {}  # its steps run again...
    store.io.write("records/default.json", b'{"records": {"t": [1, null], "u": ["{", null]}}')
    assert where.open().records("") == {}
    store.put_record("", "t", record(2))
    store.close()
    assert where.open().records("")["t"]["key"] == "k2"  # ...and write a good one over it


# --- history ----------------------------------------------------------------------------------


def test_history_from_two_runners_shows_newest_first(where):
    a, b = where.open(), where.open()
    ids = []
    for i, store in enumerate([a, b, a, b]):
        run = store.start_run("build", [f"t{i}"], "prod" if i == 3 else None)
        store.record_step(run, f"t{i}", "built", "never built", 1.0 + i, 2.0 + i, {"rows": i})
        store.record_step(run, "other", "skipped", "up to date", 2.0 + i, 2.0 + i, {})
        store.finish_run(run, "ok")
        ids.append(run)
    assert len(set(ids)) == 4 and all(len(str(i)) == 16 for i in ids)
    runs = where.open().runs()
    assert [r["id"] for r in runs] == sorted(ids, reverse=True)
    by_id = {r["id"]: r for r in runs}
    last = by_id[ids[3]]
    assert (last["status"], last["built"], last["skipped"], last["env"]) == ("ok", 1, 1, "prod")
    assert last["targets"] == ["t3"] and last["ended"] >= last["started"]
    assert [r["id"] for r in b.runs(limit=2)] == sorted(ids, reverse=True)[:2]
    steps = a.run_steps(ids[1])  # b's run, read by a
    assert [s["target"] for s in steps] == ["t1", "other"] and steps[0]["stats"] == {"rows": 1}


def test_a_run_killed_before_it_finished_shows_as_running(where):
    a = where.open()
    run = a.start_run("build", ["t"], None)
    a.record_step(run, "t", "built", "never built", 1.0, 2.0, {})
    a.flush_writes()  # what the background flush does within half a second
    (r,) = where.open().runs()
    assert (r["id"], r["status"], r["ended"], r["built"]) == (run, "running", None, 1)


# --- artifacts --------------------------------------------------------------------------------


def test_artifacts_round_trip_and_a_damaged_one_is_refused(where, tmp_path, capsys):
    from eltmake.digest import file_digest

    src = tmp_path / "out" / "table.parquet"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3000))
    digest = file_digest(str(src))
    a, b = where.open(), where.open()
    assert not b.has_artifact(digest)
    a.put_artifact(digest, src)
    assert b.has_artifact(digest) and f"artifacts/{digest}" in "\n".join(where.objects())
    dest = tmp_path / "runner2" / "out" / "table.parquet"
    assert b.get_artifact(digest, dest) and dest.read_bytes() == src.read_bytes()

    b.io.write(f"artifacts/{digest}", b"bit rot")
    dest2 = tmp_path / "runner3" / "table.parquet"
    assert b.get_artifact(digest, dest2) is False
    assert not dest2.exists() and list(dest2.parent.iterdir()) == []  # no partial file left
    assert "is damaged" in capsys.readouterr().err
    assert not b.has_artifact(digest)  # removed, so the next upload replaces it
    assert b.get_artifact("0" * 32, dest2) is False  # absent
    with pytest.raises(StoreError, match="not an artifact digest"):
        b.get_artifact("../../etc/passwd", dest2)


# --- read-only --------------------------------------------------------------------------------


def test_read_only_writes_nothing(where, tmp_path):
    store = where.open(read_only=True)
    for write in (lambda: store.set("s", 1), lambda: store.update("s", lambda v: 1)):
        with pytest.raises(StoreError, match="read-only"):
            write()
    with pytest.raises(StoreError, match="read-only"):
        with store.lease("s"):
            pass
    with pytest.raises(StoreError, match="read-only"):
        store.unlock("s")
    store.put_record("", "t", record(1))
    run = store.start_run("build", ["t"], None)
    store.record_step(run, "t", "built", "", 1.0, 2.0, {})
    store.finish_run(run, "ok")
    src = tmp_path / "a.txt"
    src.write_text("a")
    store.put_artifact("ab" * 16, src)
    store.close()
    assert store.records("") == {} and store.runs() == [] and store.get("s") is None
    assert where.objects() == []


# --- opening: one line naming the store -------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo, url: str) -> str:
    text = str(e.value)
    assert "\n" not in text and f"store {url}" in text, text
    return text


def test_a_missing_bucket_is_one_line_naming_the_url(moto):
    from eltmake.store_objects import ObjectStore

    with pytest.raises(StoreError) as e:
        ObjectStore("s3://no-such-bucket/ci", s3_env(moto))
    assert "bucket 'no-such-bucket' does not exist" in _one_line(e, "s3://no-such-bucket/ci")


def test_bad_credentials_are_one_line_naming_the_url():
    from eltmake.store_objects import ObjectStore

    proc, endpoint = _start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto checks keys
    try:
        with pytest.raises(StoreError) as e:
            ObjectStore("s3://bucket/ci", s3_env(endpoint))
    finally:
        _stop(proc)
    assert "access denied (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID" in _one_line(
        e, "s3://bucket/ci"
    )


def test_an_unreachable_endpoint_is_one_line_naming_the_url():
    from eltmake.store_objects import ObjectStore

    env = s3_env(f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    with pytest.raises(StoreError) as e:
        ObjectStore("s3://bucket/ci", env)
    assert "cannot reach the endpoint at http://127.0.0.1:" in _one_line(e, "s3://bucket/ci")


def test_credentials_in_the_url_are_refused_and_never_shown(moto):
    from eltmake.store_objects import ObjectStore

    with pytest.raises(StoreError) as e:
        ObjectStore("s3://AKIA:s3cr3t@bucket/ci", s3_env(moto))
    assert "s3cr3t" not in str(e.value) and "AWS_ACCESS_KEY_ID" in str(e.value)
    _one_line(e, "s3://AKIA:****@bucket/ci")


def test_a_missing_folder_is_refused_not_created(tmp_path):
    from eltmake.store_objects import ObjectStore

    url = (tmp_path / "not-mounted").as_uri()
    with pytest.raises(StoreError) as e:
        ObjectStore(url, {})
    assert "does not exist; create it" in _one_line(e, url)
    assert not (tmp_path / "not-mounted").exists()


def test_a_prefix_holding_a_newer_store_is_refused(tmp_path):
    from eltmake.store_objects import ObjectStore

    (tmp_path / "eltmake-store.json").write_text('{"format": 99}')
    with pytest.raises(StoreError, match="written by a newer eltmake"):
        ObjectStore(tmp_path.as_uri(), {})


def test_a_missing_client_library_names_the_extra(monkeypatch):
    from eltmake.store_objects import ObjectStore

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if not installed
    with pytest.raises(StoreError, match=r"pip install 'eltmake\[s3\]'"):
        ObjectStore("s3://bucket/ci", {})


def test_start_up_imports_no_storage_client(tmp_path):
    code = (
        "import sys; from eltmake.cli import main; main(['--version']);"
        "from eltmake.store_objects import ObjectStore;"
        f"ObjectStore({tmp_path.as_uri()!r}, {{}}).close();"
        "print(sorted(m for m in ('fsspec', 's3fs', 'gcsfs', 'botocore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[]"


# --- end to end: two CI runners, one bucket ---------------------------------------------------

PROJECT = """
[targets.report]
run = "cat src/data.txt > report.txt"
inputs = ["src/data.txt"]
"""


def test_two_ci_runners_share_records_and_history_through_s3(moto, project):
    bucket = new_bucket(moto)
    env = {"ELTMAKE_STORE": f"s3://{bucket}/eltmake", **s3_env(moto)}
    project.toml(PROJECT)
    project.write("src/data.txt", "rows\n")
    checkout = project.root.parent / "checkout"
    shutil.copytree(project.root, checkout)  # the repository, as each runner clones it
    runner1, runner2 = project.root.parent / "runner1", project.root.parent / "runner2"
    shutil.copytree(checkout, runner1)
    shutil.copytree(checkout, runner2)

    project.root = runner1
    assert project.statuses(env=env) == {"report": "built"}
    project.run("state", "set", "orders", '{"id": 5}', check=True, env=env)
    project.root = runner2
    assert project.statuses(env=env) == {"report": "skipped"}  # its record is in the bucket
    assert not (runner2 / "report.txt").exists() and (runner1 / "report.txt").exists()
    # The store's settings may come from .env too (written only now: a command step's key
    # holds the .env values it sees).
    (runner2 / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert '"id": 5' in project.run("state", "show", "orders", check=True).stdout

    runs = json.loads(project.run("runs", "--json", check=True).stdout)
    assert [(r["built"], r["skipped"]) for r in runs] == [(0, 1), (1, 0)]  # newest first
    table = project.run("runs", check=True).stdout
    assert f"#{runs[1]['id']}" in table and "1 built" in table
    assert not (runner2 / ".eltmake" / "state.db").exists()  # nothing kept locally


def test_an_unusable_store_stops_the_build_before_any_step(moto, project):
    project.toml('[targets.a]\nrun = "echo a > a.txt"\n')
    env = {"ELTMAKE_STORE": "s3://no-such-bucket/eltmake", **s3_env(moto)}
    proc = project.run("build", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "store s3://no-such-bucket/eltmake:" in lines[0], proc.stderr
    assert not (project.root / "a.txt").exists()


def test_a_service_that_ignores_conditional_writes_is_refused(where, monkeypatch):
    """Leases and merges rest on conditions; a service that drops them silently is refused when
    the store is first written, instead of losing updates later."""
    from eltmake.buckets import Bucket

    store = where.open()
    write = type(store.io).write

    def unconditional(self: Bucket, key: str, data: bytes, match: str | None = None) -> str:
        return write(self, key, data, None)

    monkeypatch.setattr(type(store.io), "write", unconditional)
    with pytest.raises(StoreError, match="ignores conditional writes"):
        store.set("orders", {"id": 1})
    monkeypatch.undo()
    assert where.open().get("orders") is None


def test_listings_go_past_one_page(moto):
    """S3 lists at most 1,000 names a request: history and state lists page on."""
    from eltmake.store_objects import ObjectStore

    bucket = new_bucket(moto)
    store = ObjectStore(f"s3://{bucket}/p", s3_env(moto))
    store.io.fs.pipe({f"{bucket}/p/many/{i:05d}.json": b"{}" for i in range(1003)})
    assert len(store.io.listing("many/")) == 1003
    names = [n for n, _, _ in store.io.listing("many/", limit=1001)]
    assert names == [f"{i:05d}.json" for i in range(1001)]
    store.close()

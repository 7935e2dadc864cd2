"""The extract-load step with scripted fake taps and targets: success, state and every fault.

Fake tools stand in only where a fault must be injected (a crash mid-stream, bad output, a
hang); the real taps and targets from PyPI are in test_singer_e2e.py.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from eltmake_singer import extract, runner

from eltmake.errors import StepError
from eltmake.procs import ProcessRegistry
from eltmake.project import load_project
from eltmake.state import StateStore
from eltmake.step import StepContext

FAKE_TAP = r"""
import json, os, sys, time
args = sys.argv[1:]
if "--about" in args:
    sys.stderr.write("unknown option --about\n"); sys.exit(2)
config = json.load(open(args[args.index("--config") + 1]))
streams = config.get("streams", ["a", "b"])
if "--discover" in args:
    print(json.dumps({"streams": [
        {"tap_stream_id": s, "stream": s, "schema": {"properties": {"id": {}, "v": {}}},
         "metadata": [{"breadcrumb": [], "metadata": {}}]} for s in streams]}))
    sys.exit(0)
with open(config["calls"], "a") as f:
    f.write(json.dumps(args) + "\n")
state = json.load(open(args[args.index("--state") + 1])) if "--state" in args else {}
catalog = json.load(open(args[args.index("--catalog") + 1]))
selected = [e["tap_stream_id"] for e in catalog["streams"]
            if any(m["breadcrumb"] == [] and m["metadata"].get("selected") for m in e["metadata"])]
fault, at = config.get("fault"), config.get("at", -1)
out = sys.stdout
sys.stderr.write("tap starting with password %s\n" % config.get("password"))
bookmarks = dict(state.get("bookmarks", {}))
emitted = 0
for s in selected:
    if fault == "record_before_schema" and emitted == at:
        out.write(json.dumps({"type": "RECORD", "stream": "zz", "record": {"id": 1}}) + "\n")
    out.write(json.dumps({"type": "SCHEMA", "stream": s, "schema": {"properties": {"id": {}}}, "key_properties": ["id"]}) + "\n")
    start = bookmarks.get(s, {}).get("id", 0)
    for i in range(start + 1, config.get("n", 10) + 1):
        if emitted == at:
            out.flush()
            if fault == "crash":
                sys.stderr.write("tap: connection reset by peer\n"); sys.exit(3)
            if fault == "bad_json":
                out.write('{"type": "RECORD", "stream": oops}\n')
            if fault == "non_utf8":
                out.buffer.write(b'{"type":"RECORD","stream":"' + s.encode() + b'","record":{"v":"\xff"}}\n')
            if fault == "long_line":
                out.write(json.dumps({"type": "RECORD", "stream": s, "record": {"id": 0, "v": "x" * 5000}}) + "\n")
            if fault == "hang":
                time.sleep(3600)
        out.write(json.dumps({"type": "RECORD", "stream": s, "record": {"id": i, "v": config.get("v", "x")},
                              "time_extracted": "%.6f" % time.time()}) + "\n")
        emitted += 1
        if i % config.get("state_every", 3) == 0:
            bookmarks[s] = {"id": i}
            out.write(json.dumps({"type": "STATE", "value": {"bookmarks": bookmarks}}) + "\n")
    bookmarks[s] = {"id": max(start, config.get("n", 10))}
    out.write(json.dumps({"type": "STATE", "value": {"bookmarks": bookmarks}}) + "\n")
out.flush()
"""

FAKE_TARGET = r"""
import json, os, sys, time
args = sys.argv[1:]
config = json.load(open(args[args.index("--config") + 1]))
dest = config["dest"]
os.makedirs(dest, exist_ok=True)
files = {}
received = 0
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] == "RECORD":
        received += 1
        if config.get("fail_after") is not None and received > config["fail_after"]:
            sys.stderr.write("target: disk full while writing %s\n" % msg["stream"]); sys.exit(4)
        if config.get("hang_after") is not None and received > config["hang_after"]:
            time.sleep(3600)
        f = files.get(msg["stream"]) or files.setdefault(msg["stream"], open(os.path.join(dest, msg["stream"] + ".jsonl"), "a"))
        f.write(json.dumps(msg["record"]) + "\n")
        if config.get("slow"):
            time.sleep(config["slow"])
    elif msg["type"] == "STATE" and not config.get("no_state"):
        for f in files.values():
            f.flush()
        sys.stdout.write(json.dumps(msg["value"]) + "\n"); sys.stdout.flush()
for f in files.values():
    f.close()
"""


def inline(table: dict) -> str:
    """A TOML inline table (JSON values of these kinds are valid TOML)."""
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"


FAKE_MAPPER = r"""
import json, sys
args = sys.argv[1:]
config = json.load(open(args[args.index("--config") + 1]))
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] == "RECORD":
        msg["record"]["v"] = config["prefix"] + str(msg["record"]["v"])
    sys.stdout.write(json.dumps(msg) + "\n")
"""


class Harness:
    """A temporary project with a fake tap and target, and a way to run its step."""

    def __init__(self, root: Path):
        self.root = root
        self.calls = root / "calls.jsonl"
        self.dest = root / "out"
        for name, code in (
            ("fake-tap", FAKE_TAP),
            ("fake-target", FAKE_TARGET),
            ("fake-map", FAKE_MAPPER),
        ):
            path = root / "bin" / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"#!{sys.executable}\n{code}")
            path.chmod(0o755)
        self.store = StateStore(root / ".eltmake" / "state.db")
        self.procs = ProcessRegistry()
        self.logs: list[str] = []
        self.record: dict | None = None

    def configure(
        self, tap: dict | None = None, target: dict | None = None, keys: str = ""
    ) -> None:
        tap_cfg = {"calls": str(self.calls), "password": "hunter2-secret", **(tap or {})}
        target_cfg = {"dest": str(self.dest), **(target or {})}
        (self.root / "eltmake.toml").write_text(
            textwrap.dedent(
                f"""
                [extractors.fake-tap]
                executable = "{self.root}/bin/fake-tap"
                config = {inline(tap_cfg)}

                [loaders.fake-target]
                executable = "{self.root}/bin/fake-target"
                config = {inline(target_cfg)}

                [mappers.fake-map]
                executable = "{self.root}/bin/fake-map"
                config = {{ prefix = "m-" }}

                [targets.raw]
                extract = "fake-tap"
                load = "fake-target"
                """
            )
            + textwrap.dedent(keys)
        )

    def run(self, full_refresh: bool = False, cancel_after: float | None = None):
        project = load_project(self.root, environ=dict(os.environ))
        target = project.targets["raw"]
        step = extract.make_step(project, target)
        ctx = StepContext(
            project,
            step,
            key="k",
            record=self.record,
            state=self.store,
            full_refresh=full_refresh,
            log=self.logs.append,
            progress=lambda text: None,
            procs=self.procs,
        )
        if cancel_after is not None:  # as watch mode or Ctrl-C does: set the flag, stop children
            import threading

            def cancel() -> None:
                ctx.cancelled.set()
                self.procs.terminate(owner=ctx)

            threading.Timer(cancel_after, cancel).start()
        result = extract.run_step(ctx)
        self.record = {"fingerprint": result.fingerprint}
        return result

    def rows(self, stream: str) -> list[dict]:
        path = self.dest / f"{stream}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def state(self):
        return self.store.get("raw")

    def tap_calls(self) -> list[list[str]]:
        return [json.loads(x) for x in self.calls.read_text().splitlines()]


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def test_every_record_arrives_and_the_last_state_is_saved(h):
    h.configure(tap={"n": 10})
    result = h.run()
    assert [r["id"] for r in h.rows("a")] == list(range(1, 11))
    assert [r["id"] for r in h.rows("b")] == list(range(1, 11))
    assert result.stats["records"] == 20
    assert result.stats["streams"] == {"a": 10, "b": 10}
    assert h.state() == {"bookmarks": {"a": {"id": 10}, "b": {"id": 10}}}
    assert "--state" not in h.tap_calls()[0]
    assert any("does not answer --about" in line for line in h.logs)


def test_incremental_round_trip_and_early_cutoff(h):
    h.configure(tap={"n": 10})
    first = h.run()
    h.configure(tap={"n": 15})
    second = h.run()
    call = h.tap_calls()[-1]
    assert "--state" in call
    assert [r["id"] for r in h.rows("a")] == list(range(1, 16))  # 11..15 appended, nothing twice
    assert second.stats["records"] == 10
    assert second.fingerprint != first.fingerprint
    third = h.run()  # nothing new: an incremental run with no rows keeps the fingerprint
    assert third.stats["records"] == 0
    assert third.fingerprint == second.fingerprint
    assert h.state() == {"bookmarks": {"a": {"id": 15}, "b": {"id": 15}}}


def test_same_records_give_the_same_fingerprint_and_new_ones_do_not(h):
    h.configure(tap={"n": 5})
    one = h.run()
    h.record = None
    two = h.run(full_refresh=True)  # the same five records again, other time stamps
    assert two.fingerprint == one.fingerprint
    h.configure(tap={"n": 5, "v": "changed"})
    three = h.run(full_refresh=True)
    assert three.fingerprint != one.fingerprint


def test_mappers_run_between_tap_and_target_and_the_fingerprint_follows_their_output(h):
    h.configure(tap={"n": 5})
    plain = h.run()
    h.configure(tap={"n": 5}, keys='map = ["fake-map"]\nfull_refresh = true\n')
    h.record = None
    mapped = h.run()
    assert [r["v"] for r in h.rows("a")[-5:]] == ["m-x"] * 5
    assert mapped.stats["records"] == 10
    assert mapped.fingerprint != plain.fingerprint


def test_a_run_over_one_stream_keeps_the_other_streams_bookmarks(h):
    h.configure(tap={"n": 6})
    h.run()
    h.configure(tap={"n": 9}, keys='select = ["b.*"]\n')
    h.run()
    assert h.state() == {"bookmarks": {"a": {"id": 6}, "b": {"id": 9}}}
    assert len(h.rows("a")) == 6


def test_full_refresh_runs_without_state_but_keeps_untouched_bookmarks(h):
    h.configure(tap={"n": 4})
    h.run()
    h.configure(tap={"n": 4}, keys='select = ["a.*"]\nfull_refresh = true\n')
    result = h.run()
    assert "--state" not in h.tap_calls()[-1]
    assert result.stats["records"] == 4
    assert h.state() == {"bookmarks": {"a": {"id": 4}, "b": {"id": 4}}}


def test_tap_crash_names_the_tap_and_state_stays_with_what_the_target_committed(h):
    h.configure(tap={"n": 10, "fault": "crash", "at": 7})
    with pytest.raises(StepError) as err:
        h.run()
    msg = str(err.value)
    assert "fake-tap (tap) failed with exit code 3" in msg
    assert any("connection reset by peer" in line for line in err.value.tail)
    loaded = [r["id"] for r in h.rows("a")]
    assert loaded == list(range(1, 8))  # the target flushed what it received
    assert h.state() == {"bookmarks": {"a": {"id": 6}}}  # the last state it emitted, not ahead
    # The next run resumes after the committed bookmark: nothing lost, nothing twice past it.
    h.configure(tap={"n": 10})
    h.run()
    assert [r["id"] for r in h.rows("a")] == list(range(1, 8)) + list(range(7, 11))


def test_target_failure_stops_the_tap_and_names_the_target(h):
    h.configure(tap={"n": 200000, "state_every": 2}, target={"fail_after": 5})
    started = time.monotonic()
    with pytest.raises(StepError) as err:
        h.run()
    assert "fake-target (target) failed with exit code 4" in str(err.value)
    assert any("disk full" in line for line in err.value.tail)
    assert time.monotonic() - started < 60  # the tap did not run to its end (200k records)
    assert h.procs.running() == []
    state = h.state()
    assert state["bookmarks"]["a"]["id"] <= 5  # never ahead of what the target loaded


@pytest.mark.parametrize(
    "fault, words",
    [
        ("bad_json", "not valid JSON"),
        ("non_utf8", "not UTF-8"),
        ("long_line", "longer than the limit"),
        ("record_before_schema", "before its SCHEMA"),
    ],
)
def test_bad_tap_output_is_a_clear_error_with_the_line_number(h, fault, words):
    at = 0 if fault == "record_before_schema" else 4
    h.configure(tap={"n": 10, "fault": fault, "at": at}, keys="max_line_bytes = 2000\n")
    with pytest.raises(StepError) as err:
        h.run()
    msg = str(err.value)
    assert msg.startswith("fake-tap (tap) wrote bad output at line ")
    assert words in msg
    # Lines before the bad one: SCHEMA, 3 records, 1 state, then the 4th record (line 6 is bad).
    expected_line = 1 if fault == "record_before_schema" else 7
    assert f"line {expected_line}:" in msg
    state = h.state()
    assert state is None or state["bookmarks"]["a"]["id"] <= 3


def test_a_hanging_tap_is_stopped_at_the_timeout(h):
    h.configure(tap={"n": 10, "fault": "hang", "at": 2}, keys="timeout = 3\n")
    started = time.monotonic()
    with pytest.raises(StepError) as err:
        h.run()
    assert "fake-tap (tap) was still running after the timeout of 3s" in str(err.value)
    assert time.monotonic() - started < 30
    assert h.procs.running() == []


def test_a_hanging_target_is_stopped_at_the_timeout(h):
    h.configure(tap={"n": 10}, target={"hang_after": 3}, keys='timeout = "2s"\n')
    with pytest.raises(StepError) as err:
        h.run()
    assert "fake-target (target) was still running after the timeout" in str(err.value) or (
        "fake-tap (tap) was still running" in str(err.value)
    )


def test_cancellation_stops_every_tool_and_raises_cancelled(h):
    from eltmake.errors import Cancelled

    h.configure(tap={"n": 10, "fault": "hang", "at": 2})
    started = time.monotonic()
    with pytest.raises(Cancelled):
        h.run(cancel_after=1.0)
    assert time.monotonic() - started < 20
    assert h.procs.running() == []


def test_secrets_never_reach_the_log(h):
    h.configure(tap={"n": 2})
    h.run()
    text = "\n".join(h.logs)
    assert "fake-tap: tap starting with password ****" in text
    assert "hunter2-secret" not in text


def test_a_target_that_emits_no_state_is_reported(h):
    h.configure(tap={"n": 3}, target={"no_state": True})
    result = h.run()
    assert "target emitted none" in result.stats["state"]
    assert any("emitted no state" in line for line in h.logs)
    assert h.state() is None


def test_volume_through_a_small_buffer_and_a_slow_target_loses_nothing(h):
    # A state after every record: saves are coalesced, the last one always lands.
    h.configure(tap={"n": 30000, "streams": ["a"], "state_every": 1}, keys="buffer_mb = 0.05\n")
    result = h.run()
    assert result.stats["records"] == 30000
    assert result.stats["states_saved"] == 30001
    ids = [r["id"] for r in h.rows("a")]
    assert ids == list(range(1, 30001))
    assert h.state() == {"bookmarks": {"a": {"id": 30000}}}


def test_a_state_id_held_by_another_run_fails_clearly(h):
    h.configure(tap={"n": 1})
    other = StateStore(h.root / ".eltmake" / "state.db")
    other.owner = "elsewhere:1:1"
    with other.lease("raw"):
        # Same host and our own pid: the lease looks alive, as another build's would.
        with pytest.raises(StepError, match="in use by another run"):
            h.run()
    other.close()


def test_byte_queue_is_bounded():
    q = runner.ByteQueue(limit=100)
    assert q.put(b"x" * 60)
    import threading

    done = threading.Event()

    def put_more():
        q.put(b"y" * 60)  # waits: 120 > 100
        done.set()

    threading.Thread(target=put_more, daemon=True).start()
    assert not done.wait(0.2)
    assert q.get() == b"x" * 60
    assert done.wait(2)
    q.end()
    assert q.get() == b"y" * 60
    assert q.get() is None
    assert q.peak <= 100


def test_a_tap_crash_through_the_cli_is_exit_1_with_a_failed_event(tmp_path):
    import subprocess

    h = Harness(tmp_path)
    h.configure(tap={"n": 10, "fault": "crash", "at": 4})
    h.store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "eltmake", "build", "raw", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    step = next(e for e in events if e.get("event") == "step" and e["target"] == "raw")
    assert step["status"] == "failed"
    assert "fake-tap (tap) failed with exit code 3" in proc.stdout + proc.stderr
    assert "hunter2-secret" not in proc.stdout + proc.stderr
    state = subprocess.run(
        [sys.executable, "-m", "eltmake", "state", "show", "raw"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert json.loads(state.stdout) == {"bookmarks": {"a": {"id": 3}}}


def test_two_targets_sharing_a_state_id_take_turns_in_one_build(project):
    """Each holds the state id's lease in turn (a lock on the state id), instead of the second
    being refused while the first runs."""
    tap = project.write(
        "tap.py",
        """\
        #!/usr/bin/env python3
        import json, time
        print(json.dumps({"type": "SCHEMA", "stream": "s", "key_properties": ["id"],
            "schema": {"properties": {"id": {"type": "integer"}}}}))
        time.sleep(0.3)
        print(json.dumps({"type": "RECORD", "stream": "s", "record": {"id": 1}}))
        print(json.dumps({"type": "STATE", "value": {"bookmarks": {"s": {"id": 1}}}}))
        """,
    )
    tap.chmod(0o755)
    project.toml(
        """
        [extractors.tap]
        executable = "./tap.py"
        capabilities = ["state"]

        [loaders.one]
        executable = "eltmake-target-duckdb"
        config = { path = "one.duckdb" }

        [loaders.two]
        executable = "eltmake-target-duckdb"
        config = { path = "two.duckdb" }

        [targets.a]
        extract = "tap"
        load = "one"
        state_id = "shared"

        [targets.b]
        extract = "tap"
        load = "two"
        state_id = "shared"
        """
    )
    assert project.statuses("-j", "2") == {"a": "built", "b": "built"}

"""eltmake-target-duckdb, run as a real subprocess the way a Singer runner runs it.

Every test compares what DuckDB holds with exactly what was sent: counts, sums, values and types,
so a loader that drops or duplicates a single row per batch fails here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
sys.path.insert(0, str(PLUGINS))

from eltmake_target_duckdb.columns import (  # noqa: E402
    BIGINT,
    DOUBLE,
    JSON,
    TIMESTAMPTZ,
    VARCHAR,
    column_type,
    widen,
)
from eltmake_target_duckdb.names import sanitize, split_stream  # noqa: E402

COMMAND = [sys.executable, "-m", "eltmake_target_duckdb"]

ORDERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["null", "string"]},
        "amount": {"type": ["null", "number"]},
        "qty": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "paid": {"type": ["null", "boolean"]},
        "created_at": {"type": ["null", "string"], "format": "date-time"},
        "day": {"type": ["null", "string"], "format": "date"},
        "tags": {"type": ["null", "array"], "items": {"type": "string"}},
        "meta": {"type": ["null", "object"]},
    },
}


# --- helpers ---------------------------------------------------------------------------------


def env() -> dict[str, str]:
    """The subprocess environment: the package importable from plugins/ without installing."""
    result = dict(os.environ)
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), result.get("PYTHONPATH")]))
    return result


def schema(stream: str, props: dict[str, Any], keys: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "SCHEMA", "stream": stream, "schema": props, "key_properties": list(keys)}


def record(stream: str, rec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": rec, **extra}


def state(value: Any) -> dict[str, Any]:
    return {"type": "STATE", "value": value}


def encode(messages: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def write_config(tmp_path: Path, **settings: Any) -> Path:
    config = {"path": str(tmp_path / "wh.duckdb"), "default_target_schema": "raw", **settings}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_target(
    tmp_path: Path, messages: Iterable[dict[str, Any]] | bytes, **settings: Any
) -> subprocess.CompletedProcess[bytes]:
    data = messages if isinstance(messages, bytes) else encode(messages)
    config = write_config(tmp_path, **settings)
    return subprocess.run(
        [*COMMAND, "--config", str(config)],
        input=data,
        capture_output=True,
        env=env(),
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[bytes]) -> list[Any]:
    """Assert success and return the STATE values printed."""
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.splitlines()]


def query(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


def types(tmp_path: Path, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in query(tmp_path, f"DESCRIBE {table}")}


def order(i: int) -> dict[str, Any]:
    """A record with every kind of value, some of them null, all derived from ``i``."""
    return {
        "id": i,
        "name": None if i % 11 == 0 else f"name-{i}-é\"'\\",
        "amount": None if i % 13 == 0 else i * 1.25 - 0.1,
        "qty": None if i % 7 == 0 else (i * 37) % 1000 - 500,
        "paid": None if i % 17 == 0 else i % 2 == 0,
        "created_at": f"2024-03-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:05.{i:06d}+02:00",
        "day": f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "tags": [f"t{j}" for j in range(i % 4)],
        "meta": {"n": i, "nested": {"ok": i % 2 == 1}},
    }


def expected_row(rec: dict[str, Any]) -> tuple[Any, ...]:
    created = dt.datetime.fromisoformat(rec["created_at"]).astimezone(dt.UTC)
    return (
        rec["id"],
        rec["name"],
        rec["amount"],
        rec["qty"],
        rec["paid"],
        created,
        dt.date.fromisoformat(rec["day"]),
        rec["tags"],
        rec["meta"],
    )


def loaded_orders(tmp_path: Path, table: str = "raw.orders") -> list[tuple[Any, ...]]:
    rows = query(
        tmp_path,
        f"SELECT id, name, amount, qty, paid, created_at, day, tags, meta FROM {table} ORDER BY id",
    )
    return [(*row[:7], json.loads(row[7]), json.loads(row[8])) for row in rows]


# --- loading exactly what was sent ------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "count", "keys"),
    [(1, 60, ["id"]), (7, 400, []), (7, 400, ["id"]), (1000, 1003, []), (100_000, 1003, ["id"])],
)
def test_loads_exactly_what_was_sent(tmp_path: Path, batch_size: int, count: int, keys: list[str]):
    """Every row, value and type arrives, whatever the batch size and however it splits."""
    records = [order(i) for i in range(count)]
    messages = [schema("orders", ORDERS, keys)]
    for i, rec in enumerate(records):
        messages.append(record("orders", rec))
        if i % 100 == 99:
            messages.append(state({"seen": i + 1}))
    messages.append(state({"seen": count}))
    states = ok(run_target(tmp_path, messages, batch_size_rows=batch_size))

    assert states[-1] == {"seen": count}
    assert [s["seen"] for s in states] == sorted(s["seen"] for s in states)
    assert loaded_orders(tmp_path) == [expected_row(r) for r in records]
    total = query(
        tmp_path, "SELECT count(*), count(DISTINCT id), sum(id), sum(qty) FROM raw.orders"
    )
    assert total == [
        (
            count,
            count,
            sum(range(count)),
            sum(r["qty"] for r in records if r["qty"] is not None),
        )
    ]
    assert types(tmp_path, "raw.orders") == {
        "id": "BIGINT",
        "name": "VARCHAR",
        "amount": "DOUBLE",
        "qty": "BIGINT",
        "paid": "BOOLEAN",
        "created_at": "TIMESTAMP WITH TIME ZONE",
        "day": "DATE",
        "tags": "JSON",
        "meta": "JSON",
    }


def test_upsert_keeps_the_last_occurrence(tmp_path: Path):
    """A re-sent key replaces its row: within a batch, across batches and across runs."""
    props = {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}
    messages = [schema("items", props, ["id"])]
    messages += [record("items", {"id": i % 40, "v": f"first-{i}"}) for i in range(200)]
    ok(run_target(tmp_path, messages, batch_size_rows=30))
    assert query(tmp_path, "SELECT id, v FROM raw.items ORDER BY id") == [
        (k, f"first-{160 + k}") for k in range(40)
    ]
    # A second run re-sends half the keys in one batch (each twice) and adds new ones.
    messages = [schema("items", props, ["id"])]
    messages += [record("items", {"id": k, "v": f"second-{k}-a"}) for k in range(20, 60)]
    messages += [record("items", {"id": k, "v": f"second-{k}-b"}) for k in range(20, 60)]
    ok(run_target(tmp_path, messages))
    rows = query(tmp_path, "SELECT id, v FROM raw.items ORDER BY id")
    assert rows == [(k, f"first-{160 + k}") for k in range(20)] + [
        (k, f"second-{k}-b") for k in range(20, 60)
    ]


def test_last_occurrence_wins_in_a_large_parallel_batch(tmp_path: Path):
    """DuckDB reads a big batch on several threads; file order must still decide the winner."""
    props = {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "integer"}}}
    count, keys = 120_000, 997
    lines = [json.dumps(schema("big", props, ["id"])).encode()]
    lines += [
        b'{"type":"RECORD","stream":"big","record":{"id":%d,"v":%d}}' % (i * 7919 % keys, i)
        for i in range(count)
    ]
    ok(run_target(tmp_path, b"\n".join(lines) + b"\n", settings={"threads": 4}))
    last = {i * 7919 % keys: i for i in range(count)}
    assert dict(query(tmp_path, "SELECT id, v FROM raw.big")) == last


def test_composite_keys_and_appends(tmp_path: Path):
    """Two-column keys upsert on both columns; a stream without keys appends every record."""
    props = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "v": {"type": "integer"}},
    }
    messages = [schema("pairs", props, ["a", "b"]), schema("log", props)]
    for i in range(60):
        rec = {"a": i % 3, "b": f"x{i % 2}", "v": i}
        messages += [record("pairs", rec), record("log", rec)]
    ok(run_target(tmp_path, messages, batch_size_rows=11))
    ok(run_target(tmp_path, messages, batch_size_rows=11))
    assert query(tmp_path, "SELECT a, b, v FROM raw.pairs ORDER BY a, b") == [
        (a, b, max(i for i in range(60) if i % 3 == a and f"x{i % 2}" == b))
        for a in range(3)
        for b in ("x0", "x1")
    ]
    assert query(tmp_path, "SELECT count(*), sum(v) FROM raw.log") == [(120, 2 * sum(range(60)))]


# --- schemas that change ----------------------------------------------------------------------


def test_schema_changes_add_columns_and_widen_types(tmp_path: Path):
    """New properties add columns, wider types widen them, and no earlier value is lost."""

    def props(**types: Any) -> dict[str, Any]:
        return {"type": "object", "properties": {"id": {"type": "integer"}, **types}}

    first = [schema("s", props(v={"type": "integer"}), ["id"])]
    first += [record("s", {"id": i, "v": i * 10}) for i in range(5)]
    first += [schema("s", props(v={"type": "number"}, w={"type": "string"}), ["id"])]
    first += [record("s", {"id": i, "v": i + 0.5, "w": f"w{i}"}) for i in range(5, 10)]
    ok(run_target(tmp_path, first, batch_size_rows=3))
    assert types(tmp_path, "raw.s") == {"id": "BIGINT", "v": "DOUBLE", "w": "VARCHAR"}
    assert query(tmp_path, "SELECT id, v, w FROM raw.s ORDER BY id") == [
        (i, float(i * 10), None) for i in range(5)
    ] + [(i, i + 0.5, f"w{i}") for i in range(5, 10)]

    # Another run: v becomes a string, then the tap narrows it back: the column stays VARCHAR.
    second = [schema("s", props(v={"type": ["string", "null"]}, w={"type": "string"}), ["id"])]
    second += [record("s", {"id": 10, "v": "ten"})]
    second += [schema("s", props(v={"type": "integer"}), ["id"])]
    second += [record("s", {"id": 11, "v": 11, "extra": {"k": [1, 2]}})]
    ok(run_target(tmp_path, second))
    assert types(tmp_path, "raw.s") == {
        "id": "BIGINT",
        "v": "VARCHAR",
        "w": "VARCHAR",
        "extra": "JSON",
    }
    rows = query(tmp_path, "SELECT id, v, w, extra FROM raw.s ORDER BY id")
    assert [r[1] for r in rows] == [f"{float(i * 10)}" for i in range(5)] + [
        f"{i + 0.5}" for i in range(5, 10)
    ] + ["ten", "11"]
    assert rows[-1][3] == '{"k":[1,2]}'
    assert query(tmp_path, "SELECT count(*) FROM raw.s WHERE w IS NOT NULL") == [(5,)]


@pytest.mark.parametrize(
    ("prop", "value", "complaint"),
    [
        ({"type": "integer"}, 1.5, "is not an integer"),
        ({"type": "integer"}, "12", "is not an integer"),
        ({"type": "boolean"}, 1, "is not a boolean"),
        ({"type": "string", "format": "date"}, "2024-01-01T10:00:00", "is not a date"),
        ({"type": "string", "format": "date-time"}, "yesterday", "is not a date-time"),
        ({"type": "string", "format": "time"}, "10:00:00+02:00", "is not a time"),
        ({"type": "integer"}, 2**63, "does not fit BIGINT"),
        ({"type": "number"}, "1.5", "is not a number"),
    ],
)
def test_a_value_that_does_not_fit_fails_loudly(tmp_path: Path, prop, value, complaint):
    """No silent rounding or truncation: the load stops, names the property, keeps earlier data."""
    props = {"type": "object", "properties": {"id": {"type": "integer"}, "v": prop}}
    good = [schema("s", props, ["id"]), record("s", {"id": 1, "v": None}), state({"n": 1})]
    ok(run_target(tmp_path, good))
    done = run_target(tmp_path, [*good, record("s", {"id": 2, "v": value}), state({"n": 2})])
    assert done.returncode == 2
    message = done.stderr.decode().strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "property 'v'" in message and complaint in message
    assert done.stdout == b""  # {"n": 1} waited for a flush that never committed
    assert query(tmp_path, "SELECT id FROM raw.s") == [(1,)]


def test_a_failing_batch_stops_the_states_that_follow_it(tmp_path: Path):
    """Batch 2 of 3 holds a misfit: batch 1 stays committed with its STATE, nothing after."""
    messages = [NUMBERED, *numbered(10, 10)]
    messages += [record("n", {"id": 10, "v": "eleven"}), *numbered(30, 10, start=11)]
    done = run_target(tmp_path, messages, batch_size_rows=10)
    assert done.returncode == 2 and b"property 'v'" in done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"sent": 10}]
    assert committed_ids(tmp_path) == list(range(10))


def test_integral_floats_and_offsets_are_kept_exactly(tmp_path: Path):
    """5.0 is an integer; a date-time offset is applied, not dropped; midnight is a date."""
    props = {
        "type": "object",
        "properties": {
            "i": {"type": "integer"},
            "t": {"type": "string", "format": "date-time"},
            "d": {"type": "string", "format": "date"},
            "big": {"type": "integer"},
        },
    }
    rec = {"i": 5.0, "t": "2024-01-01T10:00:00+02:00", "d": "2024-01-02T00:00:00", "big": 2**62}
    ok(run_target(tmp_path, [schema("s", props), record("s", rec)]))
    assert query(tmp_path, "SELECT i, t, d, big FROM raw.s") == [
        (5, dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC), dt.date(2024, 1, 2), 2**62)
    ]


# --- ACTIVATE_VERSION, empty and interleaved streams ------------------------------------------


def test_activate_version_replaces_the_table(tmp_path: Path):
    props = {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "integer"}}}
    run1 = [schema("t", props, ["id"]), {"type": "ACTIVATE_VERSION", "stream": "t", "version": 1}]
    run1 += [record("t", {"id": i, "v": 1}, version=1) for i in range(10)]
    run1 += [{"type": "ACTIVATE_VERSION", "stream": "t", "version": 1}]
    ok(run_target(tmp_path, run1, batch_size_rows=4))
    assert query(tmp_path, "SELECT count(*), sum(v) FROM raw.t") == [(10, 10)]

    run2 = [schema("t", props, ["id"])]
    run2 += [record("t", {"id": i, "v": 2}, version=2) for i in range(3, 8)]
    run2 += [{"type": "ACTIVATE_VERSION", "stream": "t", "version": 2}, state({"done": 2})]
    assert ok(run_target(tmp_path, run2, batch_size_rows=4)) == [{"done": 2}]
    assert query(tmp_path, "SELECT id, v, _sdc_table_version FROM raw.t ORDER BY id") == [
        (i, 2, 2) for i in range(3, 8)
    ]

    # An append stream, and a version with no records at all: the table empties.
    run3 = [schema("u", props), *[record("u", {"id": i}, version=5) for i in range(4)]]
    run3 += [{"type": "ACTIVATE_VERSION", "stream": "u", "version": 5}]
    run3 += [record("u", {"id": 9}, version=6)]
    run3 += [schema("t", props, ["id"]), {"type": "ACTIVATE_VERSION", "stream": "t", "version": 3}]
    run3 += [{"type": "ACTIVATE_VERSION", "stream": "t", "version": 3}]  # start and end, no rows
    ok(run_target(tmp_path, run3))
    assert query(tmp_path, "SELECT count(*) FROM raw.t") == [(0,)]
    assert query(tmp_path, "SELECT count(*), sum(id) FROM raw.u") == [(5, 15)]


def test_empty_stream_still_gets_its_typed_table(tmp_path: Path):
    states = ok(run_target(tmp_path, [schema("orders", ORDERS, ["id"]), state({"s": 1})]))
    assert states == [{"s": 1}]
    assert query(tmp_path, "SELECT count(*) FROM raw.orders") == [(0,)]
    assert types(tmp_path, "raw.orders")["created_at"] == "TIMESTAMP WITH TIME ZONE"


def test_a_stream_without_properties_waits_for_its_first_one(tmp_path: Path):
    bare = {"type": "object", "properties": {}}
    messages = [schema("bare", bare), schema("later", bare), record("later", {"k": 1})]
    ok(run_target(tmp_path, [*messages, state({"s": 1})]))
    assert query(tmp_path, "SELECT k FROM raw.later") == [("1",)]  # undeclared: JSON
    assert query(tmp_path, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'bare'") == [
        (0,)
    ]
    done = run_target(tmp_path, [schema("bare", bare), record("bare", {})])
    assert done.returncode == 2 and b"records without any property" in done.stderr


def test_interleaved_streams(tmp_path: Path):
    """Several streams in one run, records shuffled together, each table exact."""
    rng = random.Random(7)
    streams = {"a": [], "b": [], "c-public-things": []}
    messages = [schema(name, ORDERS, ["id"] if name != "b" else []) for name in streams]
    pool = [(name, i) for name in streams for i in range(300)]
    rng.shuffle(pool)
    for n, (name, i) in enumerate(pool):
        streams[name].append(order(i))
        messages.append(record(name, order(i)))
        if n % 50 == 0:
            messages.append(state({"n": n}))
    ok(run_target(tmp_path, messages, batch_size_rows=37))
    for name, table in [("a", "raw.a"), ("b", "raw.b"), ("c-public-things", "raw.things")]:
        expected = sorted((expected_row(r) for r in streams[name]), key=lambda row: row[0])
        assert loaded_orders(tmp_path, table) == expected


def test_names_are_sanitised_and_schemas_mapped(tmp_path: Path):
    props = {
        "type": "object",
        "properties": {
            "Order ID": {"type": "integer"},
            "id": {"type": "integer"},
            "ID": {"type": "string"},
            "9lives": {"type": "boolean"},
        },
    }
    messages = [schema("public-Order Lines", props, ["Order ID"])]
    messages += [record("public-Order Lines", {"Order ID": 1, "id": 2, "ID": "x", "9lives": True})]
    messages += [schema("other", {"type": "object", "properties": {"k": {"type": "integer"}}})]
    messages += [record("other", {"k": 1})]
    # Undeclared properties that clash only by case, the second arriving mid-batch.
    messages += [schema("late", {"type": "object", "properties": {"id": {"type": "integer"}}})]
    messages += [record("late", {"id": 1}), record("late", {"id": 2, "X": 1})]
    messages += [record("late", {"id": 3, "x": "two"})]
    mapping = {"public": {"target_schema": "src"}, "other": "elsewhere"}
    ok(run_target(tmp_path, messages, schema_mapping=mapping))
    assert query(tmp_path, "SELECT id, x, x_2 FROM raw.late ORDER BY id") == [
        (1, None, None),
        (2, "1", None),
        (3, None, '"two"'),
    ]
    assert query(tmp_path, 'SELECT order_id, id, id_2, "_9lives" FROM src.order_lines') == [
        (1, 2, "x", True)
    ]
    assert query(tmp_path, "SELECT k FROM elsewhere.other") == [(1,)]


def test_metadata_columns_and_hard_delete(tmp_path: Path):
    props = {"type": "object", "properties": {"id": {"type": "integer"}}}
    extracted = "2024-05-01T12:00:00Z"
    messages = [schema("h", props, ["id"])]
    messages += [record("h", {"id": i}, time_extracted=extracted) for i in range(5)]
    messages += [record("h", {"id": 2, "_sdc_deleted_at": "2024-05-02T00:00:00Z"})]
    ok(run_target(tmp_path, messages, hard_delete=True, batch_size_rows=2))
    assert query(tmp_path, "SELECT id FROM raw.h ORDER BY id") == [(0,), (1,), (3,), (4,)]
    rows = query(
        tmp_path, "SELECT DISTINCT _sdc_extracted_at, _sdc_batched_at IS NOT NULL FROM raw.h"
    )
    assert rows == [(dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC), True)]


# --- STATE only after commit, and crashes -----------------------------------------------------


def numbered(count: int, every: int, start: int = 0) -> Iterable[dict[str, Any]]:
    """Records of a keyed stream, with a STATE saying how many were sent before it."""
    for i in range(start, count):
        yield record("n", {"id": i, "v": i * 3})
        if (i + 1) % every == 0:
            yield state({"sent": i + 1})


NUMBERED = schema(
    "n",
    {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "integer"}}},
    ["id"],
)


class Running:
    """A target process fed from a thread, whose stdout is read line by line as it appears."""

    def __init__(self, tmp_path: Path, messages: Iterable[dict[str, Any]], **settings: Any):
        config = write_config(tmp_path, **settings)
        self.proc = subprocess.Popen(
            [*COMMAND, "--config", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(),
        )
        self.feeder = threading.Thread(target=self._feed, args=(messages,), daemon=True)
        self.feeder.start()

    def _feed(self, messages: Iterable[dict[str, Any]]) -> None:
        assert self.proc.stdin is not None
        try:
            for message in messages:
                self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the target was killed

    def next_state(self, timeout: float = 60) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def kill(self) -> list[Any]:
        """kill -9, then return any STATE lines it had printed but we had not read yet."""
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=30)
        self.feeder.join(timeout=30)
        return [json.loads(line) for line in out.splitlines()]


def committed_ids(tmp_path: Path) -> list[int]:
    return [row[0] for row in query(tmp_path, "SELECT id FROM raw.n ORDER BY id")]


@pytest.mark.parametrize("kill_at", [1, 4])
def test_state_appears_only_after_its_records_are_committed(tmp_path: Path, kill_at: int):
    """Kill -9 the instant the k-th STATE appears: every record before it must be in DuckDB."""
    running = Running(tmp_path, [NUMBERED, *numbered(20_000, 70)], batch_size_rows=500)
    for _ in range(kill_at):
        seen = running.next_state()
        assert seen is not None
    running.kill()
    ids = committed_ids(tmp_path)
    assert seen["sent"] <= len(ids) < 20_000  # killed mid-load
    assert ids == list(range(len(ids)))  # a prefix: nothing lost, nothing duplicated
    assert len(ids) % 500 == 0  # whole batches only: each flush is one transaction


def test_state_waits_for_the_flush_and_passes_through_when_idle(tmp_path: Path):
    """A STATE with nothing pending comes out at once; one after a pending record waits."""
    config = write_config(tmp_path, batch_size_rows=1000)
    proc = subprocess.Popen(
        [*COMMAND, "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(encode([NUMBERED, state({"sent": 0})]))
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready and json.loads(proc.stdout.readline()) == {"sent": 0}
    proc.stdin.write(encode([record("n", {"id": 0, "v": 0}), state({"sent": 1})]))
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 1.0)
    assert not ready  # the record is not committed yet, so its STATE must not be out
    proc.stdin.close()
    assert json.loads(proc.stdout.readline()) == {"sent": 1}
    assert proc.wait(timeout=30) == 0
    assert committed_ids(tmp_path) == [0]


def test_batch_wait_limit_lets_a_slow_tap_checkpoint(tmp_path: Path):
    """With batch_wait_limit_seconds, a STATE behind pending records flushes them promptly."""
    config = write_config(tmp_path, batch_size_rows=1000, batch_wait_limit_seconds=0)
    proc = subprocess.Popen(
        [*COMMAND, "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(encode([NUMBERED, record("n", {"id": 0, "v": 0}), state({"sent": 1})]))
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready and json.loads(proc.stdout.readline()) == {"sent": 1}
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert committed_ids(tmp_path) == [0]


def test_kill_9_mid_load_then_resume_loses_and_duplicates_nothing(tmp_path: Path):
    """Crash at an arbitrary moment, resume from the last STATE printed: exactly every record."""
    total = 30_000
    running = Running(tmp_path, [NUMBERED, *numbered(total, 100)], batch_size_rows=1000)
    last = None
    for _ in range(3):
        last = running.next_state() or last
    time.sleep(random.Random(3).uniform(0.0, 0.2))
    last = ([last, *running.kill()])[-1]
    assert last is not None
    ids = committed_ids(tmp_path)
    assert ids == list(range(len(ids))) and last["sent"] <= len(ids) < total

    # The tap resumes from the bookmark; records after it are sent again and upserted.
    done = run_target(tmp_path, [NUMBERED, *numbered(total, 100, start=last["sent"])])
    assert ok(done)[-1] == {"sent": total}
    assert query(tmp_path, "SELECT count(*), count(DISTINCT id), sum(v) FROM raw.n") == [
        (total, total, 3 * sum(range(total)))
    ]


# --- a real tap from PyPI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tap_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tap-jsonl 0.3.1 (a singer-sdk tap) in its own venv, installed with the uv eltmake depends
    on (found through its package, not PATH: the venv need not be activated)."""
    from uv import find_uv_bin

    uv = find_uv_bin()
    venv = tmp_path_factory.mktemp("tap-jsonl") / "venv"
    made = subprocess.run([uv, "venv", "-q", str(venv)], capture_output=True)
    python = venv / "bin" / "python"
    if made.returncode == 0:
        made = subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), "tap-jsonl==0.3.1"],
            capture_output=True,
        )
    if made.returncode != 0:
        pytest.skip(f"could not install tap-jsonl==0.3.1: {made.stderr.decode().strip()[-200:]}")
    return venv / "bin" / "tap-jsonl"


@pytest.mark.integration
def test_real_tap_into_the_target(tmp_path: Path, tap_jsonl: Path):
    """tap-jsonl | eltmake-target-duckdb: every row, and the tap's own last STATE."""
    rows = [{"id": i, "name": f"n{i}", "amount": i * 1.5} for i in range(3000)]
    data = tmp_path / "orders.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps({"path": str(data), "stream_name": "orders", "primary_keys": ["id"]})
    )
    tap = subprocess.run(
        [str(tap_jsonl), "--config", str(tap_config)], capture_output=True, timeout=120
    )
    assert tap.returncode == 0, tap.stderr.decode()[-500:]
    tap_states = [json.loads(m)["value"] for m in tap.stdout.splitlines() if b'"STATE"' in m]
    states = ok(run_target(tmp_path, tap.stdout, batch_size_rows=700))
    assert states[-1] == tap_states[-1]
    assert query(tmp_path, "SELECT id, name, amount FROM raw.orders ORDER BY id") == [
        (r["id"], r["name"], r["amount"]) for r in rows
    ]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdin", "settings", "needle"),
    [
        (b"", {"path": ""}, "setting 'path' is required"),
        (b"", {"batch_size_rows": 0}, "'batch_size_rows' must be a positive integer"),
        (b"", {"data_flattening_max_level": 2}, "data_flattening_max_level"),
        (b"", {"temp_dir": "/nonexistent/eltmake"}, "'temp_dir': /nonexistent/eltmake is not"),
        (b"", {"schema_mapping": {"public": {}}}, "'schema_mapping.public' needs a target_schema"),
        (b'{"type": "SCHEMA"\n', {}, "line 1: not valid JSON"),
        (
            encode([record("nope", {"id": 1})]),
            {},
            "line 1: RECORD for stream 'nope' before its SCHEMA",
        ),
        (encode([{"type": "BATCH", "stream": "x"}]), {}, "unknown message type 'BATCH'"),
        (
            encode([schema("x", {"type": "object"})]),
            {},
            "line 1: the schema of stream 'x' has no 'properties'",
        ),
        (
            encode([schema("x", {"type": "object", "properties": None})]),
            {},
            "line 1: the schema of stream 'x' has 'properties' not an object",
        ),
        (encode([NUMBERED, record("n", {"v": 1})]), {}, "has no value for key 'id'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, stdin: bytes, settings, needle: str):
    done = run_target(tmp_path, stdin, **settings)
    assert done.returncode == 2
    message = done.stderr.decode().strip()
    assert needle in message and len(message.splitlines()) == 1, message


def test_missing_config_and_unknown_settings(tmp_path: Path):
    done = subprocess.run(COMMAND, input=b"", capture_output=True, env=env())
    assert done.returncode == 2 and b"--config" in done.stderr
    done = run_target(tmp_path, [NUMBERED], batch_size_row=5, flush_all_streams=True)
    assert done.returncode == 0
    assert b"unknown setting 'batch_size_row' (did you mean 'batch_size_rows'?)" in done.stderr
    assert b"flush_all_streams" not in done.stderr


# --- the type and name rules, as functions ----------------------------------------------------


def test_type_rules():
    assert column_type({"type": ["null", "integer"]}) == BIGINT
    assert column_type({"anyOf": [{"type": "integer"}, {"type": "number"}]}) == DOUBLE
    assert column_type({"type": ["integer", "string"]}) == VARCHAR
    assert column_type({"type": "string", "format": "date-time"}) == TIMESTAMPTZ
    assert column_type({"type": ["object", "array", "null"]}) == JSON
    assert column_type({}) == JSON
    assert column_type({"type": ["string", "object"]}) == JSON
    assert column_type({"anyOf": [{"type": "array"}, {"type": "string", "format": "date"}]}) == JSON
    assert column_type({"type": ["null"]}) == VARCHAR
    assert widen(BIGINT, DOUBLE) == DOUBLE
    assert widen(DOUBLE, BIGINT) == DOUBLE  # never narrows
    assert widen(VARCHAR, BIGINT) == VARCHAR
    assert widen("DATE", TIMESTAMPTZ) == TIMESTAMPTZ
    assert widen("HUGEINT", BIGINT) == "HUGEINT"  # a table made by target-duckdb stays as it is
    assert widen("BOOLEAN", JSON) == JSON
    assert widen("TIME", BIGINT) == VARCHAR


def test_name_rules():
    assert sanitize("Order ID") == "order_id"
    assert sanitize("9lives") == "_9lives"
    assert sanitize("") == "_"
    assert split_stream("public-orders") == ("public", "orders")
    assert split_stream("db-public-order-lines") == ("public", "order_lines")
    assert split_stream("orders") == (None, "orders")

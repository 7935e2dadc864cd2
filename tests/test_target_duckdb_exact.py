"""eltmake-target-duckdb keeps every value exactly, or refuses it with one line and exit code 2.

Widening an integer column and integers in number columns. Every test runs the real target on a
real DuckDB file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_target_duckdb import ok, query, record, run_target, schema, state, types

BIG = 2**53 + 1  # 9007199254740993: the smallest positive integer a double cannot hold


def props(**kinds: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {name: kind for name, kind in kinds.items()}}


INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}


def refused(done, *needles: str) -> str:
    """Assert exit 2 with one line on stderr, no traceback, holding every needle; return it."""
    message = done.stderr.decode().strip()
    assert done.returncode == 2, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# --- 1. widening integer -> number, and integers in number columns ----------------------------


def test_widening_refuses_to_round_a_committed_integer(tmp_path: Path):
    """The reported case: 9007199254740993 was rounded and collided with 9007199254740992."""
    first = [schema("s", props(id=INTEGER, v=INTEGER), ["id"])]
    first += [record("s", {"id": BIG, "v": 1}), record("s", {"id": BIG - 1, "v": 2})]
    first += [state({"run": 1})]
    assert ok(run_target(tmp_path, first)) == [{"run": 1}]

    # The same run goes on: the SCHEMA turns id into a number (line 5 of this input).
    second = [*first, schema("s", props(id=NUMBER, v=INTEGER), ["id"])]
    second += [record("s", {"id": 1.5, "v": 3}), state({"run": 2})]
    done = run_target(tmp_path, second)
    refused(done, "line 5:", "raw.s.id DOUBLE", f"holds {BIG}", "cannot hold exactly")
    assert [json.loads(line) for line in done.stdout.splitlines()] == [{"run": 1}]
    assert types(tmp_path, "raw.s")["id"] == "BIGINT"
    assert query(tmp_path, "SELECT id, v FROM raw.s ORDER BY id") == [(BIG - 1, 2), (BIG, 1)]


def test_widening_is_made_when_every_integer_is_exactly_a_double(tmp_path: Path):
    exact = [0, -7, 2**53, -(2**53), 2**62, -(2**63)]  # powers of two are doubles too
    messages = [schema("s", props(id=INTEGER, v=INTEGER), ["id"])]
    messages += [record("s", {"id": i, "v": v}) for i, v in enumerate(exact)]
    messages += [schema("s", props(id=INTEGER, v=NUMBER), ["id"])]
    messages += [record("s", {"id": 10, "v": 0.25})]
    ok(run_target(tmp_path, messages))
    assert types(tmp_path, "raw.s")["v"] == "DOUBLE"
    rows = query(tmp_path, "SELECT id, v FROM raw.s ORDER BY id")
    assert rows == [(i, float(v)) for i, v in enumerate(exact)] + [(10, 0.25)]
    assert [int(v) for _, v in rows[:-1]] == exact


def test_a_hugeint_column_of_another_loader_is_not_rounded_either(tmp_path: Path):
    """target-duckdb made HUGEINT columns: one beyond 2**53 stays HUGEINT, exact."""
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.s (id BIGINT, v HUGEINT)")
    con.execute("INSERT INTO raw.s VALUES (1, ?::HUGEINT), (2, 5)", [str(2**100 + 1)])
    con.close()
    messages = [schema("s", props(id=INTEGER, v=NUMBER), ["id"]), record("s", {"id": 3, "v": 1})]
    refused(run_target(tmp_path, messages), "line 1:", "raw.s.v DOUBLE", str(2**100 + 1))
    assert types(tmp_path, "raw.s")["v"] == "HUGEINT"
    assert query(tmp_path, "SELECT v FROM raw.s ORDER BY id") == [(2**100 + 1,), (5,)]


@pytest.mark.parametrize("value", [BIG, -BIG, 2**64 - 1, 2**63 + 1, 123456789012345679])
def test_a_number_column_refuses_an_integer_it_cannot_hold(tmp_path: Path, value: int):
    messages = [schema("s", props(id=INTEGER, v=NUMBER), ["id"]), record("s", {"id": 1, "v": 1})]
    messages += [state({"n": 1}), record("s", {"id": 2, "v": value})]
    done = run_target(tmp_path, messages, batch_size_rows=1)
    refused(done, "property 'v' (DOUBLE)", f"{value} is an integer that a DOUBLE cannot hold")
    assert done.stdout == b'{"n":1}\n'
    assert query(tmp_path, "SELECT id, v FROM raw.s") == [(1, 1.0)]


def test_a_number_column_takes_the_integers_a_double_holds(tmp_path: Path):
    values = [2**53, -(2**53), 2**63, 2**64 - 2**11, -(2**63), 12, 0]
    messages = [schema("s", props(id=INTEGER, v=NUMBER), ["id"])]
    messages += [record("s", {"id": i, "v": v}) for i, v in enumerate(values)]
    ok(run_target(tmp_path, messages))
    assert query(tmp_path, "SELECT v FROM raw.s ORDER BY id") == [(float(v),) for v in values]
    assert [int(v) for (v,) in query(tmp_path, "SELECT v FROM raw.s ORDER BY id")] == values

"""eltmake-target-duckdb keeps every value exactly, or refuses it with one line and exit code 2.

Widening an integer column, integers in number columns, valid JSON the loader cannot represent
(numbers beyond a double, integers beyond 64 bits, lone surrogates, deep nesting), and object keys
that differ only in key order. Every test runs the real target on a real DuckDB file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_target_duckdb import PLUGINS, ok, query, record, run_target, schema, state, types

sys.path.insert(0, str(PLUGINS))

from eltmake_target_duckdb.limits import (  # noqa: E402
    MAX_READ_DEPTH,
    MAX_RECORD_DEPTH,
    MAX_WRITE_DEPTH,
    explain,
)

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


def deep(depth: int) -> str:
    """JSON text of an array nested ``depth`` levels deep."""
    return "[" * depth + "1" + "]" * depth


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


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


# --- 2, 3. valid JSON the loader cannot represent ---------------------------------------------


ANY = props(v={})


def lines_with(value_text: str, kind: str = "RECORD") -> bytes:
    head = json.dumps(schema("s", ANY, [])).encode() + b"\n"
    if kind == "STATE":
        return head + b'{"type": "STATE", "value": {"b": %s}}\n' % value_text.encode()
    return head + b'{"type": "RECORD", "stream": "s", "record": {"v": %s}}\n' % value_text.encode()


@pytest.mark.parametrize(
    ("value_text", "needles"),
    [
        ("1e400", ["line 2: number 1e400 is out of range", "64-bit float"]),
        ('{"x": [-1.5E+309]}', ["line 2: number -1.5E+309 is out of range"]),
        ('"\\ud800"', ["line 2: string", "lone surrogate \\ud800"]),
        ('"ok \\udc00 then"', ["line 2: string", "lone surrogate \\udc00"]),
        (str(2**64), [f"line 2: integer {2**64} is out of range", "-2^63 to 2^64-1"]),
        (str(-(2**63) - 1), [f"line 2: integer {-(2**63) - 1} is out of range"]),
        ("[1, " + "9" * 300 + "]", ["line 2: integer 999", "…", "is out of range"]),
        (deep(MAX_RECORD_DEPTH), ["line 2: the record of stream 's' is nested 128 levels"]),
        (deep(MAX_WRITE_DEPTH), ["line 2: the record of stream 's' is nested 255 levels"]),
        (deep(600), ["line 2: the record of stream 's' is nested 601 levels deep"]),
        (deep(MAX_READ_DEPTH), ["line 2: JSON nested 1026 levels deep"]),
        (deep(5000), ["line 2: JSON nested 5002 levels deep", "at most 1024"]),
    ],
)
def test_valid_json_the_loader_cannot_represent_is_named(tmp_path: Path, value_text, needles):
    done = run_target(tmp_path, lines_with(value_text))
    message = refused(done, *needles)
    assert "not valid JSON" not in message
    assert done.stdout == b""


@pytest.mark.parametrize(
    ("value_text", "needles"),
    [
        (str(2**64 + 1), [f"line 2: integer {2**64 + 1} is out of range"]),
        (deep(MAX_WRITE_DEPTH), ["line 2: the STATE value is nested 255 levels"]),
    ],
)
def test_a_state_that_cannot_be_printed_exactly_is_refused(tmp_path: Path, value_text, needles):
    """A STATE is printed later, after a commit: a bookmark rounded there would resume wrongly."""
    refused(run_target(tmp_path, lines_with(value_text, "STATE")), *needles)


def test_the_deepest_record_that_fits_is_stored_exactly(tmp_path: Path):
    value = nested(MAX_RECORD_DEPTH - 2, {"k": "leaf"})  # the record {"v": ...} is 127 deep
    ok(run_target(tmp_path, [schema("s", ANY, []), record("s", {"v": value})]))
    assert [json.loads(v) for (v,) in query(tmp_path, "SELECT v FROM raw.s")] == [value]


def test_a_record_too_deep_for_duckdb_is_named_by_its_input_line(tmp_path: Path):
    """DuckDB only says some record is too deep: the target finds it and names its line."""
    messages = [schema("s", ANY, []), schema("t", ANY, []), state({"n": 0})]
    for i in range(6):
        messages += [record("s", {"v": i}), record("t", {"v": i})]
    messages.insert(9, record("s", {"v": nested(MAX_RECORD_DEPTH)}))  # line 10
    messages += [record("s", {"v": nested(MAX_RECORD_DEPTH + 1)})]  # deeper, but later
    done = run_target(tmp_path, messages, batch_size_rows=100)
    refused(done, "line 10: the record of stream 's' is nested 128 levels deep", "at most 127")
    assert done.stdout == b'{"n":0}\n'


def test_integers_at_the_64_bit_limits_and_big_floats_load_exactly(tmp_path: Path):
    """The slow path for exponent floats finds nothing to refuse: every value arrives as sent."""
    rec = {"v": [2**64 - 1, -(2**63), 1e300, 1.5e19, "e+ in a string"]}
    messages = [schema("s", ANY, []), record("s", rec), state({"bookmark": 2**64 - 1})]
    assert ok(run_target(tmp_path, messages)) == [{"bookmark": 2**64 - 1}]
    assert [json.loads(v) for (v,) in query(tmp_path, "SELECT v FROM raw.s")] == [rec["v"]]


@pytest.mark.parametrize(
    "line",
    [
        b'{"type": "RECORD", "stream": "s", "record": {"v": 1e400}',
        b'{"type": "RECORD", "stream": "s", "record": {"v": [1e400,]}}',
        b'{"type": "RECORD", "stream": "s", "record": {"v": NaN}}',
        b'{"type": "RECORD", "stream": "s", "record": {"v": "\\ud800}}',
        b'{"type": "RECORD", "stream": "s", "record": {"v": ' + b"[" * 2000 + b"}}",
    ],
)
def test_invalid_json_is_still_called_invalid(tmp_path: Path, line: bytes):
    head = json.dumps(schema("s", ANY, [])).encode() + b"\n"
    refused(run_target(tmp_path, head + line + b"\n"), "line 2: not valid JSON")


def test_the_scanner_agrees_with_a_strict_json_parser():
    """explain() calls a line invalid exactly when Python's strict json module does."""

    def strict(text: str) -> bool:
        def no_constants(name: str) -> None:
            raise ValueError(name)

        try:
            json.loads(text, parse_constant=no_constants)
        except ValueError:
            return False
        return True

    texts = [
        "[1,]", '{"a":1,}', '{"a" 1}', "01", "1.", ".5", "-", "- 1", '"\x01"', '"\\x"', "tru",
        "[1 2]", '{"a":1}}', "[]]", '"abc', "{1:2}", "NaN", "-Infinity", "1e", "1e+", "[", "]",
        '{"a":[}]', "", " ", "[] []", '{"a":1 "b":2}', '["a",]', "[-]", "[1e5.0]", "0x10",
        "[1, 2.5e-3, -0, 0.0, true, false, null]", '{"a": {"b": [{}, []]}, "c": ""}', "  7  ",
        '"\\u00e9\\ud83d\\ude00\\n"', '{"":""}', "-0.5E-2", "[[[[]]]]", '"\\/"', "\t[\r\n]",
    ]  # fmt: skip
    for text in texts:
        called_invalid = "not valid JSON" in explain(1, text.encode(), ValueError("x"))
        assert called_invalid == (not strict(text)), text


# --- 4. object and array keys compare canonically ---------------------------------------------


def test_object_keys_in_another_order_are_the_same_key(tmp_path: Path):
    key_props = props(k={"type": "object"}, v=INTEGER)
    messages = [schema("o", key_props, ["k"])]
    messages += [record("o", {"k": {"a": 1, "b": 2}, "v": 1})]
    messages += [record("o", {"k": {"b": 2, "a": 1}, "v": 2})]  # same batch
    messages += [record("o", {"k": {"z": {"y": 1, "x": [{"q": 1, "p": 2}]}, "a": 0}, "v": 3})]
    ok(run_target(tmp_path, messages))
    # A later run, another batch, the nested keys in yet another order.
    again = [schema("o", key_props, ["k"])]
    again += [record("o", {"k": {"a": 0, "z": {"x": [{"p": 2, "q": 1}], "y": 1}}, "v": 4})]
    again += [record("o", {"k": {"b": 2, "a": 1}, "v": 5})]
    ok(run_target(tmp_path, again))
    rows = [(json.loads(k), v) for k, v in query(tmp_path, "SELECT k, v FROM raw.o ORDER BY v")]
    assert rows == [({"a": 0, "z": {"x": [{"p": 2, "q": 1}], "y": 1}}, 4), ({"a": 1, "b": 2}, 5)]


def test_array_keys_and_composite_keys_compare_canonically(tmp_path: Path):
    key_props = props(k={"type": "array"}, n=INTEGER, v=INTEGER)
    messages = [schema("a", key_props, ["k", "n"])]
    messages += [record("a", {"k": [{"b": 1, "a": 2}], "n": 1, "v": 1})]
    messages += [record("a", {"k": [{"a": 2, "b": 1}], "n": 1, "v": 2})]  # same key
    messages += [record("a", {"k": [{"a": 2, "b": 1}], "n": 2, "v": 3})]  # other n
    messages += [record("a", {"k": [2, 1], "n": 1, "v": 4}), record("a", {"k": [1, 2], "n": 1})]
    ok(run_target(tmp_path, messages, batch_size_rows=2))
    rows = query(tmp_path, "SELECT k, n, v FROM raw.a ORDER BY n, k")
    assert [(json.loads(k), n, v) for k, n, v in rows] == [
        ([1, 2], 1, None),
        ([2, 1], 1, 4),  # array order is data: [2, 1] is not [1, 2]
        ([{"a": 2, "b": 1}], 1, 2),
        ([{"a": 2, "b": 1}], 2, 3),
    ]

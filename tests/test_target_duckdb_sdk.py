"""The Singer SDK's own target test streams, run through eltmake-target-duckdb.

singer-sdk ships the streams its standard target tests feed every SDK target
(``singer_sdk/testing/target_test_streams/*.singer``) and, in ``singer_sdk/testing/target_tests.py``,
which of them a target must refuse (the tests wrapped in ``pytest.raises``). singer-sdk is not a
dependency of eltmake: it is installed once, without its dependencies, into the shared tools folder
with uv (eltmake's own dependency), and only its files are read.

A stream that should load is replayed here (upsert by its key_properties, else append) and the
DuckDB file must hold exactly the resulting rows; a stream the SDK expects to fail must fail with
one line and exit code 2, having loaded nothing.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from test_target_duckdb import COMMAND, PLUGINS, env, query, run_target

sys.path.insert(0, str(PLUGINS))

from eltmake_target_duckdb.names import sanitize, split_stream  # noqa: E402

SDK = "singer-sdk>=0.54,<0.55"
STREAMS = Path("singer_sdk", "testing", "target_test_streams")

# Every stream the SDK ships. The refused ones, with what the one-line error says.
LOADED = [
    "array_data",
    "camelcase",
    "camelcase_complex_schema",
    "duplicate_records",
    "encoded_string_data",
    "multiple_state_messages",
    "no_primary_keys",
    "no_primary_keys_append",
    "optional_attributes",
    "pk_updates",
    "record_missing_fields",
    "record_missing_required_property",
    "schema_no_properties",
    "schema_updates",
    "special_chars_in_attributes",
    "user_location_data",
    "user_location_upsert_data",
]
REFUSED = {
    "invalid_schema": "line 1: the schema of stream 'test_invalid_schema' has no 'properties'",
    "record_before_schema": "line 1: RECORD for stream 'test_record_before_schema' before its SCHEMA",
    "record_missing_key_property": (
        "stream 'test_record_missing_key_property': a record has no value for key 'id'"
    ),
}


@pytest.fixture(scope="session")
def sdk(tools_dir: str) -> Path:
    """singer-sdk's files, installed once into the tools folder (no dependencies, nothing run)."""
    from uv import find_uv_bin

    folder = Path(tools_dir) / "singer-sdk-0.54"
    if not (folder / STREAMS).is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".singer-sdk-", dir=tools_dir))
        done = subprocess.run(
            [find_uv_bin(), "pip", "install", "--quiet", "--no-deps", "--target", str(staging)]
            + ["--python", sys.executable, SDK],
            capture_output=True,
            timeout=600,
        )
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.skip(f"could not install {SDK}: {done.stderr.decode().strip()[-300:]}")
        try:
            os.rename(staging, folder)  # atomic: a parallel session either wins or finds it there
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def refused_by_the_sdk(sdk: Path) -> set[str]:
    """The streams whose standard test in target_tests.py expects the target to raise."""
    tree = ast.parse((sdk / "singer_sdk" / "testing" / "target_tests.py").read_text())
    refused = set()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        names = [
            stmt.value.value
            for stmt in node.body
            if isinstance(stmt, ast.Assign)
            and [getattr(t, "id", None) for t in stmt.targets] == ["name"]
            and isinstance(stmt.value, ast.Constant)
        ]
        raises = any(
            isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "raises"
            for call in ast.walk(node)
        )
        if names and raises:
            refused.add(names[0])
    return refused


@pytest.mark.integration
def test_every_sdk_stream_is_covered_and_the_refusals_match(sdk: Path):
    shipped = {path.stem for path in (sdk / STREAMS).glob("*.singer")}
    assert shipped == set(LOADED) | set(REFUSED)
    assert refused_by_the_sdk(sdk) == set(REFUSED)


def replay(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What each stream's table must hold: its properties, and its rows (upserted or appended)."""
    streams: dict[str, dict[str, Any]] = {}
    for message in messages:
        if message["type"] == "SCHEMA":
            stream = streams.setdefault(message["stream"], {"props": [], "rows": {}})
            stream["keys"] = message.get("key_properties") or []
            stream["props"] += [
                p for p in message["schema"]["properties"] if p not in stream["props"]
            ]
        elif message["type"] == "RECORD":
            stream = streams[message["stream"]]
            rec = message["record"]
            stream["props"] += [p for p in rec if p not in stream["props"]]
            key = tuple(rec[k] for k in stream["keys"]) if stream["keys"] else len(stream["rows"])
            stream["rows"][key] = rec
    return streams


def same_rows(loaded: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Equal as multisets of rows, comparing values with == (a DOUBLE 101.0 is the JSON 101)."""
    left = list(loaded)
    for row in wanted:
        if row not in left:
            return False
        left.remove(row)
    return not left


@pytest.mark.integration
@pytest.mark.parametrize("name", LOADED)
def test_an_sdk_stream_loads_exactly(tmp_path: Path, sdk: Path, name: str):
    data = (sdk / STREAMS / f"{name}.singer").read_bytes()
    messages = [json.loads(line) for line in data.splitlines() if line.strip()]
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    done = run_target(tmp_path, data)
    assert done.returncode == 0, done.stderr.decode()
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert printed == states[-1:]  # one batch: the last STATE, once everything is committed

    for stream, expected in replay(messages).items():
        table = f"raw.{sanitize(split_stream(stream)[1])}"
        described = dict((row[0], row[1]) for row in query(tmp_path, f"DESCRIBE {table}"))
        columns = {prop: sanitize(prop) for prop in expected["props"]}
        assert set(columns.values()) <= set(described), (stream, described)
        select = ", ".join(f'"{column}"' for column in columns.values())
        loaded = []
        for row in query(tmp_path, f"SELECT {select} FROM {table}"):
            values = {}
            for (prop, column), value in zip(columns.items(), row, strict=True):
                if described[column] == "JSON" and value is not None:
                    value = json.loads(value)
                values[prop] = value
            loaded.append(values)
        wanted = [{prop: rec.get(prop) for prop in columns} for rec in expected["rows"].values()]
        assert same_rows(loaded, wanted), (stream, loaded, wanted)


@pytest.mark.integration
def test_sdk_streams_spot_checks(tmp_path: Path, sdk: Path):
    """What the replay cannot see: the values it compares are the ones the SDK meant."""

    def load(name: str, where: Path, **settings: Any) -> list[Any]:
        where.mkdir()
        done = run_target(where, (sdk / STREAMS / f"{name}.singer").read_bytes(), **settings)
        assert done.returncode == 0, done.stderr.decode()
        return [json.loads(line) for line in done.stdout.splitlines()]

    load("duplicate_records", tmp_path / "dup")
    rows = query(tmp_path / "dup", "SELECT id, metric FROM raw.test_duplicate_records ORDER BY id")
    assert rows == [(1, 100), (2, 20)]

    load("encoded_string_data", tmp_path / "enc")
    info = dict(query(tmp_path / "enc", "SELECT id, info FROM raw.test_strings"))
    assert info[2] == "απλή συμβολοσειρά" and info[8] == "ā"
    assert info[10] == "Double quoting: \\u0000 \\u0041 \\u0001"
    assert info[11] == "Control Characters in string: \x00 A \x01"

    load("special_chars_in_attributes", tmp_path / "sc")
    table = "raw.test_specialchars_in_attributes"
    assert query(tmp_path / "sc", f"SELECT _id, d, _sdc_table_version FROM {table}") == [
        (
            "a2e98886",
            '{"env":"prod","agent:type":"desktop","agent:os:version":"10.13.1"}',
            1541199424491,
        )
    ]

    # Every STATE is printed, in order, once the records before it are committed.
    states = load("multiple_state_messages", tmp_path / "st", batch_size_rows=1)
    assert states == [
        {"test_multiple_state_messages_a": a, "test_multiple_state_messages_b": b}
        for a, b in [(1, 0), (2, 1), (3, 2), (5, 3), (5, 6)]
    ]

    load("schema_updates", tmp_path / "su")
    described = dict(
        (row[0], row[1]) for row in query(tmp_path / "su", "DESCRIBE raw.test_schema_updates")
    )
    assert described == {
        "id": "BIGINT",
        "a1": "DOUBLE",
        "a2": "VARCHAR",
        "a3": "BOOLEAN",
        "a4": "JSON",
        "a5": "JSON",
        "a6": "BIGINT",
    }


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_sdk_stream_the_sdk_expects_to_fail_is_refused(tmp_path: Path, sdk: Path, name: str):
    done = run_target(tmp_path, (sdk / STREAMS / f"{name}.singer").read_bytes())
    message = done.stderr.decode().strip()
    assert done.returncode == 2, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert REFUSED[name] in message, message
    assert done.stdout == b""
    # Nothing was loaded: not even a table (it would have been made in the failed transaction).
    assert query(tmp_path, "SELECT count(*) FROM duckdb_tables()") == [(0,)]


def test_about_and_version_print(tmp_path: Path):
    """The SDK's cli_prints test: --version and --about answer without a config."""
    version = subprocess.run([*COMMAND, "--version"], capture_output=True, env=env(), timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(b"eltmake-target-duckdb ")
    about = subprocess.run([*COMMAND, "--about"], capture_output=True, env=env(), timeout=60)
    assert about.returncode == 0
    assert json.loads(about.stdout)["name"] == "eltmake-target-duckdb"

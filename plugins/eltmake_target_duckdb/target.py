"""The Singer message loop: buffer records per stream, flush in bulk, report STATE once committed.

The one promise a runner relies on: a STATE line is written to stdout only after every record
that came before it on stdin is committed in DuckDB. Records are buffered until ``batch_size_rows``
of them (all streams together) are pending; then every stream is handed to the committer as one
transaction, together with the latest STATE received, which the committer prints after the
commit. A STATE that arrives while nothing is pending is queued behind the flushes already handed
over, so it too is printed only once everything before it is committed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from .committer import Committer, Work
from .config import Settings
from .errors import InputError
from .limits import MAX_WRITE_DEPTH, explain, has_exponent, too_deep, wide_integer
from .names import sanitize, split_stream
from .stream import EXTRACTED_AT, VERSION_COLUMN, Activation, Stream
from .warehouse import Warehouse

_NEWLINE = orjson.OPT_APPEND_NEWLINE
_SORTED = orjson.OPT_SORT_KEYS


class Target:
    """Loads one run's messages into a warehouse."""

    def __init__(self, settings: Settings, warehouse: Warehouse, out: IO[bytes], folder: Path):
        self.settings = settings
        self.folder = folder
        self.streams: dict[str, Stream] = {}
        self.tables: dict[tuple[str, str], str] = {}  # (schema, table) -> stream loading it
        self.pending = 0
        self.state: Any = None
        self.state_unsent = False
        self.batch_started = time.monotonic()
        self.committer = Committer(warehouse, out)

    def run(self, lines: Iterable[bytes]) -> None:
        """Consume every message, then flush what is left and print the last STATE."""
        loads, dumps = orjson.loads, orjson.dumps
        streams = self.streams
        batch_size = self.settings.batch_size_rows
        decorate = self.settings.metadata_columns
        for lineno, line in enumerate(lines, 1):
            try:
                message = loads(line)
                kind = message["type"]
            except Exception:
                if not line.strip():
                    continue
                raise InputError(_bad_line(lineno, line)) from None
            if kind == "RECORD":
                try:
                    stream = streams[message["stream"]]
                    record = message["record"]
                    if not record.keys() <= stream.known:
                        self._undeclared(stream, record)
                except (KeyError, TypeError, AttributeError):
                    raise InputError(self._bad_record(lineno, message)) from None
                if decorate or "version" in message:
                    self._decorate(stream, message, record)
                try:
                    # An object or array key is compared as text: write it with sorted keys, so
                    # {"a":1,"b":2} and {"b":2,"a":1} are one key.
                    for prop in stream.object_keys:
                        value = record.get(prop)
                        if value.__class__ is dict or value.__class__ is list:
                            record[prop] = loads(dumps(value, option=_SORTED))
                    if stream.rename is not None:
                        rename = stream.rename
                        record = {rename[prop]: value for prop, value in record.items()}
                    data = dumps(record, option=_NEWLINE)
                except orjson.JSONEncodeError:
                    what = f"the record of stream '{stream.name}'"
                    raise InputError(too_deep(lineno, what, record)) from None
                if 43 in data and has_exponent(data):  # 43: "+", as in 1.8446744073709552e+19
                    self._exact_integers(lineno, line)  # a float that may be a wide integer
                out = stream.batch_file or stream.open_batch(self.folder)
                out.write(data)
                stream.lines.append(lineno)  # to name the line if DuckDB refuses the record
                stream.pending += 1
                self.pending += 1
                if self.pending >= batch_size:
                    self.flush()
            elif kind == "STATE":
                self._state(lineno, line, message)
            elif kind == "SCHEMA":
                self._schema(lineno, message)
            elif kind == "ACTIVATE_VERSION":
                self._activate(lineno, message)
            else:
                raise InputError(f"line {lineno}: unknown message type {kind!r}")
        self.flush()
        self.finish()

    def flush(self, activate: tuple[Stream, int] | None = None) -> None:
        """Hand every pending record (and table change) to the committer as one transaction.

        The latest STATE received goes with it: the committer prints it after the commit.
        """
        batches = tuple(
            stream.take_batch()
            for stream in self.streams.values()
            if stream.needs_ddl or stream.pending
        )
        activation = None
        if activate is not None:
            stream, version = activate
            column = stream.columns[VERSION_COLUMN].name
            activation = Activation(stream.name, stream.schema_name, stream.table, column, version)
        if batches or activation or self.state_unsent:
            self.committer.submit(
                Work(batches, activation, has_state=self.state_unsent, state=self.state)
            )
        self.state_unsent = False
        self.pending = 0
        self.batch_started = time.monotonic()

    def finish(self) -> None:
        """Wait for the committer to commit everything queued; re-raise its failure, if any."""
        self.committer.finish()

    def close(self) -> None:
        """Stop the committer (letting it finish what was queued) and close the batch files."""
        try:
            self.committer.finish()
        except Exception:
            pass  # already reported by finish(), or superseded by the error being raised
        for stream in self.streams.values():
            stream.close()

    @property
    def rows_loaded(self) -> int:
        """Rows committed so far."""
        return self.committer.rows_loaded

    def _state(self, lineno: int, line: bytes, message: dict[str, Any]) -> None:
        if "value" not in message:
            raise InputError(f"line {lineno}: STATE message has no 'value'")
        value = message["value"]
        try:  # the committer prints it later: make sure it can, and prints it exactly
            if has_exponent(orjson.dumps(value)):
                self._exact_integers(lineno, line)
        except orjson.JSONEncodeError:
            raise InputError(too_deep(lineno, "the STATE value", value, MAX_WRITE_DEPTH)) from None
        self.state = value
        self.state_unsent = True
        if not self.pending:  # everything before it is committed or queued ahead of it
            self.flush()
            return
        limit = self.settings.batch_wait_limit_seconds
        if limit is not None and time.monotonic() - self.batch_started >= limit:
            self.flush()

    def _schema(self, lineno: int, message: dict[str, Any]) -> None:
        name = message.get("stream")
        schema = message.get("schema")
        keys = message.get("key_properties") or []
        if not isinstance(name, str) or not name:
            raise InputError(f"line {lineno}: SCHEMA message has no 'stream' name")
        if not isinstance(schema, dict):
            raise InputError(f"line {lineno}: SCHEMA for stream '{name}' has no 'schema' object")
        if not isinstance(schema.get("properties"), dict):
            got = "no 'properties'" if "properties" not in schema else "'properties' not an object"
            raise InputError(
                f"line {lineno}: the schema of stream '{name}' has {got}: a stream's schema must"
                " be an object schema listing its properties ('properties': {} is allowed)"
            )
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InputError(
                f"line {lineno}: 'key_properties' of stream '{name}' must be a list of names"
            )
        if not keys and self.settings.primary_key_required:
            raise InputError(
                f"line {lineno}: stream '{name}' has no key_properties and primary_key_required is"
                " set (set it to false to append such streams)"
            )
        stream = self.streams.get(name)
        if stream is not None and stream.schema_message == (schema, keys):
            return  # a re-sent identical SCHEMA: nothing to do, and no reason to flush
        if self.pending:
            self.flush()  # rows written under the previous SCHEMA load under it
        if stream is None:
            stream = self._new_stream(lineno, name)
        stream.apply_schema(schema, keys, self.settings.metadata_columns, lineno)
        stream.schema_message = (schema, keys)

    def _new_stream(self, lineno: int, name: str) -> Stream:
        source_schema, table = split_stream(name)
        mapping = self.settings.schema_mapping
        target = mapping.get(name) or (mapping.get(source_schema) if source_schema else None)
        place = (sanitize(target or self.settings.default_target_schema), sanitize(table))
        other = self.tables.get(place)
        if other is not None:
            raise InputError(
                f"line {lineno}: streams '{other}' and '{name}' would both load into"
                f" {place[0]}.{place[1]} (map one to another schema with schema_mapping)"
            )
        self.tables[place] = name
        stream = Stream(name=name, schema_name=place[0], table=place[1])
        self.streams[name] = stream
        return stream

    def _activate(self, lineno: int, message: dict[str, Any]) -> None:
        name = message.get("stream")
        version = message.get("version")
        stream = self.streams.get(name) if isinstance(name, str) else None
        if stream is None:
            raise InputError(
                f"line {lineno}: ACTIVATE_VERSION for stream {name!r} before its SCHEMA"
            )
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError(
                f"line {lineno}: ACTIVATE_VERSION of stream '{name}' needs an integer version"
            )
        stream.declare_version()
        self.flush(activate=(stream, version))

    @staticmethod
    def _exact_integers(lineno: int, line: bytes) -> None:
        problem = wide_integer(lineno, line)
        if problem is not None:
            raise InputError(problem)

    def _undeclared(self, stream: Stream, record: Any) -> None:
        if not isinstance(record, dict):
            raise TypeError
        if stream.pending and stream.clashes_with(record):
            self.flush()  # the batch file switches to column-name keys: start a fresh one
        stream.declare_extra(record)

    def _decorate(self, stream: Stream, message: dict[str, Any], record: dict[str, Any]) -> None:
        if self.settings.metadata_columns:
            record[EXTRACTED_AT] = message.get("time_extracted") or record.get(EXTRACTED_AT)
        version = message.get("version")
        if version is not None:
            if not stream.versioned:
                if stream.pending and stream.clashes_with({VERSION_COLUMN: None}):
                    self.flush()
                stream.declare_version()
            record[VERSION_COLUMN] = version

    def _bad_record(self, lineno: int, message: Any) -> str:
        name = message.get("stream") if isinstance(message, dict) else None
        if not isinstance(name, str):
            return f"line {lineno}: RECORD message has no 'stream' name"
        if name not in self.streams:
            return f"line {lineno}: RECORD for stream '{name}' before its SCHEMA"
        if not isinstance(message.get("record"), dict):
            return f"line {lineno}: RECORD of stream '{name}' has no 'record' object"
        return f"line {lineno}: malformed RECORD of stream '{name}'"


def _bad_line(lineno: int, line: bytes) -> str:
    shown = line[:80].decode("utf-8", "replace").rstrip()
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return explain(lineno, line, exc)
    if not isinstance(message, dict):
        return f"line {lineno}: a Singer message must be a JSON object: {shown!r}"
    return f"line {lineno}: message has no 'type': {shown!r}"

"""The DuckDB side: one connection, one transaction per flush, bulk loads through read_json.

Every flush is a single transaction holding the DDL its rows need (CREATE, ADD COLUMN, widening
ALTERs), the rows themselves and any ACTIVATE_VERSION delete, so a crash at any instant leaves the
database as it was after the previous flush.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import orjson

from .columns import alter_may_round, canonical, read_spec, widen
from .config import Settings
from .errors import InputError, TargetError
from .limits import MAX_RECORD_DEPTH, nesting_depth, too_deep
from .names import ident, literal
from .stream import Activation, Batch, Column

# A record is one JSON object in the batch file; DuckDB refuses larger ones (its default is 16 MiB).
MAX_RECORD_BYTES = 256 * 1024 * 1024
_ORDER = '"#ord"'  # a column name sanitize() can never produce
_BATCH_TABLE = '"#eltmake_batch"'


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _deep_record(stream: Batch) -> str | None:
    """Name the record DuckDB's JSON reader found too deeply nested (DuckDB says only that one is).

    Runs only after that failure: reads the batch file again to find the record and its line.
    """
    if stream.path is None:
        return None
    with open(stream.path, "rb") as batch:
        for index, line in enumerate(batch):
            record = orjson.loads(line)
            if nesting_depth(record) > MAX_RECORD_DEPTH and index < len(stream.lines):
                what = f"the record of stream '{stream.stream}'"
                return too_deep(stream.lines[index], what, record)
    return None


class Warehouse:
    """A DuckDB database file opened for loading."""

    def __init__(self, settings: Settings) -> None:
        path = settings.path
        config = {"motherduck_token": settings.token} if settings.token else {}
        if path != ":memory:" and not path.startswith(("md:", "motherduck:")):
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(path, config=config)
        except duckdb.Error as exc:
            raise TargetError(f"cannot open database {path}: {_one_line(exc)}") from None
        try:  # Naive date-times are read as UTC, and TIMESTAMPTZ values show in UTC.
            self.con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:
            pass  # without the ICU extension DuckDB's time zone is UTC anyway
        for name, value in settings.duckdb_settings.items():
            try:
                self.con.execute(f"SET {name} = {literal(value)}")
            except duckdb.Error as exc:
                raise InputError(f"setting 'settings.{name}': {_one_line(exc)}") from None
        self.hard_delete = settings.hard_delete

    def close(self) -> None:
        """Close the connection (DuckDB checkpoints the write-ahead log into the file)."""
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a flush as one transaction; any error rolls all of it back."""
        self.con.begin()
        try:
            yield
        except BaseException:
            try:
                self.con.rollback()
            except duckdb.Error:
                pass  # the failed statement already aborted the transaction
            raise
        try:
            self.con.commit()
        except duckdb.Error as exc:
            raise TargetError(f"commit failed: {_one_line(exc)}") from None

    def ensure_table(self, stream: Batch) -> dict[str, str] | None:
        """Create the stream's table, add missing columns and widen types, never narrowing.

        Returns the table's column types (the load reads values as these), or None when the
        stream has no column yet.
        """
        table = f"{ident(stream.schema_name)}.{ident(stream.table)}"
        if not stream.columns:  # DuckDB has no zero-column tables: wait for a first property
            if stream.rows:
                raise InputError(
                    f"stream '{stream.stream}': records without any property cannot be stored"
                    " (the SCHEMA declares none and the records carry none)"
                )
            return None
        try:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(stream.schema_name)}")
            existing = {
                name.lower(): canonical(kind)
                for name, kind in self.con.execute(
                    "SELECT column_name, data_type FROM duckdb_columns()"
                    " WHERE database_name = current_database()"
                    " AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
                    [stream.schema_name, stream.table],
                ).fetchall()
            }
            types: dict[str, str] = {}
            if not existing:
                for column in stream.columns:
                    types[column.name] = canonical(column.wanted)
                defs = ", ".join(f"{ident(name)} {kind}" for name, kind in types.items())
                self.con.execute(f"CREATE TABLE {table} ({defs})")
            else:
                for column in stream.columns:
                    have = existing.get(column.name)
                    if have is None:
                        kind = canonical(column.wanted)
                        self.con.execute(
                            f"ALTER TABLE {table} ADD COLUMN {ident(column.name)} {kind}"
                        )
                    else:
                        kind = widen(have, column.wanted)
                        if kind != have:
                            if alter_may_round(have, kind):
                                self._check_exact(stream, column, kind)
                            self.con.execute(
                                f"ALTER TABLE {table} ALTER COLUMN {ident(column.name)}"
                                f" SET DATA TYPE {kind}"
                            )
                    types[column.name] = kind
        except duckdb.Error as exc:
            raise TargetError(
                f"stream '{stream.stream}': cannot prepare table {stream.schema_name}.{stream.table}:"
                f" {_one_line(exc)}"
            ) from None
        return types

    def _check_exact(self, stream: Batch, column: Column, kind: str) -> None:
        """Refuse to ALTER an integer column to ``kind`` when that would round a value in it.

        A DOUBLE holds integers exactly only up to 2**53: 9007199254740993 would become
        9007199254740992, and in a keyed table two rows would then share one key.
        """
        table = f"{ident(stream.schema_name)}.{ident(stream.table)}"
        name = ident(column.name)
        row = self.con.execute(
            f"SELECT {name}::VARCHAR FROM {table} WHERE {name} IS NOT NULL"
            f" AND TRY_CAST({name}::{kind} AS HUGEINT) IS DISTINCT FROM {name}::HUGEINT LIMIT 1"
        ).fetchone()
        if row is not None:
            where = f"line {column.line}: " if column.line else ""
            raise InputError(
                f"{where}stream '{stream.stream}': the SCHEMA makes column"
                f" {stream.schema_name}.{stream.table}.{column.name} {kind}, but it holds"
                f" {row[0]}, which a {kind} cannot hold exactly; nothing was loaded (keep the"
                f" property an integer, or ALTER the column to JSON or VARCHAR, which hold both)"
            )

    def load(self, stream: Batch, types: dict[str, str]) -> None:
        """Load one batch file: append it, or upsert it when the stream has key properties.

        An upsert stages the batch in a temporary table, numbering the file's lines with WITH
        ORDINALITY; when a key occurs more than once (rare: checked with one cheap GROUP BY) only
        its last line is kept. Then the rows it replaces are deleted and the batch inserted.
        """
        table = f"{ident(stream.schema_name)}.{ident(stream.table)}"
        struct, selects, names = [], [], []
        keys = stream.keys
        for i, (key, column) in enumerate(stream.from_file):
            kind = types[column.name]
            label = f"stream '{stream.stream}', property '{key}' ({kind})"
            read_type, template = read_spec(kind, label)
            struct.append(f"{literal(key)}: {literal(read_type)}")
            expr = template.replace("{v}", f"c{i}")
            if column.name in keys:
                missing = literal(
                    f"stream '{stream.stream}': a record has no value for key '{key}'"
                )
                expr = f"COALESCE({expr}, error({missing}))"
            selects.append(f"{expr} AS {ident(column.name)}")
            names.append(column.name)
        for column in stream.columns:
            if not column.from_batch:  # _sdc_batched_at: the time of this flush
                selects.append(f"now() AS {ident(column.name)}")
                names.append(column.name)
        aliases = ", ".join(f"c{i}" for i in range(len(struct)))
        source = (
            f"read_json({literal(str(stream.path))}, format = 'newline_delimited',"
            f" columns = {{{', '.join(struct)}}}, maximum_object_size = {MAX_RECORD_BYTES})"
        )
        column_list = ", ".join(ident(name) for name in names)
        keep = ""
        if self.hard_delete and stream.deleted_column is not None:
            keep = f" WHERE {ident(stream.deleted_column)} IS NULL"
        try:
            if not keys:
                self.con.execute(
                    f"INSERT INTO {table} ({column_list}) SELECT * FROM"
                    f" (SELECT {', '.join(selects)} FROM {source} AS src({aliases})){keep}"
                )
                return
            key_list = ", ".join(ident(name) for name in keys)
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_BATCH_TABLE} AS SELECT {', '.join(selects)},"
                f" {_ORDER} FROM {source} WITH ORDINALITY AS src({aliases}, {_ORDER})"
            )
            repeated = self.con.execute(
                f"SELECT 1 FROM {_BATCH_TABLE} GROUP BY {key_list} HAVING count(*) > 1 LIMIT 1"
            ).fetchone()
            if repeated:  # the same key twice in one batch: keep its last line only
                match = " AND ".join(f"b.{ident(name)} = d.{ident(name)}" for name in keys)
                self.con.execute(
                    f"DELETE FROM {_BATCH_TABLE} AS b USING (SELECT {key_list}, max({_ORDER}) AS m"
                    f" FROM {_BATCH_TABLE} GROUP BY {key_list} HAVING count(*) > 1) AS d"
                    f" WHERE {match} AND b.{_ORDER} < d.m"
                )
            match = " AND ".join(f"t.{ident(name)} = b.{ident(name)}" for name in keys)
            self.con.execute(f"DELETE FROM {table} AS t USING {_BATCH_TABLE} AS b WHERE {match}")
            self.con.execute(
                f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {_BATCH_TABLE}{keep}"
            )
            self.con.execute(f"DROP TABLE {_BATCH_TABLE}")
        except (duckdb.InvalidInputException, duckdb.ConversionException) as exc:
            message = _one_line(exc).removeprefix("Invalid Input Error: ")
            if "maximum recursion depth" in message:
                message = _deep_record(stream) or message
            if not message.startswith(("stream '", "line ")):
                message = f"stream '{stream.stream}': {message}"
            raise InputError(message) from None
        except duckdb.Error as exc:
            raise TargetError(
                f"stream '{stream.stream}': loading into {stream.schema_name}.{stream.table} failed:"
                f" {_one_line(exc)}"
            ) from None

    def activate(self, activation: Activation) -> None:
        """ACTIVATE_VERSION: the table becomes exactly the rows loaded with that version."""
        table = f"{ident(activation.schema_name)}.{ident(activation.table)}"
        column = ident(activation.version_column)
        try:
            self.con.execute(
                f"DELETE FROM {table} WHERE {column} IS DISTINCT FROM ?", [activation.version]
            )
        except duckdb.Error as exc:
            raise TargetError(
                f"stream '{activation.stream}': ACTIVATE_VERSION failed: {_one_line(exc)}"
            ) from None

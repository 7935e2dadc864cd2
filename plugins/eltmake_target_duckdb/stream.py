"""One Singer stream: where it lands, which columns it has, and the batch of records not yet loaded.

Records are written to a per-stream newline-delimited JSON file as they arrive, so the target's
memory stays flat whatever the batch size; at a flush the file is handed over (as a ``Batch``
snapshot) and DuckDB reads it back in bulk while the next batch fills a new file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from .columns import BIGINT, JSON, TIMESTAMPTZ, VARCHAR, column_type
from .errors import InputError
from .names import sanitize, unique_column

VERSION_COLUMN = "_sdc_table_version"
EXTRACTED_AT = "_sdc_extracted_at"
BATCHED_AT = "_sdc_batched_at"
DELETED_AT = "_sdc_deleted_at"


@dataclass
class Column:
    """A property's column: its name in DuckDB and the type the stream's SCHEMA wants for it.

    ``from_batch`` is False for a column whose value the target computes at load time
    (``_sdc_batched_at``) instead of reading it from the batch file. ``line`` is the input line of
    the SCHEMA that asked for ``wanted`` (0: not a SCHEMA), for errors about changing the column.
    """

    name: str
    wanted: str
    from_batch: bool = True
    line: int = 0


@dataclass(frozen=True)
class Batch:
    """What one flush loads for one stream: a snapshot taken when the flush was decided.

    ``from_file`` pairs each key of the batch file with its column; ``path`` is None when the
    flush only has table changes to make (a new, still empty stream).
    """

    stream: str
    schema_name: str
    table: str
    columns: tuple[Column, ...]
    from_file: tuple[tuple[str, Column], ...]
    keys: tuple[str, ...]  # column names of the key properties; empty: append
    deleted_column: str | None
    needs_ddl: bool
    path: Path | None
    rows: int
    lines: tuple[int, ...] = ()  # the input line of each record in the file, in file order


@dataclass(frozen=True)
class Activation:
    """An ACTIVATE_VERSION, applied after the batches of the flush it arrived behind."""

    stream: str
    schema_name: str
    table: str
    version_column: str
    version: int


@dataclass
class Stream:
    """The load state of one stream during a run."""

    name: str
    schema_name: str
    table: str
    key_properties: list[str] = field(default_factory=list)
    columns: dict[str, Column] = field(default_factory=dict)  # property -> column, in order
    known: frozenset[str] = frozenset()  # properties a record may carry without a new column
    schema_message: Any = None  # the last SCHEMA seen, to skip identical re-sends cheaply
    needs_ddl: bool = True  # the table may lack a column or a widened type
    batch_path: Path | None = None
    batch_file: IO[bytes] | None = None
    pending: int = 0
    lines: list[int] = field(default_factory=list)  # input line of each pending record
    versioned: bool = False
    rename: dict[str, str] | None = None  # property -> batch-file key, when names clash
    batches_opened: int = 0
    object_keys: tuple[str, ...] = ()  # key properties that may hold objects or arrays

    def apply_schema(
        self, schema: dict[str, Any], key_properties: list[str], metadata: bool, line: int = 0
    ) -> None:
        """Take a (new) SCHEMA: add columns for new properties and retarget changed types.

        Columns are never dropped: a property that left the schema keeps its column (and its
        data); rows loaded from now on hold NULL there.
        """
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise InputError(f"stream '{self.name}': SCHEMA 'properties' must be an object")
        for prop, prop_schema in properties.items():
            self._declare(prop, column_type(prop_schema), line=line)
        missing = [key for key in key_properties if key not in self.columns]
        if missing:
            raise InputError(
                f"stream '{self.name}': key property '{missing[0]}' is not in the SCHEMA's properties"
            )
        if metadata:
            self._declare(EXTRACTED_AT, TIMESTAMPTZ, keep=True)
            self._declare(BATCHED_AT, TIMESTAMPTZ, keep=True)
            self.columns[BATCHED_AT].from_batch = False
            self._declare(DELETED_AT, TIMESTAMPTZ, keep=True)
        self.key_properties = list(key_properties)
        self.object_keys = tuple(
            key for key in key_properties if self.columns[key].wanted in (JSON, VARCHAR)
        )
        self._refresh_known()

    def declare_extra(self, record: Any) -> None:
        """Give each property a record carries but its SCHEMA does not declare a JSON column.

        JSON holds any value exactly, so an undeclared property is kept, never dropped.
        """
        if not isinstance(record, dict):
            raise InputError(f"stream '{self.name}': a RECORD's 'record' must be an object")
        for prop in record:
            if prop not in self.known:
                self._declare(prop, JSON, keep=True)
        self._refresh_known()

    def declare_version(self) -> None:
        """Add the _sdc_table_version column ACTIVATE_VERSION needs to tell old rows from new."""
        if not self.versioned:
            self._declare(VERSION_COLUMN, BIGINT, keep=True)
            self.versioned = True
            self._refresh_known()

    def _declare(self, prop: str, wanted: str, keep: bool = False, line: int = 0) -> None:
        column = self.columns.get(prop)
        if column is None:
            taken = {c.name for c in self.columns.values()}
            self.columns[prop] = Column(unique_column(prop, taken), wanted, line=line)
            self.needs_ddl = True
        elif column.wanted != wanted and not keep:
            column.wanted = wanted
            column.line = line
            self.needs_ddl = True

    def _refresh_known(self) -> None:
        """Recompute the fast-path lookups the message loop uses for every record.

        DuckDB binds read_json's column names case-insensitively, so two properties differing only
        in case (``id``, ``ID``) cannot both be read by name: such a stream writes its batch under
        its (unique) column names instead, through ``rename`` (the slow path, only for it).
        """
        self.known = frozenset(self.columns)
        props = [prop for prop, col in self.columns.items() if col.from_batch]
        clash = len({prop.lower() for prop in props}) != len(props) or "" in props
        self.rename = {prop: col.name for prop, col in self.columns.items()} if clash else None

    def open_batch(self, folder: Path) -> IO[bytes]:
        """Return the file the current batch is written to, creating it on first use.

        Each batch gets a file of its own: the previous one may still be loading in the
        background while this one fills.
        """
        if self.batch_file is None:
            self.batches_opened += 1
            name = f"{sanitize(self.name)}-{id(self)}-{self.batches_opened}.ndjson"
            self.batch_path = folder / name
            self.batch_file = open(self.batch_path, "wb", buffering=1 << 20)  # noqa: SIM115
        return self.batch_file

    def take_batch(self) -> Batch:
        """Hand the pending records (and any table change) over for loading, as a snapshot.

        The snapshot copies the columns, so a SCHEMA or a new property arriving while the batch
        loads in the background cannot change what the loader reads.
        """
        path = None
        if self.pending and self.batch_file is not None:
            self.batch_file.close()
            path = self.batch_path
        self.batch_file = self.batch_path = None
        columns = tuple(replace(column) for column in self.columns.values())
        by_name = {column.name: column for column in columns}
        if self.rename is None:
            keyed = [(prop, col.name) for prop, col in self.columns.items() if col.from_batch]
        else:
            keyed = [(col.name, col.name) for col in self.columns.values() if col.from_batch]
        deleted = self.columns.get(DELETED_AT)
        batch = Batch(
            stream=self.name,
            schema_name=self.schema_name,
            table=self.table,
            columns=columns,
            from_file=tuple((key, by_name[name]) for key, name in keyed),
            keys=tuple(self.columns[prop].name for prop in self.key_properties),
            deleted_column=deleted.name if deleted is not None else None,
            needs_ddl=self.needs_ddl,
            path=path,
            rows=self.pending if path is not None else 0,
            lines=tuple(self.lines) if path is not None else (),
        )
        self.pending = 0
        self.lines = []
        self.needs_ddl = not self.columns  # no table yet: try again at the next flush
        return batch

    def close(self) -> None:
        """Close the batch file (the folder holding it is removed by the caller)."""
        if self.batch_file is not None:
            self.batch_file.close()
            self.batch_file = None

    def clashes_with(self, record: dict[str, Any]) -> bool:
        """True when declaring ``record``'s new properties would switch this stream to renaming.

        The batch file must use one kind of key throughout, so the caller flushes first.
        """
        if self.rename is not None:
            return False
        props = [prop for prop, col in self.columns.items() if col.from_batch]
        props += [prop for prop in record if prop not in self.known]
        return len({prop.lower() for prop in props}) != len(props) or "" in props

"""One Singer stream: where it lands, which columns it has, and the batch of records not yet loaded.

Records are written to a per-stream newline-delimited JSON file as they arrive, so the target's
memory stays flat whatever the batch size; DuckDB reads the file back in bulk when the batch is
flushed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .columns import BIGINT, JSON, TIMESTAMPTZ, column_type
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
    (``_sdc_batched_at``) instead of reading it from the batch file.
    """

    name: str
    wanted: str
    from_batch: bool = True


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
    table_types: dict[str, str] = field(default_factory=dict)  # column -> type, once ensured
    batch_path: Path | None = None
    batch_file: IO[bytes] | None = None
    pending: int = 0
    versioned: bool = False
    rename: dict[str, str] | None = None  # property -> batch-file key, when names clash

    def apply_schema(
        self, schema: dict[str, Any], key_properties: list[str], metadata: bool
    ) -> None:
        """Take a (new) SCHEMA: add columns for new properties and retarget changed types.

        Columns are never dropped: a property that left the schema keeps its column (and its
        data); rows loaded from now on hold NULL there.
        """
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise InputError(f"stream '{self.name}': SCHEMA 'properties' must be an object")
        for prop, prop_schema in properties.items():
            self._declare(prop, column_type(prop_schema))
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

    def _declare(self, prop: str, wanted: str, keep: bool = False) -> None:
        column = self.columns.get(prop)
        if column is None:
            taken = {c.name for c in self.columns.values()}
            self.columns[prop] = Column(unique_column(prop, taken), wanted)
            self.needs_ddl = True
        elif column.wanted != wanted and not keep:
            column.wanted = wanted
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

    def batch_columns(self) -> list[tuple[str, Column]]:
        """The (key in the batch file, column) pairs DuckDB reads from a batch."""
        if self.rename is None:
            return [(prop, col) for prop, col in self.columns.items() if col.from_batch]
        return [(col.name, col) for col in self.columns.values() if col.from_batch]

    def open_batch(self, folder: Path) -> IO[bytes]:
        """Return the batch file, creating it on first use (one file per stream, reused)."""
        if self.batch_file is None:
            self.batch_path = folder / f"{sanitize(self.name)}-{id(self)}.ndjson"
            self.batch_file = open(self.batch_path, "wb", buffering=1 << 20)  # noqa: SIM115
        return self.batch_file

    def end_batch(self) -> None:
        """Forget the loaded batch: truncate the file for the next one."""
        if self.batch_file is not None:
            self.batch_file.seek(0)
            self.batch_file.truncate()
        self.pending = 0

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

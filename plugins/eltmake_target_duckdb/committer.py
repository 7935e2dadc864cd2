"""The committer: one background thread that owns the DuckDB connection and stdout's STATE lines.

DuckDB releases the GIL while it loads a batch, so parsing the next batch on the main thread and
loading the previous one here use both cores. Ordering is what keeps STATE honest: the main thread
hands over work in message order through a FIFO queue, and this thread writes a STATE only after
committing every flush queued before it. The queue holds one item, so at most two batches are in
flight (one loading, one waiting) and memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import IO, Any

import orjson

from .stream import Activation, Batch
from .warehouse import Warehouse


@dataclass(frozen=True)
class Work:
    """One flush (possibly empty) and the STATE to print once it is committed."""

    batches: tuple[Batch, ...] = ()
    activation: Activation | None = None
    has_state: bool = False
    state: Any = None


class Committer:
    """Loads and commits flushes in order on a background thread; prints STATE after commits."""

    def __init__(self, warehouse: Warehouse, out: IO[bytes]) -> None:
        self.warehouse = warehouse
        self.out = out
        self.rows_loaded = 0
        self.error: BaseException | None = None
        self._types: dict[tuple[str, str], dict[str, str]] = {}
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="duckdb-committer", daemon=True)
        self._thread.start()

    def submit(self, work: Work) -> None:
        """Queue a flush; blocks while one is loading and another waits (back-pressure)."""
        self.raise_error()
        self._queue.put(work)

    def finish(self) -> None:
        """Wait until everything queued is committed (or failed); re-raise a failure here."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.raise_error()

    def raise_error(self) -> None:
        """Re-raise, on the main thread, the error that stopped the committer."""
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            if self.error is not None:
                continue  # after a failure nothing more is committed or reported
            try:
                self._commit(work)
            except BaseException as exc:  # handed to the main thread by raise_error()
                self.error = exc

    def _commit(self, work: Work) -> None:
        if work.batches or work.activation:
            with self.warehouse.transaction():
                for batch in work.batches:
                    if batch.needs_ddl:
                        types = self.warehouse.ensure_table(batch)
                        if types is not None:
                            self._types[(batch.schema_name, batch.table)] = types
                for batch in work.batches:
                    if batch.path is not None:
                        types = self._types[(batch.schema_name, batch.table)]
                        self.warehouse.load(batch, types)
                if work.activation is not None:
                    self.warehouse.activate(work.activation)
            for batch in work.batches:
                self.rows_loaded += batch.rows
                if batch.path is not None:
                    batch.path.unlink(missing_ok=True)
        if work.has_state:
            self.out.write(orjson.dumps(work.state) + b"\n")
            self.out.flush()

"""The store on object storage (``s3://bucket/prefix``, ``gs://…``, ``file:///path``), shared by
every runner of a project; the contract is :mod:`eltmake.store`'s, the user's guide docs/store.md.

Layout under the URL's prefix (names are %-quoted)::

    eltmake-store.json          {"format": 1}: what this prefix is, and which layout it has
    state/<state id>.json       the state's JSON value, exactly (its size is the value's size)
    leases/<state id>.json      {"owner": token, host, pid, machine, started, acquired, expires}
    records/default.json        {"format": 1, "records": {step: [record, parts]}}, one per scope;
    records/env-<name>.json       read in one GET per build, merged by conditional writes
    runs/<10^16-1-run id>.json  one run: command, targets, status, counts (newest first by name)
    steps/<same>/<seq>.json     that run's steps, a batch per write
    artifacts/<digest>          declared outputs by content (blake2b-16), checked when fetched

Every object is written whole (a PUT, or a rename for a folder), so a reader never sees half of
one. What several runners change (leases, a scope's records, a state updated in place) is
written with a condition on the version read: it only lands if nobody wrote in between, and a
loser reads again and retries, so no update is lost. Records and history are written behind (at
most :data:`FLUSH_AFTER_S` later, and always when the run finishes) so that a build of many
quick steps does not wait for a round trip per step.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from eltmake import store as _store
from eltmake.buckets import CREATE, Conflict, open_bucket
from eltmake.buckets import dump_json as _dump
from eltmake.buckets import load_json as _json
from eltmake.store import Store, StoreError, describe_holder, holder_is_dead, redact_url
from eltmake.storerows import decode_records, encode_record, history_rows, step_rows

FORMAT = 1
MARKER = "eltmake-store.json"
FLUSH_AFTER_S = 0.5  # records and history reach the store at most this much after a step ends
MAX_TRIES = 100  # conditional writes lost in a row before a write is given up
RUN_ID_SPAN = 10**16  # run ids are ms since the epoch × 1000 + a random 0..999: 16 digits
_q = partial(quote, safe="")  # a name as one path segment


def _inv(run_id: int) -> str:
    """A run's name: newer runs sort first, so a listing of the newest N is one request."""
    return f"{RUN_ID_SPAN - 1 - run_id:016d}"


class ObjectStore(Store):
    """State, leases, records, history and artifacts as objects under one URL prefix."""

    def __init__(self, url: str, environ: dict[str, str]):
        super().__init__()
        self.url = redact_url(url)
        self.io = open_bucket(url, environ)
        self._marked = False
        self._docs: dict[str, tuple[dict[str, Any], str]] = {}  # records doc, tag: last seen
        self._runs: dict[int, dict[str, Any]] = {}  # this process's runs: their headers
        self._seq: dict[int, int] = {}
        self._pending: dict[str, dict[str, list[str | None]]] = {}  # scope -> records to write
        self._pending_steps: list[tuple] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time, so writes land in order
        self._timer: threading.Timer | None = None
        self._check()

    # --- opening -------------------------------------------------------------------------------

    def _check(self) -> None:
        """One round trip: the marker is read (a wrong bucket, credential or endpoint fails
        here, before any step runs); a prefix holding another tool's data is refused."""
        got = self.io.read(MARKER)
        if got is None:
            self.io.probe()
            return
        self._marked = True
        marker = _json(got[0])
        fmt = marker.get("format") if isinstance(marker, dict) else None
        if not isinstance(fmt, int):
            raise StoreError(
                f"store {self.url}: {MARKER} there was not written by eltmake; give the store a "
                "prefix of its own (s3://bucket/eltmake)"
            )
        if fmt > FORMAT:
            raise StoreError(
                f"store {self.url}: written by a newer eltmake (store format {fmt}, this one "
                f"reads {FORMAT}); upgrade eltmake on this runner"
            )

    def _ready(self) -> None:
        """Mark the prefix as a store before its first write (not at open: read-only writes
        nothing)."""
        if not self._marked:
            marker = _dump({"format": FORMAT})
            try:
                self.io.write(MARKER, marker, CREATE)
                self.io.write(MARKER, marker, CREATE)  # must lose: the service keeps conditions
            except Conflict:
                self._marked = True  # (or another runner marked it first)
                return
            raise StoreError(
                f"store {self.url}: this service ignores conditional writes (If-None-Match), so "
                "leases and merges could not be kept exclusive; use a service that honours them "
                "(AWS S3, GCS, MinIO, …) or a postgresql:// store"
            )

    def _busy(self, key: str) -> StoreError:
        return StoreError(
            f"store {self.url}: {key} kept changing under this runner ({MAX_TRIES} tries); "
            "too many runners write it at once: run again"
        )

    @staticmethod
    def _pause() -> None:
        time.sleep(random.uniform(0.005, 0.05))  # lost a race: let the winner finish

    # --- state ---------------------------------------------------------------------------------

    def _state_key(self, state_id: str) -> str:
        return f"state/{_q(state_id)}.json"

    def _decode(self, state_id: str, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            raise StoreError(
                f"store {self.url}: the state of {state_id!r} is not JSON; set a good value with "
                f"`eltmake state set {state_id} JSON`, or `eltmake state clear {state_id}` to "
                "start that target again from no bookmark"
            ) from None

    def get(self, state_id: str) -> Any:
        got = self.io.read(self._state_key(state_id))
        return None if got is None else self._decode(state_id, got[0])

    def _set(self, state_id: str, text: str) -> None:
        self._ready()
        self.io.write(self._state_key(state_id), text.encode())

    def _update(self, state_id: str, fn: Callable[[Any], Any]) -> Any:
        """Read, change, write if unchanged since read; else again (``fn`` may run twice)."""
        self._ready()
        key = self._state_key(state_id)
        for _ in range(MAX_TRIES):
            got = self.io.read(key)
            value = fn(self._decode(state_id, got[0]) if got else None)
            text = json.dumps(value, sort_keys=True).encode()
            try:
                self.io.write(key, text, got[1] if got else CREATE)
                return value
            except Conflict:
                self._pause()
        raise self._busy(key)

    def _clear(self, state_id: str) -> bool:
        key = self._state_key(state_id)
        if not self.io.exists(key):
            return False
        self.io.delete(key)
        return True

    def list(self) -> list[tuple[str, float, int]]:
        rows = self.io.listing("state/")
        return [(unquote(n[:-5]), t, size) for n, size, t in rows if n.endswith(".json")]

    # --- leases --------------------------------------------------------------------------------

    def _lease(self, state_id: str) -> tuple[dict[str, Any], str] | None:
        got = self.io.read(f"leases/{_q(state_id)}.json")
        if got is None:
            return None
        row = _json(got[0])
        return (row if isinstance(row, dict) else {}), got[1]  # damaged: as if released

    def _live(self, row: dict[str, Any]) -> bool:
        expires = row.get("expires")
        return bool(row.get("owner")) and isinstance(expires, int | float) and expires > time.time()

    def _acquire(self, state_id: str, token: str) -> str | None:
        self._ready()
        key = f"leases/{_q(state_id)}.json"
        row: dict[str, Any] = {}
        for _ in range(MAX_TRIES):
            held = self._lease(state_id)
            match = CREATE
            if held is not None:
                row, match = held
                if row.get("owner") == token:
                    return None  # our own write, whose answer was lost and retried
                if self._live(row) and not holder_is_dead(row, self._me):
                    return describe_holder(row)
            try:
                self.io.write(key, _dump({**self._lease_row(token), "state_id": state_id}), match)
                return None
            except Conflict:
                continue  # another runner took or renewed it: look again
        return describe_holder(row)

    def _renew(self, state_id: str, token: str) -> None:
        held = self._lease(state_id)
        if held is not None and held[0].get("owner") == token:
            row = {**held[0], "expires": time.time() + _store.LEASE_TTL_S}
            try:
                self.io.write(f"leases/{_q(state_id)}.json", _dump(row), held[1])
            except Conflict:
                pass  # lapsed and taken over: the new holder's now

    def _release(self, state_id: str, token: str) -> None:
        """Released by a conditional write of an empty lease (not a delete): it cannot free a
        lease another runner took over after ours lapsed. A race with our own last renewal is
        lost at most once or twice: read again and retry."""
        for _ in range(MAX_TRIES):
            held = self._lease(state_id)
            if held is None or held[0].get("owner") != token:
                return
            row = {"state_id": state_id, "owner": None, "released": time.time()}
            try:
                self.io.write(f"leases/{_q(state_id)}.json", _dump(row), held[1])
                return
            except Conflict:
                continue

    def leases(self) -> list[dict[str, Any]]:
        keys = [f"leases/{n}" for n, _, _ in self.io.listing("leases/") if n.endswith(".json")]
        out = []
        for data in self.io.read_many(keys).values():
            row = _json(data)
            if isinstance(row, dict) and row.get("owner"):
                fields = ("state_id", "host", "pid", "acquired", "expires")
                out.append({k: row.get(k) for k in fields})
        return sorted(out, key=lambda r: str(r["state_id"]))

    def unlock(self, state_id: str) -> bool:
        self._writable(f"remove the lease on {state_id!r}")
        held = self._lease(state_id)
        if held is None or not held[0].get("owner"):
            return False
        self.io.delete(f"leases/{_q(state_id)}.json")
        return True

    # --- step records --------------------------------------------------------------------------

    def _records_key(self, scope: str) -> str:
        return f"records/{'env-' + _q(scope) if scope else 'default'}.json"

    def scopes(self) -> list[str]:
        names = [n for n, _, _ in self.io.listing("records/") if n.endswith(".json")]
        return ["" if n == "default.json" else unquote(n[4:-5]) for n in names]

    def _doc(self, got: tuple[bytes, str] | None) -> tuple[dict[str, Any], str]:
        """A scope's records and their tag; a damaged object reads as empty (its steps run
        again and write a good one over it)."""
        if got is None:
            return {}, CREATE
        doc = _json(got[0])
        records = doc.get("records") if isinstance(doc, dict) else None
        return (records if isinstance(records, dict) else {}), got[1]

    def records(self, scope: str) -> dict[str, dict[str, Any]]:
        """Every record of a scope: one GET, whatever the number of steps."""
        if scope in self._pending:
            self.flush_writes()
        key = self._records_key(scope)
        doc, tag = self._doc(self.io.read(key))
        self._docs[key] = (doc, tag)
        rows = []
        for name, pair in doc.items():
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
                rows.append((name, pair[0], pair[1]))
        return decode_records(rows)

    def _put_record(self, scope: str, name: str, record: dict[str, Any]) -> None:
        value, parts = encode_record(record)
        with self._pending_lock:
            self._pending.setdefault(scope, {})[name] = [value, parts]
        self._later()

    def _forget_record(self, scope: str, name: str) -> bool:
        self.flush_writes()
        found = []

        def change(doc: dict[str, Any]) -> bool:
            found.append(doc.pop(name, None) is not None)
            return found[-1]

        with self._flush_lock:  # in order with the writes behind
            self._merge(scope, change)
        return found[-1]

    def _merge(self, scope: str, change: Callable[[dict[str, Any]], bool]) -> None:
        """Change a scope's records with a conditional write; on a lost race read and redo."""
        self._ready()
        key = self._records_key(scope)
        for _ in range(MAX_TRIES):
            cached = self._docs.pop(key, None)
            doc, tag = cached if cached is not None else self._doc(self.io.read(key))
            if not change(doc):
                self._docs[key] = (doc, tag)
                return
            try:
                tag = self.io.write(key, _dump({"format": FORMAT, "records": doc}), tag)
            except Conflict:
                self._pause()
                continue
            self._docs[key] = (doc, tag)
            return
        raise self._busy(key)

    # --- writing behind ------------------------------------------------------------------------

    def _later(self) -> None:
        with self._pending_lock:
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_AFTER_S, self._flush_quietly)
                self._timer.daemon = True
                self._timer.start()

    def _flush_quietly(self) -> None:
        try:
            self.flush_writes()
        except Exception:  # kept pending: finish_run, close or the next write tries again
            pass

    def flush_writes(self) -> None:
        """Write the pending records and history now; what fails stays pending."""
        with self._flush_lock:
            with self._pending_lock:
                records, self._pending = self._pending, {}
                steps, self._pending_steps = self._pending_steps, []
                self._timer = None
            try:
                while records:
                    scope, changes = next(iter(records.items()))
                    self._merge(scope, lambda doc, c=changes: doc.update(c) or True)
                    del records[scope]
                while steps:
                    self._write_batch(steps)  # takes the rows it wrote off the list
            finally:
                if records or steps:
                    with self._pending_lock:
                        for scope, changes in records.items():
                            self._pending[scope] = {**changes, **self._pending.get(scope, {})}
                        self._pending_steps[:0] = steps

    def flush_steps(self) -> None:
        super().flush_steps()
        if self._pending_steps:
            self._later()

    # --- run history ---------------------------------------------------------------------------

    def _start_run(self, command: str, targets: list[str], env: str | None) -> int:
        self._ready()
        for _ in range(MAX_TRIES):
            run_id = int(time.time() * 1000) * 1000 + random.randrange(1000)
            head = {
                **{"id": run_id, "started": time.time(), "ended": None, "status": "running"},
                **{"command": command, "targets": targets, "env": env, "counts": {}},
            }
            try:
                self.io.write(f"runs/{_inv(run_id)}.json", _dump(head), CREATE)
            except Conflict:
                continue  # another runner started one in the same millisecond
            self._runs[run_id] = head
            return run_id
        raise self._busy("runs/")

    def _write_steps(self, rows: list[tuple]) -> None:
        with self._pending_lock:
            self._pending_steps.extend(rows)

    def _write_batch(self, steps: list[tuple]) -> None:
        """The first run's steps in ``steps`` as one object, then its header's counts."""
        run_id = steps[0][0]
        mine = [list(r[1:]) for r in steps if r[0] == run_id]
        seq = self._seq.get(run_id, 0) + 1
        self.io.write(f"steps/{_inv(run_id)}/{seq:06d}.json", _dump(mine))
        self._seq[run_id] = seq
        steps[:] = [r for r in steps if r[0] != run_id]
        head = self._runs.get(run_id)
        if head is not None:
            for row in mine:
                head["counts"][row[1]] = head["counts"].get(row[1], 0) + 1
            self.io.write(f"runs/{_inv(run_id)}.json", _dump(head))

    def _finish_run(self, run_id: int, status: str) -> None:
        self.flush_writes()
        head = self._runs.get(run_id)
        if head is None:
            got = self.io.read(f"runs/{_inv(run_id)}.json")
            head = _json(got[0]) if got else None
            if not isinstance(head, dict):
                return
        head.update(ended=time.time(), status=status)
        self.io.write(f"runs/{_inv(run_id)}.json", _dump(head))

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs of every runner: one listing and one concurrent read."""
        names = [n for n, _, _ in self.io.listing("runs/", limit) if n.endswith(".json")]
        docs = self.io.read_many([f"runs/{n}" for n in names])
        rows, counts = [], []
        for n in names:
            h = _json(docs.get(f"runs/{n}"))
            if not isinstance(h, dict) or not isinstance(h.get("id"), int):
                continue
            targets = json.dumps(h.get("targets") or [])
            rows.append(
                (h["id"], h.get("started"), h.get("ended"), h.get("status"), h.get("command"))
                + (targets, h.get("env"))
            )
            counts += [(h["id"], s, c) for s, c in (h.get("counts") or {}).items()]
        return history_rows(rows, counts)

    def run_steps(self, run_id: int) -> list[dict[str, Any]]:
        prefix = f"steps/{_inv(run_id)}/"
        docs = self.io.read_many([prefix + n for n, _, _ in self.io.listing(prefix)])
        rows = [
            tuple(r)
            for _, data in sorted(docs.items())
            for r in (_json(data) or [])
            if isinstance(r, list) and len(r) == 7
        ]
        return step_rows(sorted(rows, key=lambda r: r[3] or 0))

    # --- artifacts -----------------------------------------------------------------------------

    def _artifact_key(self, digest: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{16,128}", digest):
            raise StoreError(f"store {self.url}: {digest!r} is not an artifact digest")
        return f"artifacts/{digest}"

    def has_artifact(self, digest: str) -> bool:
        return self.io.exists(self._artifact_key(digest))

    def put_artifact(self, digest: str, source: Path) -> None:
        """Uploaded whole, once: the same digest is the same content, whoever uploads it."""
        if self.read_only or self.has_artifact(digest):
            return
        self._ready()
        self.io.upload(self._artifact_key(digest), Path(source))

    def get_artifact(self, digest: str, dest: Path) -> bool:
        """Fetch beside ``dest``, check the content's digest, then rename into place. A damaged
        artifact is refused (``dest`` untouched; False, as if absent, so the step runs again)
        and removed, so that the step's next upload replaces it."""
        from eltmake.digest import file_digest

        key = self._artifact_key(digest)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            if not self.io.download(key, tmp):
                return False
            got = file_digest(str(tmp))
            if got != digest:
                if not self.read_only:
                    self.io.delete(key)
                sys.stderr.write(
                    f"eltmake: warning: store {self.url}: artifact {digest} is damaged (its "
                    f"content digests to {got}): not restored"
                    f"{'' if self.read_only else ' and removed'}; the step that makes it runs "
                    "again\n"
                )
                return False
            os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        super().close()
        try:
            self.flush_writes()
        except Exception as e:
            sys.stderr.write(
                f"eltmake: warning: {e}; this build's records and history were not saved, so "
                "its steps run again next time\n"
            )
        with self._pending_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

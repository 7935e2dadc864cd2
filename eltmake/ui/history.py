"""The one place the UI reads the store: run history, step records, state, leases, step logs and
the project lock.

Everything goes through the project's store (:func:`eltmake.store.open_store`: the local SQLite
file, PostgreSQL or object storage) and its public methods (``runs``, ``run_steps``, ``list``,
``get``, ``leases``, ``records``), and :mod:`eltmake.steplogs`, so a change of store touches this
module only. The UI never writes here: a store that does not exist yet (a project never built)
reads as empty and is not created.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.procs import pid_alive
from eltmake.steplogs import read_log

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.redact import Redactor

LOG_TAIL = 200


class History:
    """Read-only views of one project's ``.eltmake/`` folder."""

    def __init__(self, state_dir: Path, load: Callable[[], Project]):
        self.state_dir = state_dir
        self.load = load  # the project as it is now (its store may be set in eltmake.toml)

    @contextlib.contextmanager
    def _store(self) -> Iterator[Any]:
        from eltmake.store import open_store

        store = open_store(self.load(), create=False)
        if store is None:
            yield None
            return
        try:
            yield store
        finally:
            store.close()

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._store() as store:
            return store.runs(limit) if store else []

    def run(self, run_id: int) -> dict[str, Any] | None:
        """One run with its steps, or None when the history has no such run."""
        with self._store() as store:
            if store is None:
                return None
            found = [r for r in store.runs(10**9) if r["id"] == run_id]
            if not found:
                return None
            run = found[0]
            run["steps"] = store.run_steps(run_id)
        for s in run["steps"]:
            s["has_log"] = self.log_path_exists(run_id, s["target"])
        return run

    def latest_steps(self, runs: int = 20, ran_only: bool = False) -> dict[str, dict[str, Any]]:
        """Each target's most recent step in the last ``runs`` builds (with the run's id); with
        ``ran_only``, the most recent that ran (not skipped), which has a log."""
        latest: dict[str, dict[str, Any]] = {}
        with self._store() as store:
            if store is None:
                return latest
            for r in reversed(store.runs(runs)):
                for s in store.run_steps(r["id"]):
                    if not ran_only or s["status"] not in ("skipped", "upstream_failed"):
                        latest[s["target"]] = {**s, "run_id": r["id"]}
        return latest

    def recorded(self, scope: str) -> set[str]:
        """The targets with a cache record in ``scope`` (their ``--env``): built at least once."""
        with self._store() as store:
            return set(store.records(scope)) if store else set()

    def state(self) -> list[dict[str, Any]]:
        """Every state id with its last update, size and lease holder."""
        with self._store() as store:
            if store is None:
                return []
            leases = {row["state_id"]: row for row in store.leases()}
            return [
                {"id": sid, "updated": updated, "size": size, "lease": leases.get(sid)}
                for sid, updated, size in store.list()
            ]

    def state_value(self, state_id: str) -> Any:
        with self._store() as store:
            return store.get(state_id) if store else None

    def log_path_exists(self, run_id: int, target: str) -> bool:
        from eltmake.steplogs import log_file

        return log_file(self.state_dir, run_id, target).exists()

    def log(self, run_id: int, target: str, full: bool, redact: Redactor) -> str | None:
        """A step's kept output: its last lines, or all of it (masked again with today's
        secrets, in case a secret was added since the build)."""
        text = read_log(self.state_dir, run_id, target, None if full else LOG_TAIL)
        return None if text is None else redact(text)

    def lock_holder(self) -> dict[str, Any] | None:
        """Who builds the project now: the pid ``ProjectLock`` wrote, while that process lives
        (the kernel drops the lock of a dead process, but not the file's text). Read only: it
        never takes the lock, so it cannot make a build with ``--no-wait`` fail."""
        try:
            text = (self.state_dir / "lock").read_text(errors="replace").strip()
        except OSError:
            return None
        if not text.startswith("pid "):
            return None
        try:
            pid = int(text.split()[1])
        except (IndexError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        return {"pid": pid, "command": _cmdline(pid), "this_ui": pid == os.getpid()}


def _cmdline(pid: int) -> str:
    """``eltmake build warehouse`` for a process, best effort (Linux's /proc), for the banner."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    for i, a in enumerate(args):  # python -m eltmake build … or …/bin/eltmake build …
        if a == "eltmake" or a.endswith("/eltmake"):
            return " ".join(["eltmake", *args[i + 1 :]])[:200]
    return " ".join(args)[:200]

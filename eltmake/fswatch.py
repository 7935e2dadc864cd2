"""File system notifiers for watch mode: watchfiles' Rust notifier, one per watched folder.

The root is watched alone (its own files and new folders), each top-level folder that may hold
inputs recursively: the tool environments under ``.eltmake/`` (thousands of folders) cost no
inotify watch. Events are put, unfiltered, on the watch's queue; the path rules decide.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

# The Rust notifier's polling step, in ms: it returns a batch after this much quiet, and the
# watch then waits the rest of --debounce for more relevant edits.
NOTIFY_STEP_MS = 25


class Notifiers:
    """One watchfiles notifier per watched folder, each drained by its own thread into one queue.

    The root is watched alone (its files: ``eltmake.toml``, ``.env``, top-level inputs, and new
    folders); each top-level folder that may hold inputs is watched recursively.
    """

    def __init__(self, root: Path, q: queue.Queue):
        self.root = root
        self.q = q
        self.active: dict[str, threading.Event] = {}
        self.step_ms = NOTIFY_STEP_MS

    def sync(self, top_dirs: set[str]) -> None:
        wanted = {""} | top_dirs
        for rel in list(self.active):
            if rel not in wanted:
                self.active.pop(rel).set()
        for rel in sorted(wanted - set(self.active)):
            self._add(rel)

    def _add(self, rel: str) -> None:
        path = self.root / rel if rel else self.root
        if not path.is_dir():
            return
        stop = threading.Event()
        self.active[rel] = stop
        threading.Thread(
            target=self._drain,
            args=(path, bool(rel), stop),
            name=f"watch:{rel or '.'}",
            daemon=True,
        ).start()

    def drop(self, rel: str) -> None:
        """Forget a watched folder that was deleted, so that it is watched again if it returns."""
        stop = self.active.pop(rel, None)
        if stop is not None:
            stop.set()

    def _drain(self, path: Path, recursive: bool, stop: threading.Event) -> None:
        import watchfiles

        try:
            # debounce caps how long a stream of events (a dbt run writing target/) is grouped;
            # step is the quiet that ends a batch. No filter here: WatchMap.classify decides.
            for changes in watchfiles.watch(
                path,
                watch_filter=None,
                debounce=500,
                step=self.step_ms,
                stop_event=stop,
                rust_timeout=0,
                raise_interrupt=False,
                recursive=recursive,
                ignore_permission_denied=True,
            ):
                if changes:
                    self.q.put(("fs", {(int(c), p) for c, p in changes}))
        except Exception as e:  # a watched folder removed, a full inotify table…
            if not stop.is_set():
                self.q.put(("notify_error", f"{path}: {type(e).__name__}: {e}"))

    def close(self) -> None:
        for stop in self.active.values():
            stop.set()
        self.active.clear()

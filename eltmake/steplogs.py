"""Each step's output lines, kept on disk per build, with secrets masked.

``eltmake build`` (and a build the web UI starts, through the same code) wraps its reporter in
:class:`StepLogs`: every line a step logs is written to ``.eltmake/logs/RUN/TARGET.log`` (RUN is
the build's id in the history, as ``eltmake runs`` shows it) and passed on, so the history of a
failed step keeps its whole output, not only the tail the terminal showed.

Why it stays cheap: nothing is written for a step that logs nothing (a no-op build touches no
file), lines are written through a buffer flushed at most every half second (a window on a running
build from another process still sees them), one step's log stops growing at
:data:`MAX_LOG_BYTES`, and only the last :data:`KEEP_RUNS` builds keep their logs.

Secrets: the scheduler masks what a step prints (the values its recipe's ``secrets`` names)
before any reporter sees it, so the files hold what the terminal shows.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote

from eltmake.output import Reporter

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.step import BuildInfo, Outcome

KEEP_RUNS = 50
MAX_LOG_BYTES = 50 * 1024 * 1024
FLUSH_S = 0.5


def log_dir(state_dir: Path, run_id: int) -> Path:
    return state_dir / "logs" / str(int(run_id))


def log_file(state_dir: Path, run_id: int, target: str) -> Path:
    """Where a step's log lives; the target's name is quoted, so no name leaves the folder."""
    return log_dir(state_dir, run_id) / f"{quote(target, safe='-_.')}.log"


class StepLogs(Reporter):
    """A reporter around the build's own: keeps each step's output on disk, passes all on."""

    def __init__(self, inner: Reporter, project: Project):
        self.inner = inner
        self.project = project
        self.build: BuildInfo | None = None  # set by run_build; run_id is known once it runs
        self._lock = threading.Lock()
        self._files: dict[str, IO[str]] = {}
        self._sizes: dict[str, int] = {}
        self._flushed = time.monotonic()
        self._dir: Path | None = None

    def _file(self, name: str) -> IO[str] | None:
        f = self._files.get(name)
        if f is not None or self.build is None or self.build.run_id is None:
            return f
        if self._dir is None:
            self._dir = log_dir(self.project.state_dir, self.build.run_id)
            self._dir.mkdir(parents=True, exist_ok=True)
            prune(self._dir.parent)
        f = self._files[name] = open(  # closed when the step finishes
            log_file(self.project.state_dir, self.build.run_id, name), "a", encoding="utf-8"
        )
        self._sizes[name] = 0
        return f

    def _close(self, name: str) -> None:
        f = self._files.pop(name, None)
        if f is not None:
            f.close()

    # --- the events ----------------------------------------------------------------------------

    def build_started(self, targets: list[str], dry_run: bool) -> None:
        self.inner.build_started(targets, dry_run)

    def step_started(self, name: str, reason: str) -> None:
        self.inner.step_started(name, reason)

    def step_log(self, name: str, line: str) -> None:
        with self._lock:
            try:
                f = self._file(name)
                if f is not None and self._sizes[name] <= MAX_LOG_BYTES:
                    self._sizes[name] += len(line) + 1
                    f.write(line + "\n" if self._sizes[name] <= MAX_LOG_BYTES else "[log cut]\n")
                    if time.monotonic() - self._flushed > FLUSH_S:
                        for g in self._files.values():
                            g.flush()
                        self._flushed = time.monotonic()
            except OSError:  # a full disk must not fail the build; the terminal still shows it
                self._files.pop(name, None)
        self.inner.step_log(name, line)

    def step_progress(self, name: str, text: str) -> None:
        self.inner.step_progress(name, text)

    def step_finished(self, name: str, outcome: Outcome) -> None:
        with self._lock:
            self._close(name)
        self.inner.step_finished(name, outcome)

    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None:
        with self._lock:
            for name in list(self._files):
                self._close(name)
        self.inner.build_finished(status, outcomes)

    def message(self, text: str) -> None:
        self.inner.message(text)


def prune(logs: Path, keep: int = KEEP_RUNS) -> None:
    """Remove the logs of all but the last ``keep`` builds (called when a build writes its first
    line, so a no-op build lists no folder)."""
    try:
        runs = sorted((int(p.name), p) for p in logs.iterdir() if p.name.isdigit())
    except OSError:
        return
    for _, path in runs[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def read_log(state_dir: Path, run_id: int, target: str, tail: int | None = None) -> str | None:
    """A step's log (its last ``tail`` lines), or None when none was kept."""
    path = log_file(state_dir, run_id, target)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if tail is not None and size > 256 * 1024:
                f.seek(size - 256 * 1024)
                data = f.read().split(b"\n", 1)[-1]
            else:
                data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:])
    return text

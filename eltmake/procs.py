"""Child processes in their own process groups, so that nothing outlives an interrupted build."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any


class ProcessRegistry:
    """Every child started for a step, grouped by owner (the step's context).

    A child runs in a new session (its own process group), so terminating the group also stops
    whatever the child started itself (a shell's pipeline, dbt's threads, a tap's helpers).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, tuple[subprocess.Popen, Any]] = {}

    def spawn(
        self,
        argv: list[str] | str,
        owner: Any = None,
        cancelled: threading.Event | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen:
        """Start a child in its own session; refuse (Cancelled) once ``cancelled`` is set."""
        kwargs.setdefault("start_new_session", True)
        if isinstance(argv, str):
            kwargs.setdefault("shell", True)
        with self._lock:
            if cancelled is not None and cancelled.is_set():
                from eltmake.errors import Cancelled

                raise Cancelled("cancelled")
            proc = subprocess.Popen(argv, **kwargs)
            self._procs[proc.pid] = (proc, owner)
        threading.Thread(target=self._reap, args=(proc,), daemon=True).start()
        return proc

    def _reap(self, proc: subprocess.Popen) -> None:
        proc.wait()
        with self._lock:
            self._procs.pop(proc.pid, None)

    def running(self, owner: Any = None) -> list[subprocess.Popen]:
        with self._lock:
            return [p for p, o in self._procs.values() if owner is None or o is owner]

    def terminate(self, owner: Any = None, grace: float = 3.0) -> None:
        """SIGTERM the process groups (of one owner, or all), then SIGKILL what is left.

        Set the owner's ``cancelled`` event first: :meth:`spawn` then starts nothing new."""
        procs = self.running(owner)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            # Kill the group even when its leader has exited: a grandchild may still hold on.
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

"""The project lock: one build at a time per project, so cache and state are never written twice."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from eltmake.errors import EltmakeError


class LockBusy(EltmakeError):
    exit_code = 1


class ProjectLock:
    """An exclusive ``flock`` on ``.eltmake/lock``; the kernel drops it if eltmake dies."""

    def __init__(self, state_dir: Path):
        from eltmake.files import ensure_dir

        ensure_dir(state_dir)
        self.path = state_dir / "lock"
        self.fd: int | None = None

    def acquire(self, wait: bool = True, notify: Callable[[str], None] | None = None) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            from eltmake.errors import ConfigError

            raise ConfigError(
                f"{self.path}: cannot open the project lock ({e.strerror}); if it is not a "
                f"plain file, move it aside (mv {self.path} {self.path}.bak)"
            ) from None
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another eltmake"
                if not wait:
                    os.close(fd)
                    raise LockBusy(
                        f"the project is busy: {holder} is building it; try again later "
                        "(without --no-wait, eltmake waits)"
                    ) from None
                if not told and notify:
                    notify(f"waiting for the project lock: {holder} is building this project…")
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> ProjectLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

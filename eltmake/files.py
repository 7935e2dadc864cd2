"""Writing a file so that a reader sees the old content or the new, never half of it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from eltmake.errors import ConfigError


def write_atomic(
    path: Path, data: bytes | str, mode: int = 0o644, best_effort: bool = False
) -> bool:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (creating the
    folder). With ``best_effort`` a failure (a read-only project) returns False instead of
    raising: for caches, which only cost time when missing."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if best_effort:
            return False
        raise


def ensure_dir(folder: Path, what: str = "eltmake's folder") -> None:
    """Create ``folder`` (``.eltmake/``) or say in one line why it cannot be: a file in its place
    is moved aside by the user, never removed by eltmake."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{folder}: is a file, not {what}; move it aside (mv {folder.name} "
            f"{folder.name}.bak) and run eltmake again"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{folder}: cannot create {what}: {e.strerror or e}") from None

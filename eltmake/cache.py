"""The machine-local content cache: which digest each file had at which stat.

Content is the truth; this cache only avoids reading unchanged files again. It lives in diskcache
under ``.eltmake/cache``, stored as JSON (reading it can never run code), and it is disposable: a
damaged one is set aside with a warning and rebuilt, costing one read of each file. Step records
(what each step produced) live in the store with the state (:mod:`eltmake.state`).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eltmake.digest import file_digest as _read_digest

MISSING = "missing"
# Files modified this recently are hashed again next time: their mtime may not yet tell a later
# write in the same clock tick apart ("racy git").
RACY_S = 2.0
_GLOB_CHARS = set("*?[")


class Cache:
    def __init__(self, state_dir: Path, warn: Callable[[str], None] | None = None):
        from eltmake.files import ensure_dir

        ensure_dir(state_dir)
        self.dir = state_dir / "cache"
        self.dc = _open(self.dir, warn)

    def close(self) -> None:
        self.dc.close()

    def file_digest(
        self, root: Path, rel: str, known: dict[str, list] | None = None
    ) -> tuple[str, tuple | None]:
        """The content digest of a file and the stat it was taken at (``MISSING`` if absent).

        ``known`` maps paths to ``[*stat, digest]`` as a step's record holds them: a file whose
        stat is unchanged since that run costs no cache lookup at all. A folder is digested by
        the names and contents of the files under it, and its stat is ``()``."""
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return MISSING, None
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if known is not None:
            seen = known.get(rel)
            if seen is not None and tuple(seen[:4]) == sig:
                return seen[4], sig
        if not os.path.isfile(path):
            # A folder's own stat says nothing of its files: () asks for a digest every time.
            return self.folder_digest(root, rel), ()
        key = "stat:" + rel
        try:
            hit = self.dc.get(key)
        except Exception:  # a damaged entry: read the file
            hit = None
        if isinstance(hit, list) and len(hit) == 2 and tuple(hit[0]) == sig:
            return hit[1], sig
        d = _read_digest(path)
        if time.time() - st.st_mtime_ns / 1e9 > RACY_S:
            try:
                self.dc.set(key, [list(sig), d])
            except Exception:  # a cache that cannot be written costs speed, not correctness
                pass
        return d, sig

    def folder_digest(self, root: Path, rel: str) -> str:
        """Every file under a folder output: its relative path and content digest."""
        from eltmake.digest import digest

        base = os.path.join(root, rel)
        entries = []
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                sub = os.path.relpath(os.path.join(folder, name), root)
                d, _ = self.file_digest(root, sub)
                entries.append([os.path.relpath(sub, rel), d])
        return digest(entries)

    def expand(self, root: Path, patterns: list[str]) -> list[str]:
        """Input patterns → sorted relative file paths; a literal path is kept even if missing."""
        out: set[str] = set()
        for pat in patterns:
            if _GLOB_CHARS.isdisjoint(pat):
                out.add(os.path.normpath(pat))
                continue
            for p in glob.glob(pat, root_dir=root, recursive=True):
                if os.path.isfile(os.path.join(root, p)):
                    out.add(os.path.normpath(p))
        return sorted(out)


def _open(folder: Path, warn: Callable[[str], None] | None) -> Any:
    """Open the diskcache; a damaged one (garbage, truncated, a file where the folder should be)
    is moved aside and a new one started: the cache is disposable."""
    import sqlite3

    import diskcache

    def make() -> Any:
        dc = diskcache.Cache(
            str(folder), disk=diskcache.JSONDisk, eviction_policy="none", size_limit=2**40
        )
        dc.get("stat:")  # touches the table: a garbage file fails here, not mid-build
        return dc

    try:
        return make()
    except (sqlite3.DatabaseError, OSError, ValueError) as e:
        aside = folder.with_name(f"{folder.name}.damaged-{int(time.time())}")
        try:
            os.replace(folder, aside)
        except OSError:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            aside = None
        if warn is not None:
            where = f"; the old one is in {aside}" if aside else ""
            warn(
                f"warning: the file-digest cache {folder} was damaged ({type(e).__name__}: {e}); "
                f"starting a new one (files are read once more){where}"
            )
        return make()

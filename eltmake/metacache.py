"""What the installed distributions offer eltmake, cached in the user's cache folder: read on
every start without importing pluggy or importlib.metadata (``eltmake --help`` must start about as
fast as Python itself). The key is the metadata folders on ``sys.path`` and the mtimes of their
``entry_points.txt`` files: an install or removal makes the next start scan again."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs ~4 ms of every start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def metadata_key() -> list[list[Any]]:
    key: list[list[Any]] = []
    for entry in sys.path:
        folder = entry or "."
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith((".dist-info", ".egg-info")))
        except OSError:  # a zip file (the stdlib's) or a missing folder
            continue
        for name in names:
            try:
                mtime = os.stat(os.path.join(folder, name, "entry_points.txt")).st_mtime_ns
            except OSError:
                mtime = None
            key.append([entry, name, mtime])
    return key


def cache_file(what: str) -> Path:
    """One file per Python environment (two virtualenvs have different sys.path keys)."""
    from pathlib import Path
    from zlib import crc32  # not hashlib: this runs on every start, and only names a file

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eltmake" / f"{what}-{crc32(sys.prefix.encode()):08x}.json"


def plugin_commands(project_dir: str | None = None) -> list[tuple[str, str]]:
    """(name, help) of every command plugins add, for the one help text.

    Installed plugins' commands are kept in the user's cache folder under the same key as the
    entry points (a new install scans again), so ``eltmake --help`` stays as fast as Python's
    start; a project's own plugins (``plugins/*.py``, ``[project].plugins``) are asked each time,
    and only when the project has any."""
    import json

    key = metadata_key()
    file = cache_file("commands")
    found: list[tuple[str, str]] | None = None
    try:
        data = json.loads(file.read_text())
        if data["key"] == key:
            found = [(str(n), str(h)) for n, h in data["commands"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if found is None:
        from eltmake.plugins import ask_for_commands

        found = ask_for_commands(None)
        from eltmake.files import write_atomic

        write_atomic(file, json.dumps({"key": key, "commands": found}), best_effort=True)
    root = project_dir or "."
    project_file = os.path.isfile(os.path.join(root, "eltmake.toml"))
    if project_file and (os.path.isdir(os.path.join(root, "plugins")) or _names_plugins(root)):
        try:
            names = {n for n, _ in found}
            from pathlib import Path

            from eltmake.plugins import ask_for_commands

            found += [c for c in ask_for_commands(Path(root)) if c[0] not in names]
        except Exception:  # a broken project plugin: its command shows up when it loads
            pass
    return found


def _names_plugins(root: str) -> bool:
    try:
        with open(os.path.join(root, "eltmake.toml"), errors="replace") as f:
            return "plugins" in f.read()
    except OSError:
        return False

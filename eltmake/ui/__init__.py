"""``eltmake ui``: a local web window on the project: its graph and statuses, builds started and
watched live, the run history with each step's log, and the Singer bookmarks.

An optional room: it needs the ``ui`` extra (Starlette, uvicorn, sse-starlette), which ``eltmake
--version`` and builds never import. This module imports nothing heavy, so that a missing extra is
one line of advice rather than a traceback. The UI never edits configuration; it reads the same
project, cache, state and history as the command line and builds through the same code.
"""

from __future__ import annotations

from typing import Any

NEEDS = ("starlette", "uvicorn", "sse_starlette")
HINT = "eltmake ui needs the ui extra: pip install 'eltmake[ui]'"


def missing() -> list[str]:
    """The packages of the ``ui`` extra that are not installed."""
    from importlib.util import find_spec

    return [m for m in NEEDS if find_spec(m) is None]


def main(args: Any) -> int:
    """Run ``eltmake ui`` from parsed arguments; returns the exit code."""
    from eltmake.errors import ConfigError

    lacking = missing()
    if lacking:
        raise ConfigError(f"{HINT} ({', '.join(lacking)} not found)")
    from eltmake.ui.server import serve

    return serve(
        project_dir=args.project_dir,
        env_name=args.env_name,
        host=args.host,
        port=args.port,
        open_browser=args.open,
        read_only=args.read_only,
    )

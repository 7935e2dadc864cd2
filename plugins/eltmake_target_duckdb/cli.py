"""The command line: Singer's target protocol (``--config FILE``, messages on stdin, STATE on stdout).

Errors are one line on stderr: exit 2 for bad config or a bad message stream, 1 for anything
else; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

import orjson

from . import __version__
from .config import IGNORED, KNOWN, load_settings
from .errors import InputError, TargetError
from .target import Target
from .warehouse import Warehouse

PROG = "eltmake-target-duckdb"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Singer target: load Singer messages from stdin into a DuckDB database.",
    )
    parser.add_argument("-c", "--config", help="JSON config file (see docs/target-duckdb.md)")
    parser.add_argument("--about", action="store_true", help="print what this target is, as JSON")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _about() -> dict[str, object]:
    return {
        "name": PROG,
        "version": __version__,
        "description": "eltmake's DuckDB loader: bulk, typed, upserting, crash-safe",
        "capabilities": ["about", "activate-version", "hard-delete"],
        "settings": sorted(KNOWN),
        "accepted_and_ignored": sorted(IGNORED),
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(argv: list[str] | None = None) -> int:
    """Run the target; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.about:
        sys.stdout.buffer.write(orjson.dumps(_about(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not args.config:
        print(
            f"{PROG}: --config FILE is required (a JSON object with at least 'path')",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    # SIGTERM (a runner stopping us) unwinds like Ctrl-C, so the spool folder of uncommitted
    # batch files is removed instead of left behind in the temp folder.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = load_settings(args.config)
        for warning in settings.warnings:
            print(f"{PROG}: {warning}", file=sys.stderr)
        if settings.temp_dir is not None and not Path(settings.temp_dir).is_dir():
            raise InputError(f"setting 'temp_dir': {settings.temp_dir} is not a directory")
        warehouse = Warehouse(settings)
        try:
            with tempfile.TemporaryDirectory(prefix=f"{PROG}-", dir=settings.temp_dir) as folder:
                target = Target(settings, warehouse, sys.stdout.buffer, Path(folder))
                try:
                    target.run(sys.stdin.buffer)
                finally:
                    target.close()
        finally:
            warehouse.close()
    except TargetError as exc:
        if args.debug:
            raise
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        print(f"{PROG}: stdout was closed before the last STATE could be written", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (--debug shows more)",
            file=sys.stderr,
        )
        return 1
    elapsed = time.monotonic() - started
    print(
        f"{PROG}: loaded {target.rows_loaded} rows from {len(target.streams)} stream(s)"
        f" into {settings.path} in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0

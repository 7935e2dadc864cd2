"""A warm dbt: one long-lived process that runs dbt commands through ``dbtRunner``.

Started by :mod:`eltmake_dbt.warm` with the dbt environment's own python (so this file imports
only the standard library and dbt, never eltmake). dbt is imported once; each command after the
first skips Python's start, dbt's imports and the adapter's setup, and dbt's partial parsing
reads only the files that changed. Each command gets a fresh ``dbtRunner`` with the arguments a
cold ``dbt`` would get, in the same folder and environment.

The protocol is JSON lines. eltmake writes requests on stdin::

    {"id": "3", "args": ["build", "--select", "..."], "lock": null}

and this process answers on its original stdout::

    {"ready": true, "pid": 123, "dbt": "1.11.2"}      once dbt is imported
    {"id": "3", "started": true}                      the command starts
    {"id": "3", "line": "1 of 7 START sql table ..."} each line dbt prints, as it prints it
    {"id": "3", "done": true, "rc": 0, "exception": null, "rss_mb": 190}

dbt's own output (file descriptors 1 and 2, so whatever writes to them) goes into a pipe that a
thread turns into ``line`` messages; the ``done`` message is sent after the last of them. A
request with a ``lock`` path runs only if that file lock can be taken at once (a warm-up parse
must never wait behind, or block, a step that holds the dbt project's lock): otherwise it answers
``done`` with ``skipped``.

After each command the adapter's connections are closed and the DuckDB database released: a
DuckDB file admits one writing process, and the next step (a load, eltmake's row checksums) may
need it.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import sys
import threading
import traceback

END = "\x00eltmake-end:"


def rss_mb() -> int:
    """The resident memory of this process now, in MiB (not the peak: it is what is held)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def release() -> None:
    """Close every connection dbt holds, so nothing keeps the warehouse open between commands."""
    module = sys.modules.get("dbt.adapters.duckdb.connections")
    if module is not None:
        manager = module.DuckDBConnectionManager
        with manager._LOCK:
            if manager._ENV is not None:
                try:
                    manager._ENV.close()
                except Exception:
                    pass
                manager._ENV = None
    try:
        from dbt.adapters.factory import cleanup_connections, reset_adapters

        cleanup_connections()
        reset_adapters()
    except Exception:
        pass
    gc.collect()


class Channel:
    """The answers to eltmake: one JSON object per line on the original stdout."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self.current = ""  # the id of the command whose output is flowing
        self.results: dict[str, dict] = {}

    def send(self, message: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()

    def forward(self, fd: int) -> None:
        """Turn dbt's output into ``line`` messages; send ``done`` when its end marker arrives."""
        with os.fdopen(fd, "rb") as f:
            for raw in f:
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                if END in text:
                    before, rid = text.split(END, 1)
                    if before:
                        self.send({"id": self.current, "line": before})
                    self.send(self.results.pop(rid))
                    continue
                self.send({"id": self.current, "line": text})


def main() -> int:
    channel = Channel()
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    threading.Thread(target=channel.forward, args=(read_end,), daemon=True).start()
    try:
        from dbt.cli.main import dbtRunner
        from dbt.version import __version__
    except BaseException:
        channel.send({"fatal": "cannot import dbt: " + traceback.format_exc(limit=2)})
        return 3
    channel.send({"ready": True, "pid": os.getpid(), "dbt": str(__version__)})
    for raw in sys.stdin:
        try:
            request = json.loads(raw)
            rid, args = str(request["id"]), [str(a) for a in request["args"]]
        except (ValueError, KeyError, TypeError):
            channel.send({"fatal": f"not a request: {raw[:200]!r}"})
            return 3
        answer: dict = {"id": rid, "done": True}
        lock = None
        if request.get("lock"):
            lock = open(request["lock"], "a+")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                channel.send({**answer, "skipped": True})
                continue
        channel.current = rid
        channel.send({"id": rid, "started": True})
        exception = None
        try:
            result = dbtRunner().invoke(args)
            success, exception = result.success, result.exception
        except BaseException as e:  # dbt's own handlers catch almost everything; not all
            success, exception = False, e
        finally:
            release()
            if lock is not None:
                lock.close()
        sys.stdout.flush()
        sys.stderr.flush()
        answer["rc"] = 0 if success else 2 if exception is not None else 1
        answer["exception"] = (
            None if exception is None else f"{type(exception).__name__}: {exception}"
        )
        answer["rss_mb"] = rss_mb()
        channel.results[rid] = answer
        os.write(1, f"{END}{rid}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

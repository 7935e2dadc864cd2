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

START = "\x00eltmake-start:"
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
        self.current = ""  # the id of the command whose output is flowing (the forward thread's)
        self.results: dict[str, dict] = {}

    def send(self, message: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()

    def forward(self, fd: int) -> None:
        """Turn dbt's output into ``line`` messages of the command that printed them. The
        command's start and end are markers in the same stream, so every line is told apart
        even while the last lines of one command are still in the pipe when the next starts."""
        with os.fdopen(fd, "rb") as f:
            for raw in f:
                text = raw.decode("utf-8", errors="replace").rstrip("\n")
                for marker in (START, END):
                    if marker in text:
                        text, rid = text.split(marker, 1)
                        if text:
                            self.send({"id": self.current, "line": text})
                        if marker is START:
                            self.current = rid
                            self.send({"id": rid, "started": True})
                        else:
                            self.send(self.results.pop(rid))
                        break
                else:
                    self.send({"id": self.current, "line": text})


def installed_homes() -> set[str]:
    """Where the modules of dbt's environment come from: Python's library, the environment, and
    what was on ``sys.path`` when the worker started (editable installs, PYTHONPATH)."""
    here = os.path.realpath(os.getcwd())
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sys.path if p)}
    return {os.path.realpath(p) + os.sep for p in paths if os.path.realpath(p) != here}


def forget_project_modules(homes: set[str]) -> None:
    """Drop the modules imported from anywhere else (the dbt project's folder, a dbt-duckdb
    plugin's ``module_paths``): a Python model's helpers, say. A cold dbt imports them afresh,
    so the next command must too, or an edit to one would be missed."""
    here = os.path.realpath(os.getcwd()) + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name == "__main__" or not isinstance(path, str):
            continue
        keep = _KEEP.get(path)
        if keep is None:  # decided once per file: realpath for 1,500 modules costs 80 ms
            real = os.path.realpath(path)
            keep = not real.startswith(here) and any(real.startswith(h) for h in homes)
            if keep:
                _KEEP[path] = keep
        if not keep:
            del sys.modules[name]


_KEEP: dict[str, bool] = {}


def main() -> int:
    channel = Channel()
    # Requests come on a copy of stdin; dbt and what it starts read an empty one, as a cold dbt
    # started by eltmake does (nothing they read can swallow a request).
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
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
    homes = installed_homes()
    forget_project_modules(homes)  # learns where dbt's modules live now, not during a command
    channel.send({"ready": True, "pid": os.getpid(), "dbt": str(__version__)})
    for raw in requests:
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
        os.write(1, f"{START}{rid}\n".encode())
        exception = None
        sys.argv = ["dbt", *args]  # what dbt records as the invocation (run_results.json)
        try:
            result = dbtRunner().invoke(args)
            success, exception = result.success, result.exception
        except BaseException as e:  # dbt's own handlers catch almost everything; not all
            success, exception = False, e
        finally:
            release()
            forget_project_modules(homes)
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

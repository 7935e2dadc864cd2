"""A warm dbt per transformer while ``eltmake watch`` runs.

A cold dbt step spends most of its time starting: Python, dbt's imports, the adapter, the
manifest (about 4 s of a 4.6 s rebuild of one model of examples/shop). In watch mode
(:attr:`StepContext.warm`) the dbt step instead sends its command to a long-lived worker
(:mod:`eltmake_dbt.warm_worker`, run by the dbt environment's python) that keeps dbt imported
and runs each command with a fresh ``dbtRunner``: the same arguments, folder, environment and
profile as the cold command, so the same relations, tests and fingerprints. dbt's partial
parsing re-reads only the files that changed.

What the worker caches can go stale, so it is started afresh when any of these differ from when
it started (:func:`identity`): the dbt installation (its versions and python), dbt's environment
(``.env``, the transformer's ``env``, the profile folder), ``dbt_project.yml``,
``packages.yml``/``dependencies.yml``, ``profiles.yml``, the installed packages under
``dbt_packages/`` (each file's size and time), and this worker's own code. It is also started
afresh after a crash, after a command that did not start in time, after a cancelled command (an
edit during a warm run: the worker is killed, the next cycle starts from the new files) and when
it holds more memory than ``ELTMAKE_DBT_WARM_MAX_MB`` (default 2048) after a command. A command
the worker could not run, or that it died in the middle of, runs cold: never a silent wrong
result. ``warm = false`` in ``[transformers.NAME]`` (or ``ELTMAKE_DBT_WARM=0``) keeps every run
cold.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from eltmake.api import Project
    from eltmake_dbt.config import Transformer

WORKER = Path(__file__).with_name("warm_worker.py")
# Run as a file, not as a script: a script's folder goes first on sys.path, and this plugin's
# select.py would shadow the standard library's select module inside dbt.
RUN_FILE = "import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name='__main__')"
# From sending a command to the worker saying it started: dbt's import (1.7 s on these machines)
# plus a margin for a loaded machine. Past it the worker is taken for hung and the step runs cold
# (ELTMAKE_DBT_WARM_START_S overrides it).
START_S = 120.0
MAX_MB = 2048
PACKAGE_FILES = ("dbt_project.yml", "packages.yml", "dependencies.yml")


class Unavailable(Exception):
    """The warm dbt could not run the command (the message says why): run it cold."""


def enabled(tf: Transformer, exe: str) -> bool:
    """Whether this transformer's dbt can run warm: allowed, and run from an environment of its
    own (a dbt found on PATH has no python of its own to run the worker with)."""
    if not tf.warm or os.environ.get("ELTMAKE_DBT_WARM", "1").strip().lower() in ("0", "false"):
        return False
    return python_of(exe) is not None


def python_of(exe: str) -> Path | None:
    python = Path(exe).parent / "python"
    return python if python.exists() else None


def _file_digest(path: Path) -> str | None:
    try:
        return digest(path.read_bytes())  # small files: the worker's code, a profile
    except OSError:
        return None


def identity(
    project: Project, tf: Transformer, exe: str, env: dict[str, str], files: dict[str, list]
) -> dict[str, Any]:
    """What a running worker depends on, by name; a worker whose identity differs is replaced.

    ``files`` is the dbt project's walk with content digests that the manifest module made for
    this build (:attr:`eltmake_dbt.manifest.Info.files`): the project and package files and what
    is installed under ``dbt_packages/`` come from it rather than from a second walk."""
    from eltmake.api import tool_identity

    parts: dict[str, Any] = {
        "dbt's installation": digest(tool_identity(project, tf.spec())),
        "dbt's python": str(python_of(exe)),
        "the warm worker's code": _file_digest(WORKER),
        "dbt's environment": digest(sorted(env.items())),
        "profiles.yml": _file_digest(Path(env.get("DBT_PROFILES_DIR", ".")) / "profiles.yml"),
        "dbt_packages/": digest(
            sorted((r, v[3]) for r, v in files.items() if r.startswith("dbt_packages/"))
        ),
    }
    for name in PACKAGE_FILES:
        parts[name] = files[name][3] if name in files else None
    return parts


class Worker:
    """One warm dbt process and the messages it sends."""

    def __init__(self, python: Path, cwd: Path, env: dict[str, str], parts: dict[str, Any]):
        from eltmake.api import spawn_helper

        self.parts = parts
        self.proc = spawn_helper(
            [str(python), "-u", "-c", RUN_FILE, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=env,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ids = itertools.count(1)
        self.busy = threading.Lock()  # one command at a time
        self.warmed = False
        self.dbt_version: str | None = None
        self.stray: list[str] = []  # lines not in the protocol: python's own errors at start
        threading.Thread(target=self._read, name="warm-dbt", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at the worker's end: no descriptor left per worker
            self._read_messages(self.proc.stdout)
        self.messages.put(None)

    def _read_messages(self, stream) -> None:
        for raw in stream:
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self.stray = [*self.stray[-20:], text]
                continue
            self.messages.put(message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the worker and anything it started (dbt runs in its process), for good."""
        from eltmake.api import stop_helper

        stop_helper(self.proc)

    def send(self, request: dict[str, Any]) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _ended(self, when: str) -> Unavailable:
        rc = self.proc.wait()
        detail = f": {self.stray[-1].strip()}" if self.stray else ""
        return Unavailable(f"the warm dbt exited {when} (exit code {rc}){detail}")

    def command(
        self,
        args: list[str],
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> dict[str, Any] | None:
        """Run one dbt command; its ``done`` answer, or None when ``cancelled`` was set. Raises
        :class:`Unavailable` when the worker cannot run it. Either way the caller stops the
        worker (:func:`run`: dbt runs inside it, so that is how a cancel stops dbt)."""
        with self.busy:
            rid = str(next(self.ids))
            if not self.send({"id": rid, "args": args}):
                raise self._ended("before the command")
            started = False
            # A hang is silence: no word from the worker for wait_s before the command starts
            # (its import, or a warm-up parse ahead of the command, speak as they go).
            wait_s = _setting("ELTMAKE_DBT_WARM_START_S", START_S)
            deadline = time.monotonic() + wait_s
            while True:
                if cancelled.is_set():
                    return None
                try:
                    message = self.messages.get(timeout=0.05)
                except queue.Empty:
                    if not started and time.monotonic() > deadline:
                        raise Unavailable(
                            f"the warm dbt was silent for {wait_s:g}s and did not start the command"
                        ) from None
                    continue
                if message is None:
                    raise self._ended("in the middle of the command" if started else "at start")
                deadline = time.monotonic() + wait_s
                if "fatal" in message:
                    raise Unavailable(str(message["fatal"]).strip().splitlines()[-1])
                if message.get("ready"):
                    self.dbt_version = message.get("dbt")
                    continue
                if message.get("id") != rid:
                    continue  # the end of a warm-up parse
                if "line" in message:
                    on_line(str(message["line"]))
                elif message.get("started"):
                    started = True
                    on_line(f"warm dbt (pid {self.proc.pid}, dbt {self.dbt_version}) runs it")
                elif message.get("done"):
                    return message


_workers: dict[tuple[str, str, str], Worker] = {}
_lock = threading.Lock()


def worker(
    project: Project,
    tf: Transformer,
    exe: str,
    env: dict[str, str],
    files: dict[str, list],
    echo: Callable[[str], None],
) -> Worker:
    """The transformer's warm worker, started (or started afresh, saying why) when needed."""
    python = python_of(exe)
    assert python is not None
    parts = identity(project, tf, exe, env, files)
    key = _key(project, tf)
    with _lock:
        old = _workers.get(key)
        if old is not None and old.alive() and old.parts == parts:
            return old
        if old is not None:
            changed = [name for name in parts if old.parts.get(name) != parts[name]]
            why = f"{', '.join(changed)} changed" if changed else "it had exited"
            echo(f"warm dbt: starting afresh ({why})")
            old.stop()
        new = _workers[key] = Worker(python, tf.project_dir, env, parts)
        return new


def running(project: Project, tf: Transformer) -> bool:
    """Whether a watch keeps a warm dbt for this transformer (other commands stay cold)."""
    with _lock:
        w = _workers.get(_key(project, tf))
    return w is not None and w.alive()


def _key(project: Project, tf: Transformer) -> tuple[str, str, str]:
    return (str(project.root), tf.name, project.env_name or "")


def forget(project: Project, tf: Transformer, w: Worker) -> None:
    key = _key(project, tf)
    with _lock:
        if _workers.get(key) is w:
            del _workers[key]
    w.stop()


def run(
    project: Project,
    tf: Transformer,
    exe: str,
    args: list[str],
    env: dict[str, str],
    files: dict[str, list],
    on_line: Callable[[str], None],
    cancelled: threading.Event,
    echo: Callable[[str], None],
) -> int:
    """Run ``dbt ARGS`` warm; its exit code as a cold dbt's would be (0 ok, 1 a failed node, 2 an
    error), or -9 when cancelled. ``files``: see :func:`identity`. Raises :class:`Unavailable`:
    run it cold instead."""
    w = worker(project, tf, exe, env, files, echo)
    try:
        done = w.command(args, on_line, cancelled)
    except Unavailable:
        forget(project, tf, w)
        raise
    if done is None:
        forget(project, tf, w)
        return -signal.SIGKILL
    rc = int(done.get("rc", 2))
    if rc != 0 and done.get("exception"):
        on_line(str(done["exception"]))
    limit = int(_setting("ELTMAKE_DBT_WARM_MAX_MB", MAX_MB))
    if int(done.get("rss_mb") or 0) > limit:
        echo(
            f"warm dbt: holds {done['rss_mb']} MB after the command (limit {limit}); it starts afresh next time"
        )
        forget(project, tf, w)
    return rc


def parse(
    project: Project,
    tf: Transformer,
    exe: str,
    args: list[str],
    env: dict[str, str],
    files: dict[str, list],
    echo: Callable[[str], None],
) -> tuple[int | None, list[str]]:
    """``dbt parse`` (the one a Jinja edit needs to learn what targets select) by the warm dbt
    when a watch keeps one: its exit code and lines, or ``(None, [])`` to parse cold."""
    if not running(project, tf):
        return None, []
    lines: list[str] = []
    try:
        rc = run(project, tf, exe, args, env, files, lines.append, threading.Event(), echo)
    except Unavailable as e:
        echo(f"warm dbt: {e}; parsing cold")
        return None, []
    return rc, lines


def _setting(name: str, default: float) -> float:
    """A positive number from the environment, else the default (a typo must not turn the
    bound off)."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def prewarm(project: Project, tf: Transformer) -> None:
    """Start the transformer's worker ahead of its first command (a watch whose first cycle
    skips the dbt steps), and have it parse the project once, so the first edit is warm too.

    The parse runs only if the dbt project's lock is free at that instant, so it never waits
    behind a step; a step that starts meanwhile waits for it (one parse, at the watch's start).
    Nothing is installed here."""
    from eltmake.api import executable_path, is_installed
    from eltmake_dbt import config as _config
    from eltmake_dbt.manifest import base_args, file_digests, lock_file, read_cached

    with _lock:
        if _key(project, tf) in _workers:
            return  # a step replaces it if need be, and says why
    spec = tf.spec()
    if spec.pip_url and not is_installed(project, spec):
        return
    exe = executable_path(project, spec)
    if not enabled(tf, exe):
        return
    # The files as they are now (a Jinja edit is parsed after this, in the worker started here);
    # the last summary's stats spare reading the unchanged ones.
    last = read_cached(project, tf)
    files = file_digests(tf.project_dir, last.files if last is not None else {})
    env = _config.dbt_env(project, tf, dict(project.environ))
    w = worker(project, tf, exe, env, files, lambda line: None)
    if not w.warmed:
        w.warmed = True
        w.send(
            {
                "id": "warm-up",
                "args": ["parse", *base_args(tf)],
                "lock": str(lock_file(project, tf)),
            }
        )

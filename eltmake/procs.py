"""Child processes: in process groups of their own, stopped on Ctrl-C, and never outliving eltmake.

Two layers keep a killed eltmake from leaving its steps running (a ``kill -9`` gives it no chance
to clean up):

* The *guard*: a tiny watchdog process started with the first child. eltmake tells it, over a
  pipe, each process group and private folder it creates and forgets; when the pipe closes
  without a goodbye (eltmake died, however), the guard terminates those groups (SIGTERM, then
  SIGKILL) and deletes the folders, which hold config files with secrets. It runs in a session
  of its own, so a signal to eltmake's group does not reach it.
* The *record*: a build also lists its running groups in ``.eltmake/procs/PID.json``; the next
  start in that project stops what a dead eltmake left there (in case the guard died too), after
  checking each group's leader is still the process that was recorded (pids are reused).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_GUARD_CODE = r"""
import os, shutil, signal, sys, time
token = sys.argv[1].encode()
groups, dirs = set(), set()
bye = False
for line in sys.stdin:
    op, _, arg = line.rstrip("\n").partition(" ")
    if op == "+g": groups.add(int(arg))
    elif op == "-g": groups.discard(int(arg))
    elif op == "+d": dirs.add(arg)
    elif op == "-d": dirs.discard(arg)
    elif op == "bye": groups.clear(); dirs.clear(); bye = True; break
def alive(g):
    try:
        os.killpg(g, 0)
        return True
    except OSError:
        return False
# A child started in the instant before eltmake could name it to us carries our token in its
# environment: find those too.
if not bye:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if b"ELTMAKE_GUARD=" + token + b"\0" in f.read():
                        groups.add(os.getpgid(int(pid)))
            except OSError:
                pass
for g in groups:
    try: os.killpg(g, signal.SIGTERM)
    except OSError: pass
end = time.monotonic() + 2.0
while time.monotonic() < end and any(alive(g) for g in groups):
    time.sleep(0.05)
for g in groups:
    try: os.killpg(g, signal.SIGKILL)
    except OSError: pass
for d in dirs: shutil.rmtree(d, ignore_errors=True)
"""


class _Guard:
    """The process-wide watchdog (see the module docstring), started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.token = f"{os.getpid()}-{os.urandom(6).hex()}"

    def mark(self, kwargs: dict[str, Any]) -> None:
        """Give a child our token in its environment, so the guard finds it even if eltmake is
        killed between starting it and naming it to the guard."""
        env = kwargs.get("env")
        kwargs["env"] = {**(os.environ if env is None else env), "ELTMAKE_GUARD": self.token}

    def start(self) -> None:
        """Start the guard before the first child: a child must never run unwatched while the
        guard is still starting (a kill -9 then would leave it behind)."""
        if self._proc is None:
            self._send("")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None:
                import atexit

                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _GUARD_CODE, self.token],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    close_fds=True,
                )
                atexit.register(self.close)
            if not line:
                return
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the guard is gone: the record under .eltmake/procs is the fallback

    def watch(self, pgid: int) -> None:
        self._send(f"+g {pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-g {pgid}")

    def keep_private(self, path: str) -> None:
        self._send(f"+d {path}")

    def drop_private(self, path: str) -> None:
        self._send(f"-d {path}")

    def close(self) -> None:
        """A normal exit: tell the guard nothing is left to clean up, and let it go."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.write(b"bye\n")
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass


GUARD = _Guard()


class ProcessRegistry:
    """Every child started for a step, grouped by owner (the step's context).

    A child runs in a new session (its own process group), so terminating the group also stops
    whatever the child started itself (a shell's pipeline, dbt's threads, a tap's helpers).
    With ``state_dir``, the running groups are also listed in ``state_dir/procs/PID.json``.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, tuple[subprocess.Popen, Any]] = {}
        self._record = state_dir / "procs" / f"{os.getpid()}.json" if state_dir else None

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
        GUARD.start()
        GUARD.mark(kwargs)
        with self._lock:
            if cancelled is not None and cancelled.is_set():
                from eltmake.errors import Cancelled

                raise Cancelled("cancelled")
            proc = subprocess.Popen(argv, **kwargs)
            self._procs[proc.pid] = (proc, owner)
            GUARD.watch(proc.pid)
            self._write_record()
        threading.Thread(target=self._reap, args=(proc,), daemon=True).start()
        return proc

    def _reap(self, proc: subprocess.Popen) -> None:
        proc.wait()
        # The leader has exited; what it started in its group is stopped with it (a step's
        # leftovers must not outlive the step).
        _signal_group(proc, signal.SIGKILL)
        with self._lock:
            self._procs.pop(proc.pid, None)
            GUARD.forget(proc.pid)
            self._write_record()

    def _write_record(self) -> None:
        if self._record is None:
            return
        groups = [[pid, _start_time(pid)] for pid in self._procs]
        try:
            if groups:
                self._record.parent.mkdir(parents=True, exist_ok=True)
                self._record.write_text(json.dumps(groups))
            else:
                self._record.unlink(missing_ok=True)
        except OSError:
            pass  # the guard still covers us

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


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` for work outside a step (installs, parses): in a session of its
    own, watched by the guard, and stopped with its group on Ctrl-C or any exception."""
    kwargs.setdefault("start_new_session", True)
    timeout = kwargs.pop("timeout", None)
    input_data = kwargs.pop("input", None)
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    GUARD.start()
    GUARD.mark(kwargs)
    proc = subprocess.Popen(argv, **kwargs)
    GUARD.watch(proc.pid)
    try:
        out, err = proc.communicate(input_data, timeout=timeout)
    except BaseException:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        GUARD.forget(proc.pid)
    _signal_group(proc, signal.SIGKILL)  # leftovers of a finished command
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


_HELPERS: list[subprocess.Popen] = []


def spawn_helper(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a long-lived helper process (a warm tool server kept between the runs of a watch):
    in a session of its own, watched by the guard (it dies with eltmake, even after kill -9) and
    stopped when eltmake exits. Not tied to a step: it outlives the step that started it."""
    kwargs.setdefault("start_new_session", True)
    GUARD.start()
    GUARD.mark(kwargs)
    proc = subprocess.Popen(argv, **kwargs)
    GUARD.watch(proc.pid)
    if not _HELPERS:
        import atexit

        atexit.register(_stop_helpers)
    _HELPERS.append(proc)
    return proc


def stop_helper(proc: subprocess.Popen) -> None:
    """Stop a helper from :func:`spawn_helper` for good: kill its process group if it still runs,
    reap it, close our end of its stdin and forget it (the guard and the exit clean-up no
    longer signal its pid, which the system may give to another process)."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if proc in _HELPERS:
        _HELPERS.remove(proc)
    GUARD.forget(proc.pid)


def _stop_helpers() -> None:
    for proc in _HELPERS:
        _signal_group(proc, signal.SIGTERM)
    for proc in _HELPERS:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)


def stop_orphans(state_dir: Path) -> list[int]:
    """Stop the process groups that a dead eltmake left running in this project (listed under
    ``procs/``); return the groups stopped. Ours and live eltmakes' are left alone."""
    folder = state_dir / "procs"
    try:
        files = list(folder.iterdir())
    except OSError:
        return []
    stopped = []
    for file in files:
        try:
            owner = int(file.stem)
        except ValueError:
            continue
        if owner == os.getpid() or pid_alive(owner):
            continue
        try:
            groups = json.loads(file.read_text())
        except (OSError, ValueError):
            groups = []
        for item in groups if isinstance(groups, list) else []:
            try:
                pgid, started = int(item[0]), item[1]
            except (TypeError, ValueError, IndexError):
                continue
            now = _start_time(pgid)
            if now is not None and now != started:
                continue  # the pid was reused by another process: not ours
            try:
                os.killpg(pgid, signal.SIGKILL)
                stopped.append(pgid)
            except OSError:
                pass
        try:
            file.unlink()
        except OSError:
            pass
    return stopped


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

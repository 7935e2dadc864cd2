"""Running tap → mappers → target: processes, the buffer between them, stderr, state, failures.

The data path::

    tap ─pipe─> mapper ─pipe─> … ─pipe─> [eltmake: check + fingerprint] ─buffer─> target
                                                                         target stdout ─> state

* The last producer's stdout (the tap's, or the last mapper's) is read by a *pump* thread in
  blocks of up to 64 KiB (after a short read it waits 20 ms so that a batch gathers in the pipe:
  a tap writes line by line, and per-line wake-ups would cost more than the checks), checked and fingerprinted (:mod:`eltmake_singer.messages`) and put into a
  byte-bounded queue (``buffer_mb``, default 16 MiB); a *writer* thread writes it to the
  target's stdin. The queue is what lets the tap run on while the target writes a batch (a plain
  64 KiB shell pipe stalls it); its bound keeps memory flat at any volume. Pipes are enlarged to
  1 MiB where the kernel allows, so each side wakes less often.
* Mappers read the previous tool's stdout directly (an OS pipe): they parse every message anyway.
* Every stderr is drained by its own thread and shown prefixed with the tool's name, with
  secrets masked; the last lines are kept for the error message.
* The target's stdout carries the states it has committed; each one is handed to ``on_state`` as
  it arrives (the caller merges it into the state store, atomically).

Failures: when the target fails, the tap (and mappers) are stopped; when the tap fails or writes
something that is not a Singer message, what came before reaches the target, whose stdin is then
closed so that it flushes and emits its last state. A tool running past ``timeout`` is stopped.
The step succeeds only when every process exited 0 and nothing was wrong; otherwise a StepError
names the side, its exit code and its last stderr lines.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eltmake.api import Cancelled, StepError
from eltmake_singer.bookmarks import merge_state, unwrap_state_line
from eltmake_singer.messages import BadOutput, MessageScanner

READ_SIZE = 64 * 1024
GATHER_S = 0.02  # a fast tap fills ~300 KB of the 1 MiB pipe meanwhile: it never waits on us
GATHER_STEPS = 4
PIPE_SIZE = 1024 * 1024
TAIL = 20
STDERR_LINE_MAX = 64 * 1024
STOP_GRACE_S = 3.0
PROGRESS_EVERY_S = 0.5
POLL_S = 0.1  # checks for timeouts, cancellation and stop deadlines; exits wake us at once


class ByteQueue:
    """A FIFO of byte blocks bounded by their total size (one block may exceed it alone)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.peak = 0
        self._q: collections.deque[bytes] = collections.deque()
        self._cv = threading.Condition()
        self._ended = False
        self._closed = False
        self._putters = 0  # threads waiting in put / get: notify only when someone listens
        self._getters = 0

    def put(self, block: bytes) -> bool:
        """Add a block, waiting for room; False when the consumer has gone (:meth:`close`)."""
        with self._cv:
            while self._q and self.size + len(block) > self.limit and not self._closed:
                self._putters += 1
                self._cv.wait()
                self._putters -= 1
            if self._closed:
                return False
            self._q.append(block)
            self.size += len(block)
            self.peak = max(self.peak, self.size)
            if self._getters:
                self._cv.notify_all()
            return True

    def end(self) -> None:
        """No more blocks will come; :meth:`get` returns None once the queue is empty."""
        with self._cv:
            self._ended = True
            self._cv.notify_all()

    def close(self) -> None:
        """The consumer has gone: drop what is queued and refuse more."""
        with self._cv:
            self._closed = True
            self._q.clear()
            self.size = 0
            self._cv.notify_all()

    def get(self) -> bytes | None:
        with self._cv:
            while not self._q and not self._ended and not self._closed:
                self._getters += 1
                self._cv.wait()
                self._getters -= 1
            if self._closed or not self._q:
                return None
            block = self._q.popleft()
            self.size -= len(block)
            if self._putters:
                self._cv.notify_all()
            return block


@dataclass
class Tool:
    """One process of the pipeline."""

    name: str
    role: str  # tap | mapper | target
    argv: list[str]
    proc: subprocess.Popen | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL))
    stopped_by_us: bool = False
    stop_deadline: float | None = None

    @property
    def returncode(self) -> int | None:
        """Set once the watcher thread's ``wait()`` has returned (no polling)."""
        return None if self.proc is None else self.proc.returncode


@dataclass
class PipelineResult:
    counts: dict[str, int]
    digests: dict[str, str]
    announced: set[str]  # streams the tap sent a SCHEMA for
    states: int  # states the target emitted and were saved
    bad_state_lines: int
    bytes: int
    duration_s: float


def _enlarge_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, AttributeError):
        pass  # a smaller pipe is slower, not wrong


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"failed with exit code {code}"


class Pipeline:
    """One run of tap → mappers → target, for :func:`run`."""

    def __init__(
        self,
        ctx: Any,
        tools: list[Tool],
        *,
        on_state: Callable[[Any], None],
        redact: Callable[[str], str],
        timeout: float | None = None,
        max_line: int = 16 * 1024 * 1024,
        buffer_bytes: int = 16 * 1024 * 1024,
    ):
        self.ctx = ctx
        self.tools = tools
        self.producers = tools[:-1]
        self.target = tools[-1]
        self.on_state = on_state
        self.redact = redact
        self.timeout = timeout
        self.scanner = MessageScanner(max_line)
        self.queue = ByteQueue(buffer_bytes)
        self.states = 0
        self.bad_state_lines = 0
        self._problems: list[tuple[int, str, Tool | None]] = []  # (priority, message, tool)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._target_gone = False
        self._changed = threading.Event()
        self._state_cv = threading.Condition()
        self._pending: Any = None
        self._pending_states = 0
        self._states_done = False
        self._writer_done = False

    # --- helpers -------------------------------------------------------------------------------

    def _problem(self, priority: int, message: str, tool: Tool | None) -> None:
        with self._lock:
            self._problems.append((priority, message, tool))

    def _stop(self, tool: Tool) -> None:
        """SIGTERM a tool's process group; the main loop sends SIGKILL after a grace period."""
        if tool.proc is None or tool.returncode is not None:
            return
        tool.stopped_by_us = True
        tool.stop_deadline = tool.stop_deadline or time.monotonic() + STOP_GRACE_S
        try:
            os.killpg(tool.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_producers(self) -> None:
        for tool in self.producers:
            self._stop(tool)

    def _thread(self, fn: Callable[..., None], *args: Any) -> None:
        th = threading.Thread(target=fn, args=args, daemon=True, name=f"singer-{fn.__name__}")
        th.start()
        self._threads.append(th)

    # --- threads -------------------------------------------------------------------------------

    def _drain_stderr(self, tool: Tool) -> None:
        assert tool.proc and tool.proc.stderr
        stderr = tool.proc.stderr
        # Bounded reads: a tool that writes megabytes without a newline cannot fill our memory.
        for raw in iter(lambda: stderr.readline(STDERR_LINE_MAX), b""):
            line = self.redact(raw.decode("utf-8", "replace").rstrip())
            if line:
                tool.tail.append(line)
                self.ctx.log(f"{tool.name}: {line}")

    def _pump(self, fd: int) -> None:
        """Producer stdout → checks → queue. Keeps reading after a failure so no one blocks."""
        producer = self.producers[-1]
        failed = False
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        try:
            while True:
                data = os.read(fd, READ_SIZE)
                if not data:
                    break
                if len(data) < READ_SIZE // 2:
                    # We keep up with the tap: let a batch gather in the (1 MiB) pipe instead of
                    # paying every per-block cost for each line it writes; stop waiting as soon
                    # as the tap has closed its output, so that the end is not delayed.
                    for _ in range(GATHER_STEPS):
                        time.sleep(GATHER_S / GATHER_STEPS)
                        if any(ev & select.POLLHUP for _, ev in poller.poll(0)):
                            break
                if failed:
                    continue
                try:
                    block = self.scanner.feed(data)
                except BadOutput as exc:
                    if exc.valid:
                        self.queue.put(exc.valid)
                    self._bad_output(producer, exc)
                    failed = True
                    continue
                if block and not self.queue.put(block):
                    failed = True  # the target has gone; drain the producer until it stops
            if not failed:
                try:
                    block = self.scanner.finish()
                except BadOutput as exc:
                    block = exc.valid
                    # A tap that crashed mid-line is reported for its exit code, not the line.
                    producer.proc.wait()
                    if producer.proc.returncode == 0:
                        self._bad_output(producer, exc)
                if block:
                    self.queue.put(block)
        except OSError as exc:
            self._problem(1, f"reading the output of {producer.name} failed: {exc}", producer)
        finally:
            os.close(fd)
            self.queue.end()

    def _bad_output(self, producer: Tool, exc: BadOutput) -> None:
        self._problem(
            0,
            f"{producer.name} ({producer.role}) wrote bad output at line {exc.line_no}: "
            f"{self.redact(exc.message)}; nothing from that line on reached the target",
            producer,
        )
        self._stop_producers()

    def _write(self, fd: int) -> None:
        """Queue → target stdin; when the target stops reading, stop the producers."""
        try:
            while True:
                block = self.queue.get()
                if block is None:
                    break
                view = memoryview(block)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            self._writer_done = True  # before closing: the target cannot exit on EOF earlier
        except (BrokenPipeError, OSError):
            self._target_gone = True
            self.queue.close()
            self._stop_producers()
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_states(self) -> None:
        """Target stdout → pending state. States that arrive while the previous one is being
        saved are merged in memory (the same result as saving them one by one), so a target that
        emits a state per record cannot be slowed down by the store's fsyncs."""
        target = self.target
        assert target.proc and target.proc.stdout
        try:
            for n, raw in enumerate(iter(target.proc.stdout.readline, b""), 1):
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    state = unwrap_state_line(json.loads(text))
                except ValueError:
                    self.bad_state_lines += 1
                    self.ctx.log(
                        f"{target.name}: stdout line {n} is not JSON state, ignored: "
                        f"{self.redact(text[:120])!r}"
                    )
                    continue
                with self._state_cv:
                    if self._pending_states:
                        self._pending = merge_state(self._pending, state)
                    else:
                        self._pending = state
                    self._pending_states += 1
                    self._state_cv.notify()
        finally:
            with self._state_cv:
                self._states_done = True
                self._state_cv.notify()

    def _save_states(self) -> None:
        while True:
            with self._state_cv:
                while not self._pending_states and not self._states_done:
                    self._state_cv.wait()
                if not self._pending_states:
                    return
                state, count = self._pending, self._pending_states
                self._pending, self._pending_states = None, 0
            try:
                self.on_state(state)
            except Exception as exc:  # the store failed: stop, the next run redoes the work
                self._problem(
                    0, f"saving the state that {self.target.name} emitted failed: {exc}", None
                )
                self._stop_producers()
                return
            self.states += count

    # --- the run -------------------------------------------------------------------------------

    def _spawn(self, tool: Tool, **kwargs: Any) -> subprocess.Popen:
        try:
            tool.proc = self.ctx.popen(tool.argv, stderr=subprocess.PIPE, **kwargs)
        except OSError as exc:
            raise StepError(f"{tool.name} ({tool.role}) could not start: {exc}") from None
        self._thread(self._drain_stderr, tool)
        self._thread(self._watch, tool)
        return tool.proc

    def _watch(self, tool: Tool) -> None:
        """Wake the main loop as soon as a process exits."""
        assert tool.proc
        tool.proc.wait()
        self._changed.set()

    def run(self) -> PipelineResult:
        started = time.monotonic()
        try:
            self._start()
            self._wait(started)
        finally:
            for tool in self.tools:
                self._stop(tool)
                if tool.proc is not None and tool.proc.poll() is None:
                    try:
                        tool.proc.wait(timeout=STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        try:
                            os.killpg(tool.proc.pid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
            for th in self._threads:
                th.join(timeout=5)
        if self.ctx.cancelled.is_set():
            raise Cancelled(f"{self.ctx.step.name}: cancelled")
        self._raise_problems()
        return PipelineResult(
            counts=dict(self.scanner.counts),
            digests=self.scanner.stream_digests(),
            announced=set(self.scanner.schemas),
            states=self.states,
            bad_state_lines=self.bad_state_lines,
            bytes=self.scanner.bytes,
            duration_s=time.monotonic() - started,
        )

    def _start(self) -> None:
        target = self._spawn(self.target, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert target.stdin and target.stdout
        _enlarge_pipe(target.stdin.fileno())
        upstream = None
        for tool in self.producers:
            proc = self._spawn(
                tool,
                stdin=upstream if upstream is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            assert proc.stdout
            _enlarge_pipe(proc.stdout.fileno())
            if upstream is not None:
                upstream.close()  # the mapper holds it now; our copy would keep it open
            upstream = proc.stdout
        assert upstream is not None
        read_fd = os.dup(upstream.fileno())
        upstream.close()
        write_fd = os.dup(target.stdin.fileno())
        target.stdin.close()
        self._thread(self._pump, read_fd)
        self._thread(self._write, write_fd)
        self._thread(self._read_states)
        self._thread(self._save_states)

    def _wait(self, started: float) -> None:
        last_progress = 0.0
        while True:
            now = time.monotonic()
            if all(t.returncode is not None for t in self.tools):
                break
            if self.ctx.cancelled.is_set():
                for tool in self.tools:
                    self._stop(tool)
            if self.target.returncode is not None and not self._writer_done:
                # The target has gone before its input ended: nothing can reach it any more.
                if not self._target_gone:
                    self._target_gone = True
                    self.queue.close()
                    self._stop_producers()
            if self.timeout is not None and now - started > self.timeout:
                hung = next(t for t in self.tools if t.returncode is None)
                if not any(p[0] == -1 for p in self._problems):
                    self._problem(
                        -1,
                        f"{hung.name} ({hung.role}) was still running after the timeout of "
                        f"{self.timeout:g}s and was stopped",
                        hung,
                    )
                for tool in self.tools:
                    self._stop(tool)
            for tool in self.tools:
                if tool.stop_deadline and now > tool.stop_deadline and tool.returncode is None:
                    try:
                        os.killpg(tool.proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            if now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                self._show_progress(now - started)
            self._changed.wait(POLL_S)  # an exit wakes us at once; else timeouts, Ctrl-C
            self._changed.clear()
        # The target's stdout may still hold its last states: let the readers finish.
        for th in self._threads:
            th.join(timeout=10)
        self._show_progress(time.monotonic() - started)

    def _show_progress(self, elapsed: float) -> None:
        try:
            counts = sorted(self.scanner.counts.items())
        except RuntimeError:  # changed while we looked; next time
            return
        total = sum(n for _, n in counts)
        rate = total / elapsed if elapsed > 0 else 0.0
        streams = " · ".join(f"{s} {n:,}" for s, n in counts[:6])
        more = f" · +{len(counts) - 6} streams" if len(counts) > 6 else ""
        self.ctx.progress(f"{total:,} records · {rate:,.0f}/s · {streams}{more}".rstrip(" ·"))

    def _raise_problems(self) -> None:
        problems = sorted(self._problems, key=lambda p: p[0])
        target = self.target
        rc = target.returncode
        if rc not in (0, None) and not (target.stopped_by_us and problems):
            stopped = (
                "; the tap was stopped" if any(t.stopped_by_us for t in self.producers) else ""
            )
            problems.append((2, f"{target.name} (target) {_describe_exit(rc)}{stopped}", target))
        elif rc == 0 and self._target_gone:
            problems.append(
                (2, f"{target.name} (target) exited before reading all its input", target)
            )
        for tool in self.producers:
            code = tool.returncode
            if code not in (0, None) and not tool.stopped_by_us:
                what = (
                    "the target loaded what it received; only states it emitted were saved"
                    if rc == 0
                    else "nothing more reached the target"
                )
                problems.append(
                    (3, f"{tool.name} ({tool.role}) {_describe_exit(code)}; {what}", tool)
                )
        if not problems:
            return
        _, message, tool = min(problems, key=lambda p: p[0])
        others = [m for _, m, _ in problems if m != message]
        if others:
            message += f" (also: {others[0]})"
        tail = list(tool.tail) if tool is not None else []
        raise StepError(message, tail=tail)


def run(ctx: Any, tools: list[Tool], **kwargs: Any) -> PipelineResult:
    """Run the pipeline ``tools`` (tap, mappers..., target); see :class:`Pipeline`."""
    return Pipeline(ctx, tools, **kwargs).run()

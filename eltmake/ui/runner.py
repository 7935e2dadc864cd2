"""Builds started from the UI: one at a time, in a thread, through :func:`eltmake.build.run_build`
(the code behind ``eltmake build``), reported to the browser as events.

The project lock is the one ``eltmake build`` takes, so a build from here and one from a terminal
never run at once; a build from here fails at once (``--no-wait``) rather than queue invisibly
behind another, and the page says which process holds the project.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eltmake.output import Reporter, count

if TYPE_CHECKING:
    from eltmake.step import Outcome
    from eltmake.ui.events import EventHub

LINES_PER_STEP = 1000  # output lines kept in memory per step of a build (the log file has all)
PROGRESS_EVERY_S = 0.25


class Busy(Exception):
    """A build cannot start now (one runs here, or another process holds the project)."""


@dataclass
class UIBuild:
    """One build started from the UI, as the build page shows it."""

    id: int
    targets: list[str]
    dry_run: bool
    force: bool
    status: str = "starting"  # starting | running | ok | failed | interrupted | error
    run_id: int | None = None
    order: list[str] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, deque[str]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    error: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    sched: Any = None
    thread: threading.Thread | None = None
    # Held while an event is recorded and published, so a snapshot and the id of the last event
    # it includes are taken together (a page then neither misses nor repeats a line).
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running")

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "targets": self.targets,
            "dry_run": self.dry_run,
            "force": self.force,
            "status": self.status,
            "run_id": self.run_id,
            "order": self.order,
            "steps": self.steps,
            "lines": {n: list(d) for n, d in self.lines.items()},
            "messages": self.messages[-50:],
            "error": self.error,
            "started": self.started,
            "ended": self.ended,
        }


class UIReporter(Reporter):
    """The events of one build, kept on the :class:`UIBuild` and published to the event hub.
    Called from the scheduler's thread and (for logs and progress) from step threads."""

    def __init__(self, hub: EventHub, build: UIBuild):
        self.hub = hub
        self.b = build
        self._lock = build.lock
        self._progress_at: dict[str, float] = {}

    def _pub(self, kind: str, **data: Any) -> None:
        self.hub.publish(kind, {"build": self.b.id, **data})

    def build_started(self, targets: list[str], dry_run: bool) -> None:
        with self._lock:
            self.b.status = "running"
            self.b.order = list(targets)
            self.b.run_id = getattr(self.b.sched, "run_id", None)
            self.b.steps = {t: {"status": "pending"} for t in targets}
            self._pub("build_started", targets=targets, dry_run=dry_run, run_id=self.b.run_id)

    def step_started(self, name: str, reason: str) -> None:
        with self._lock:
            self.b.steps[name] = {"status": "running", "reason": reason, "started": time.time()}
            self._pub("step_started", target=name, reason=reason)

    def step_log(self, name: str, line: str) -> None:
        with self._lock:
            self.b.lines.setdefault(name, deque(maxlen=LINES_PER_STEP)).append(line)
            self._pub("step_log", target=name, line=line)

    def step_progress(self, name: str, text: str) -> None:
        now = time.monotonic()
        if now - self._progress_at.get(name, 0.0) < PROGRESS_EVERY_S:
            return
        self._progress_at[name] = now
        with self._lock:
            self.b.steps.setdefault(name, {})["progress"] = text
            self._pub("step_progress", target=name, text=text)

    def step_finished(self, name: str, o: Outcome) -> None:
        info = {
            "status": o.status,
            "reason": o.reason,
            "duration_s": round(o.duration_s, 3),
            "stats": o.stats,
            "error": o.error,
            "tail": o.tail[-15:] if o.status == "failed" else [],
        }
        with self._lock:
            started = self.b.steps.get(name, {}).get("started")
            self.b.steps[name] = {**info, "started": started}
            self._pub("step_finished", target=name, **info)

    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None:
        with self._lock:
            self.b.status = status
            self.b.ended = time.time()
            counts = count(outcomes)
            self._pub("build_finished", status=status, counts=counts, run_id=self.b.run_id)

    def message(self, text: str) -> None:
        with self._lock:
            self.b.messages.append(text)
            self._pub("message", text=text)


class BuildRunner:
    """Starts, stops and remembers the UI's builds (the running one and the last one)."""

    def __init__(self, hub: EventHub, project_dir: str, env_name: str | None, lock_holder: Any):
        self.hub = hub
        self.project_dir = project_dir
        self.env_name = env_name
        self.lock_holder = lock_holder  # () -> who holds the project lock, or None
        self.current: UIBuild | None = None
        self._lock = threading.Lock()
        self._count = 0

    def start(self, targets: list[str], dry_run: bool, force: bool) -> UIBuild:
        """Start a build; raises :class:`Busy` when one runs, or ConfigError for bad targets."""
        from eltmake.graph import check_names
        from eltmake.project import load_project

        project = load_project(self.project_dir, env_name=self.env_name)
        check_names(project, targets)
        with self._lock:
            if self.current is not None and self.current.active:
                raise Busy(
                    f"build {self.current.id} is still running; wait for it, or stop it first"
                )
            holder = None if dry_run else self.lock_holder()
            if holder and not holder.get("this_ui"):
                what = holder.get("command") or "another eltmake"
                raise Busy(
                    f"the project is busy: pid {holder['pid']} ({what}) is building it; "
                    "try again when it has finished"
                )
            self._count += 1
            b = UIBuild(self._count, list(targets), dry_run, force)
            self.current = b
        b.thread = threading.Thread(target=self._run, args=(b,), name=f"ui-build-{b.id}")
        b.thread.daemon = True
        b.thread.start()
        return b

    def _run(self, b: UIBuild) -> None:
        from eltmake.build import BuildRequest, run_build
        from eltmake.errors import EltmakeError

        req = BuildRequest(
            project_dir=self.project_dir,
            env_name=self.env_name,
            targets=b.targets,
            dry_run=b.dry_run,
            force=b.targets if b.force and b.targets else [],
            force_all=b.force and not b.targets,
            no_wait=True,
        )
        self.hub.publish(
            "build_queued",
            {"build": b.id, "targets": b.targets, "dry_run": b.dry_run, "force": b.force},
        )
        reporter = UIReporter(self.hub, b)
        try:
            run_build(req, reporter=reporter, started=lambda s: setattr(b, "sched", s))
        except EltmakeError as e:
            b.error = str(e)
        except Exception as e:  # a bug: say so on the page, keep serving
            b.error = f"internal error: {type(e).__name__}: {e} (a bug in eltmake or a plugin)"
        with b.lock:
            if b.error or b.active:
                b.status = "error" if b.error else "interrupted"
                b.ended = time.time()
                self.hub.publish(
                    "build_finished",
                    {"build": b.id, "status": b.status, "error": b.error, "counts": {}},
                )

    def snapshot(self) -> tuple[dict[str, Any] | None, int]:
        """The current build as the build page shows it, and the id of the last event in it."""
        b = self.current
        if b is None:
            return None, self.hub.last_id
        with b.lock:
            return b.snapshot(), self.hub.last_id

    def stop(self, wait: float = 30.0) -> bool:
        """Interrupt the running build as Ctrl-C would (its steps' processes are terminated,
        nothing unfinished is recorded); True when one was running."""
        b = self.current
        if b is None or not b.active or b.thread is None:
            return False
        deadline = time.monotonic() + wait
        # interrupt() may race with a step being started: call it until the build returns.
        while b.thread.is_alive() and time.monotonic() < deadline:
            if b.sched is not None:
                b.sched.interrupt()
            b.thread.join(0.2)
        return True

    def stop_async(self) -> bool:
        b = self.current
        if b is None or not b.active:
            return False
        threading.Thread(target=self.stop, name="ui-stop", daemon=True).start()
        return True

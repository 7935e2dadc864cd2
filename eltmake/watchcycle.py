"""One build cycle of watch mode: its state, the reporter that knows an edit superseded it, and
its summary line."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eltmake.output import Reporter

if TYPE_CHECKING:
    from eltmake.graph import Graph
    from eltmake.project import Project
    from eltmake.scheduler import BuildOptions, Scheduler
    from eltmake.step import Outcome, Step
    from eltmake.watchpaths import WatchMap

SHOW_NAMES = 8  # names listed per category in a cycle's summary line


@dataclass
class Cycle:
    number: int
    changed: list[str]
    project: Project
    graph: Graph
    order: list[str]
    opts: BuildOptions
    install: bool
    steps: dict[str, Step] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sched: Scheduler | None = None
    stopping: bool = False
    superseded: bool = False
    status: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    error: str = ""
    new_map: WatchMap | None = None
    thread: threading.Thread | None = None
    reporter: CycleReporter | None = None

    running: set[str] = field(default_factory=set)  # kept by the cycle's reporter


class CycleReporter(Reporter):
    """The build's reporter, told when an edit superseded the build: its summary then says
    ``superseded`` instead of a failure made of cancelled steps."""

    def __init__(self, inner: Reporter, cycle: Cycle):
        self.inner = inner
        self.cycle = cycle
        self.open = False

    def build_started(self, targets, dry_run) -> None:
        self.open = True
        self.inner.build_started(targets, dry_run)

    def step_started(self, name, reason) -> None:
        with self.cycle.lock:
            self.cycle.running.add(name)
        self.inner.step_started(name, reason)

    def step_log(self, name, line) -> None:
        self.inner.step_log(name, line)

    def step_progress(self, name, text) -> None:
        self.inner.step_progress(name, text)

    def step_finished(self, name, outcome) -> None:
        with self.cycle.lock:
            self.cycle.running.discard(name)
        self.inner.step_finished(name, outcome)

    def build_finished(self, status, outcomes) -> None:
        self.open = False
        if self.cycle.superseded and status != "interrupted":
            status = "superseded"
        self.inner.build_finished(status, outcomes)

    def message(self, text) -> None:
        self.inner.message(text)


def cycle_summary(cycle: Cycle) -> tuple[str, str, dict[str, Any]]:
    """The cycle's one summary line, its style, and its ``watch_result`` event."""
    steps = {n for n in cycle.order if cycle.project.targets[n].kind is not None}
    by: dict[str, list[str]] = {}
    for n in cycle.order:
        o = cycle.outcomes.get(n)
        if o is not None and n in steps:
            by.setdefault(o.status, []).append(n)
    status = "superseded" if cycle.superseded and cycle.status != "ok" else cycle.status
    if cycle.error:
        status = "error"
    elapsed = time.monotonic() - cycle.started
    bits = []
    for key, word in (
        ("failed", "failed"),
        ("built", "re-ran"),
        ("cancelled", "cancelled"),
        ("upstream_failed", "not run (upstream failed)"),
        ("skipped", "skipped"),
    ):
        names = by.get(key, [])
        if names:
            shown = ", ".join(names[:SHOW_NAMES])
            if len(names) > SHOW_NAMES:
                shown += f" and {len(names) - SHOW_NAMES} more"
            bits.append(f"{word} {shown}")
    verdict = {"ok": "ok", "failed": "FAILED", "superseded": "superseded by a new edit"}.get(
        status, status
    )
    line = f"watch: cycle {cycle.number} {verdict} in {elapsed:.2f}s"
    if bits:
        line += ": " + "; ".join(bits)
    style = {"ok": "ok", "superseded": "warn"}.get(status, "error")
    return (
        line,
        style,
        {
            "event": "watch_result",
            "cycle": cycle.number,
            "status": status,
            "changed": cycle.changed,
            "ran": by.get("built", []),
            "skipped": by.get("skipped", []),
            "failed": by.get("failed", []),
            "cancelled": by.get("cancelled", []),
            "error": cycle.error or None,
            "duration_s": round(elapsed, 3),
        },
    )


def next_due(steps: dict[str, Step], records: dict[str, dict[str, Any]]) -> float | None:
    """When the next duration ``freshness`` (6h…) of these steps expires: the watch then builds
    again by itself. Freshness "always" held when the watch started, and holds again for what an
    edit affects."""
    from eltmake.project import parse_freshness

    due = [
        rec.get("time", 0) + (parse_freshness(step.freshness) or 0)
        for name, step in steps.items()
        if step.freshness not in (None, "always", "never") and (rec := records.get(name))
    ]
    return min(due, default=None)

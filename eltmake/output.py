"""What a build shows: a rich live display on a terminal, plain lines elsewhere, ``--json`` events.

With ``--json`` the events go to stdout, one object per line, and the human display to stderr.
The event format is a contract CI tools read; extend it, never change a field.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake.step import Outcome

LOG_TAIL = 15  # lines of a failed step's output to show


class Reporter:
    """The events of a build; every method is called on the scheduler's thread except the logs."""

    def build_started(self, targets: list[str], dry_run: bool) -> None: ...
    def step_started(self, name: str, reason: str) -> None: ...
    def step_log(self, name: str, line: str) -> None: ...
    def step_progress(self, name: str, text: str) -> None: ...
    def step_finished(self, name: str, outcome: Outcome) -> None: ...
    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None: ...
    def message(self, text: str) -> None: ...


def count(outcomes: dict[str, Any]) -> dict[str, int]:
    """How many targets ended in each status."""
    counts: dict[str, int] = {}
    for o in outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


def summary(status: str, outcomes: dict[str, Any], elapsed: float) -> str:
    counts = count(outcomes)
    order = ["built", "would_run", "skipped", "failed", "upstream_failed", "cancelled"]
    words = {"would_run": "would run", "upstream_failed": "upstream failed"}
    parts = [f"{counts[s]} {words.get(s, s)}" for s in order if counts.get(s)]
    verdict = {"ok": "done", "failed": "FAILED", "interrupted": "interrupted"}.get(status, status)
    return f"{verdict}: {', '.join(parts) or 'nothing to do'} in {elapsed:.2f}s"


LABELS = {"would_run": "would run", "upstream_failed": "upstream failed"}


def _describe(o: Outcome) -> tuple[str, str, str]:
    """(label, "  1.20s  1,000 records" for a built step, the reason for the others)."""
    label = LABELS.get(o.status, o.status)
    if o.status == "built":
        st = _fmt_stats(o.stats)
        return label, f"  {o.duration_s:.2f}s" + (f"  {st}" if st else ""), ""
    return label, "", o.reason


def _fmt_stats(stats: dict[str, Any]) -> str:
    bits = []
    for k, v in stats.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            word = k.replace("_", " ")
            if v == 1 and word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]  # "1 output line", "1 record"; "1 success", "1 pass"
            bits.append(f"{v:,} {word}" if isinstance(v, int) else f"{v:,.1f} {word}")
    return ", ".join(bits[:4])


class PlainReporter(Reporter):
    """One line per event, for CI logs and pipes. Skipped steps are counted, not listed (like
    Make), unless ``verbose``; ``-n`` lists every decision."""

    def __init__(self, stream: IO[str], verbose: bool = False):
        self.out = stream
        self.verbose = verbose
        self.t0 = time.time()
        self._lock = threading.Lock()
        self.dry_run = False
        self.logs: dict[str, list[str]] = {}

    def _w(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        self._w(text)

    def build_started(self, targets: list[str], dry_run: bool) -> None:
        self.t0 = time.time()
        self.dry_run = dry_run
        if dry_run:
            self._w(f"dry run: {len(targets)} targets; nothing is executed")

    def step_started(self, name: str, reason: str) -> None:
        self._w(f"run      {name}  ({reason})")

    def step_log(self, name: str, line: str) -> None:
        self.logs.setdefault(name, []).append(line)
        if self.verbose:
            self._w(f"  {name} | {line}")

    def step_finished(self, name: str, o: Outcome) -> None:
        if o.status == "skipped" and not (self.verbose or self.dry_run):
            return
        label, timing, reason = _describe(o)
        self._w(f"{label:<8} {name}{timing}" + (f"  ({reason})" if reason else ""))
        if o.error:
            self._w(f"  {o.error}")
        for line in o.warnings:
            self._w(f"  {name} | warning: {line}")
        for line in self.tail(name, o):
            self._w(f"  {name} | {line}")

    def tail(self, name: str, o: Outcome) -> list[str]:
        """The last lines of a failed step's output: the plugin's own pick, or what it logged."""
        if o.status != "failed":
            return []
        return (o.tail or self.logs.get(name, []))[-LOG_TAIL:]

    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None:
        self._w(summary(status, outcomes, time.time() - self.t0))


class RichReporter(PlainReporter):
    """A live panel of running steps (spinner, elapsed, progress) above the finished lines."""

    def __init__(self, stream: IO[str], verbose: bool = False):
        super().__init__(stream, verbose)
        from rich.console import Console

        self.console = Console(file=stream, highlight=False)
        self.running: dict[str, tuple[float, str]] = {}
        self.live = None

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        now = time.time()
        for name, (t0, text) in list(self.running.items()):
            table.add_row(
                Spinner("dots", style="cyan"), name, f"{now - t0:5.1f}s", text, style=None
            )
        return table

    def _w(self, text: str) -> None:
        with self._lock:
            self.console.print(text, markup=False, highlight=False)

    def build_started(self, targets: list[str], dry_run: bool) -> None:
        super().build_started(targets, dry_run)
        from rich.live import Live

        self.live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=8,
            transient=True,
            get_renderable=self._render,
        )
        self.live.start()

    def step_started(self, name: str, reason: str) -> None:
        self.running[name] = (time.time(), reason)
        with self._lock:
            self.console.print(
                f"[cyan]run[/]      [bold]{name}[/]  [dim]({reason})[/]", highlight=False
            )

    def step_progress(self, name: str, text: str) -> None:
        if name in self.running:
            self.running[name] = (self.running[name][0], text)

    def step_log(self, name: str, line: str) -> None:
        super().step_log(name, line)
        if name in self.running and line.strip():  # the last line is the step's live status
            self.running[name] = (self.running[name][0], line.strip()[:100])

    def step_finished(self, name: str, o: Outcome) -> None:
        self.running.pop(name, None)
        if o.status == "skipped" and not (self.verbose or self.dry_run):
            return
        style = {
            "built": "green",
            "skipped": "dim",
            "failed": "bold red",
            "upstream_failed": "red",
            "cancelled": "yellow",
            "would_run": "cyan",
        }.get(o.status, "")
        from rich.markup import escape

        label, timing, reason = _describe(o)
        extra = timing + (f"  [dim]({escape(reason)})[/]" if reason else "")
        with self._lock:
            self.console.print(
                f"[{style}]{label:<8}[/] [bold]{escape(name)}[/]{extra}", highlight=False
            )
            if o.error:
                self.console.print(f"  [red]{escape(o.error)}[/]", highlight=False)
            for line in o.warnings:
                self.console.print(f"  [yellow]{escape(name)} | warning: {escape(line)}[/]")
            for line in self.tail(name, o):
                self.console.print(f"  [dim]{escape(name)} |[/] {escape(line)}", highlight=False)

    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None:
        if self.live is not None:
            self.live.stop()
        style = {"ok": "green", "failed": "bold red"}.get(status, "yellow")
        with self._lock:
            self.console.print(f"[{style}]{summary(status, outcomes, time.time() - self.t0)}[/]")


class JsonReporter(Reporter):
    """``--json``: one event object per line on stdout, and a human display (on stderr) beside it."""

    def __init__(self, stream: IO[str], human: Reporter):
        self.out = stream
        self.human = human
        self._lock = threading.Lock()
        self.t0 = time.time()

    def _event(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, default=str)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        self.human.message(text)

    def build_started(self, targets: list[str], dry_run: bool) -> None:
        self.t0 = time.time()
        self._event({"event": "build_started", "targets": targets, "dry_run": dry_run})
        self.human.build_started(targets, dry_run)

    def step_started(self, name: str, reason: str) -> None:
        self._event({"event": "step_started", "target": name, "reason": reason})
        self.human.step_started(name, reason)

    def step_log(self, name: str, line: str) -> None:
        self.human.step_log(name, line)

    def step_progress(self, name: str, text: str) -> None:
        self.human.step_progress(name, text)

    def step_finished(self, name: str, o: Outcome) -> None:
        ev: dict[str, Any] = {
            "event": "step",
            "target": name,
            "status": o.status,
            "reason": o.reason,
            "duration_s": round(o.duration_s, 3),
        }
        if o.stats:
            ev["stats"] = o.stats
        if o.error:
            ev["error"] = o.error
        if o.warnings:
            ev["warnings"] = o.warnings
        self._event(ev)
        self.human.step_finished(name, o)

    def build_finished(self, status: str, outcomes: dict[str, Outcome]) -> None:
        self._event(
            {
                "event": "build",
                "status": status,
                "counts": count(outcomes),
                "duration_s": round(time.time() - self.t0, 3),
            }
        )
        self.human.build_finished(status, outcomes)


class WatchDisplay:
    """The watch's own lines (cycle summaries, errors, what changed): coloured on a terminal, plain
    elsewhere; with ``--json`` they go to stderr and the watch's events to stdout."""

    STYLES = {"ok": "32", "warn": "33", "error": "1;31", "dim": "2", "bold": "1"}

    def __init__(self, json_events: bool, plain: bool):
        self.json = json_events
        self.out: IO[str] = sys.stderr if json_events else sys.stdout
        self.tty = not plain and self.out.isatty()
        self._lock = threading.Lock()

    def say(self, text: str, style: str = "") -> None:
        code = self.STYLES.get(style)
        with self._lock:
            self.out.write(f"\033[{code}m{text}\033[0m\n" if self.tty and code else text + "\n")
            self.out.flush()

    def event(self, obj: dict[str, Any]) -> None:
        if self.json:
            with self._lock:
                sys.stdout.write(json.dumps(obj, default=str) + "\n")
                sys.stdout.flush()

    def clear(self) -> None:
        """Clear the terminal before a cycle (``--clear``); nothing in a log."""
        if self.tty:
            with self._lock:
                self.out.write("\033[2J\033[H")


def progress_line(text: str) -> None:
    """A line of progress outside the build's display (installing a tool): on stderr, so that
    stdout holds only results and --json events."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def make_reporter(json_events: bool, verbose: bool = False, plain: bool = False) -> Reporter:
    human_stream = sys.stderr if json_events else sys.stdout
    if not plain and human_stream.isatty():
        human: Reporter = RichReporter(human_stream, verbose)
    else:
        human = PlainReporter(human_stream, verbose)
    return JsonReporter(sys.stdout, human) if json_events else human

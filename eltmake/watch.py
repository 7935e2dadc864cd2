"""``eltmake watch``: build once, then rebuild what each edit affects.

How it is put together, and why:

* The cache decides what re-runs. A cycle is an ordinary build of the selected targets; steps the
  edit did not touch are skipped by their keys, and early cutoff stops a re-run whose output did
  not change. The watch only decides *when* to build and *what to cancel*.
* The main thread keeps the file events and Ctrl-C; a build runs in a thread of its own, one at a
  time. An edit that arrives during a build cancels the running steps it affects (their process
  groups are terminated) and queues a new cycle; unaffected running steps may finish, and the
  cache keeps their results.
* watchfiles' Rust notifier watches the project root (not recursively) and each top-level folder
  that may hold inputs (recursively), so the tool environments under ``.eltmake/`` (thousands of
  folders) cost no inotify watch. Every event goes through
  :meth:`eltmake.watchpaths.WatchMap.classify`, which ignores what a build writes itself
  (declared outputs, ``.eltmake/``, the folders recipes say their steps write), editor droppings
  and what ``.gitignore`` ignores, so the watch never triggers itself.
* A broken project file, a failing step or a plugin error never ends the watch: the error is
  shown, the last good graph is kept, and the next edit tries again. Only Ctrl-C ends it (130).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eltmake.build import BuildRequest, raise_interrupt
from eltmake.errors import ConfigError, EltmakeError
from eltmake.fswatch import NOTIFY_STEP_MS, Notifiers
from eltmake.output import WatchDisplay
from eltmake.plugins import forget_project_modules
from eltmake.watchcycle import SHOW_NAMES, Cycle, CycleReporter, cycle_summary, next_due
from eltmake.watchpaths import ADDED, DELETED, IGNORED_DIRS, GitIgnore, WatchMap, build_map, norm

if TYPE_CHECKING:
    from eltmake.graph import Graph
    from eltmake.project import Project
    from eltmake.scheduler import BuildOptions

EXIT_INTERRUPTED = 130


@dataclass
class WatchOptions:
    """What ``eltmake watch`` is asked: the build of each cycle, and the watch's own settings."""

    build: BuildRequest
    debounce: float = 0.05
    clear: bool = False


# --- the watch -----------------------------------------------------------------------------------


class Watch:
    def __init__(self, opts: WatchOptions):
        from eltmake.project import find_root

        self.opts = opts
        self.req = opts.build
        self.root = find_root(self.req.project_dir)
        self.targets = list(self.req.targets)
        self.q: queue.Queue = queue.Queue()
        self.display = WatchDisplay(self.req.json, self.req.plain)
        self.map = WatchMap(root=self.root)
        self.map.gitignore = GitIgnore(self.root)
        self.notifiers = Notifiers(self.root, self.q)
        self.project: Project | None = None
        self.graph: Graph | None = None
        self.order: list[str] = []
        self.build_opts: BuildOptions | None = None
        self.steps: dict = {}  # made once per load, shared by the cycles of that load
        self.broken: str = ""  # the last load error, while the project file stays broken
        self.reload_needed = True
        self.install_needed = True
        self.first = True
        self.cycle: Cycle | None = None
        self.cycles = 0
        self.due: float | None = None  # when a duration freshness expires next
        self.pending: dict[str, int] = {}  # relevant changes not yet built: path -> change
        self.pending_steps: set[str] = set()  # the steps that read them
        self.cache = None
        self.state = None

    # --- output ----------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        """A line of the watch's own; through the build's display while a build shows (so it is
        not drawn across its live panel)."""
        cycle = self.cycle
        if cycle is not None and cycle.reporter is not None and cycle.reporter.open:
            cycle.reporter.message(text)
            return
        self.display.say(text, style)

    def event(self, obj: dict) -> None:
        self.display.event(obj)

    # --- the main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        from eltmake.project import PROJECT_FILE

        if not (self.root / PROJECT_FILE).exists():
            raise ConfigError(
                f"no {PROJECT_FILE} in {self.root} or any folder above it; run `eltmake init` to "
                "create a project here, or pass -C DIR"
            )
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
        try:
            self._open()
            self.notifiers.sync(self.map.watched_top_dirs())
            self._reload()
            self._announce()
            self._start_cycle([])
            while True:
                self._step()
        except KeyboardInterrupt:
            self._interrupt()
            self.say("watch: interrupted; stopped", "warn")
            self.event({"event": "watch_stopped", "status": "interrupted"})
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.notifiers.close()
            if self.cache is not None:
                self.cache.close()
            if self.state is not None:
                self.state.close()

    def _open(self) -> None:
        """Open the cache and the store. A target named on the command line that the project
        lacks is a usage error (exit 2), unlike a project file that is broken mid-edit, which
        the watch waits out (the first cycle shows it)."""
        from eltmake.build import open_stores
        from eltmake.graph import check_names
        from eltmake.project import load_project

        try:
            project = load_project(self.root, env_name=self.req.env_name)
        except ConfigError:
            from eltmake.cache import Cache
            from eltmake.state import StateStore  # no project: no other store is known

            state_dir = self.root / ".eltmake"
            state_dir.mkdir(parents=True, exist_ok=True)
            self.cache, self.state = Cache(state_dir, self.say), StateStore(state_dir / "state.db")
            return
        check_names(project, list(self.targets) + list(self.req.force))
        self.cache, self.state = open_stores(project, self.say)

    def _announce(self) -> None:
        dirs = sorted(self.notifiers.active)
        where = ", ".join(d + "/" for d in dirs if d) or "the project folder"
        targets = ", ".join(self.order[-SHOW_NAMES:]) if self.order else "(none yet)"
        self.say(
            f"watch: {self.root}: {len(self.order)} targets ({targets}); watching . and {where}"
        )
        self.event(
            {
                "event": "watch_started",
                "root": str(self.root),
                "targets": self.order,
                "watching": ["."] + [d for d in dirs if d],
            }
        )

    def _step(self) -> None:
        """Wait for the next thing to happen (file events or a finished build) and act on it."""
        try:
            kind, payload = self.q.get(timeout=0.5)
        except queue.Empty:
            if self.due is not None and self.cycle is None and time.time() >= self.due:
                self.due = None
                self.say("watch: a target's freshness expired", "bold")
                self._start_cycle([])
            return
        if kind == "done":
            self._finished(payload)
        elif kind == "notify_error":
            # Not retried (it would fail again in a loop); edits there go unseen until restart.
            self.say(
                f"watch: stopped watching {payload}; restart the watch to see edits there", "warn"
            )
        elif kind == "fs":
            relevant = self._relevant(payload)
            if not relevant:
                return
            self._settle(relevant)
            self._changed(relevant)

    def _relevant(self, changes: set[tuple[int, str]]) -> dict[str, tuple[int, str, set[str]]]:
        out: dict[str, tuple[int, str, set[str]]] = {}
        new_dirs = False
        for change, path in changes:
            rel = os.path.relpath(path, self.root)
            if "/" not in rel and change in (ADDED, DELETED) and rel not in IGNORED_DIRS:
                new_dirs = True
                if change == DELETED:
                    self.notifiers.drop(rel)
            what = self.map.classify(change, path)
            if what is not None:
                out[norm(rel)] = (change, what[0], what[1])
        if new_dirs:
            self.notifiers.sync(self.map.watched_top_dirs())
        return out

    def _settle(self, relevant: dict[str, tuple[int, str, set[str]]]) -> None:
        """Debounce: wait until no relevant edit came for ``--debounce`` seconds (the notifier
        already waited ``NOTIFY_STEP_MS`` of quiet), so a save of several files is one cycle."""
        wait = max(0.0, self.opts.debounce - NOTIFY_STEP_MS / 1000)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, payload = self.q.get(timeout=left)
            except queue.Empty:
                return
            if kind == "done":
                self._finished(payload, start_next=False)
            elif kind == "fs":
                more = self._relevant(payload)
                if more:
                    relevant.update(more)
                    deadline = time.monotonic() + wait

    def _changed(self, relevant: dict[str, tuple[int, str, set[str]]]) -> None:
        for rel, (change, _, names) in relevant.items():
            self.pending[rel] = change
            self.pending_steps |= names
        config = any(kind == "config" for _, kind, _ in relevant.values())
        if config:
            self.reload_needed = True
        cycle = self.cycle
        if cycle is None:
            self._start_cycle(self._pending_list())
            return
        # A build is running: cancel the running steps this edit affects, let the others finish,
        # and build again when it ends.
        steps: set[str] = set()
        for _, _, names in relevant.values():
            steps |= names
        if config:
            old_project = cycle.project
            if self._reload():
                with cycle.lock:
                    running = sorted(cycle.running)
                sched_steps = cycle.sched.steps if cycle.sched is not None else {}
                try:
                    from eltmake.decide import definition_digest
                    from eltmake.scheduler import make_steps

                    new_steps = make_steps(self.project, [n for n in running if n in self.order])
                    before = {
                        n: definition_digest(old_project, sched_steps[n])
                        for n in running
                        if n in sched_steps
                    }
                    after = {
                        n: definition_digest(self.project, new_steps[n])
                        for n in running
                        if n in new_steps
                    }
                except Exception:
                    before, after = {}, {n: "?" for n in running}
                steps |= {n for n in running if before.get(n) != after.get(n)}
        with cycle.lock:
            running = set(cycle.running)
        hit = self.map.affected(steps) & running if steps else set()
        if hit:
            cycle.superseded = True
            names = ", ".join(sorted(hit))
            self.say(
                f"watch: {self._pending_text()} changed during the build: cancelling {names}",
                "warn",
            )
            self.event({"event": "watch_cancel", "cycle": cycle.number, "targets": sorted(hit)})
            sched = cycle.sched
            if sched is not None:
                sched.cancel(hit)

    def _pending_list(self) -> list[str]:
        return sorted(self.pending)

    def _pending_text(self) -> str:
        names = self._pending_list()
        text = ", ".join(names[:SHOW_NAMES])
        return text + (f" and {len(names) - SHOW_NAMES} more" if len(names) > SHOW_NAMES else "")

    # --- loading ---------------------------------------------------------------------------------

    def _reload(self) -> bool:
        """Load the project file again; on an error keep the last good graph and say why."""
        from eltmake.graph import selection
        from eltmake.project import load_project
        from eltmake.scheduler import make_steps

        self.reload_needed = False
        if self.project is not None:
            forget_project_modules(self.root, self.project.plugins)
        try:
            project = load_project(self.root, env_name=self.req.env_name)
            graph, _, order = selection(project, self.targets, self.req.only)
            opts = self.req.options(project)
            steps = make_steps(project, order)
            wmap = build_map(project, graph, order, steps)
        except Exception as e:
            self._load_failed(e)
            return False
        if not self.first:
            opts.force, opts.force_all = set(), False  # -B and --force: the first build only
        was_broken = bool(self.broken)
        self.project, self.graph, self.order, self.build_opts = project, graph, order, opts
        self.map, self.steps = wmap, steps
        self.broken = ""
        self.install_needed = True
        self.notifiers.sync(wmap.watched_top_dirs())
        if was_broken:
            self.say("watch: the project loads again", "ok")
        return True

    def _load_failed(self, e: Exception) -> None:
        if isinstance(e, EltmakeError):
            msg = str(e)
        else:
            msg = (
                f"internal error while loading the project: {type(e).__name__}: {e} "
                "(a bug in eltmake or a plugin; --debug shows the traceback)"
            )
            if self.req.debug:
                import traceback

                traceback.print_exc(file=sys.stderr)
        self.broken = msg
        keep = "keeping the last good graph" if self.project else "nothing to build until it loads"
        self.say(f"watch: error: {msg}", "error")
        self.say(f"watch: {keep}; waiting for the next edit", "warn")
        self.event({"event": "watch_error", "error": msg})

    # --- cycles ----------------------------------------------------------------------------------

    def _start_cycle(self, changed: list[str]) -> None:
        if self.reload_needed or self.broken:
            self._reload()  # while broken, every edit tries again (and shows the error again)
        if self.broken or self.project is None or self.graph is None or self.build_opts is None:
            return  # what changed stays pending: the first build after the fix names it
        first = self.map.affected(self.pending_steps) & set(self.order)
        self.pending.clear()
        self.pending_steps.clear()
        self.cycles += 1
        if self.opts.clear and not self.first:
            self.display.clear()
        if not self.first:
            shown = ", ".join(changed[:SHOW_NAMES]) + (
                f" and {len(changed) - SHOW_NAMES} more" if len(changed) > SHOW_NAMES else ""
            )
            self.say(f"watch: changed: {shown}", "bold")
        self.event({"event": "watch_cycle", "cycle": self.cycles, "changed": changed})
        # After the first cycle, freshness "always" holds for what the edit affects only.
        edited = None if self.first else first
        opts = dataclasses.replace(self.build_opts, first=first, edited=edited, warm=True)
        cycle = Cycle(
            self.cycles,
            changed,
            self.project,
            self.graph,
            list(self.order),
            opts,
            install=self.install_needed,
            steps=self.steps,
        )
        self.install_needed = False
        self.first = False
        if self.build_opts.force or self.build_opts.force_all:
            self.build_opts.force, self.build_opts.force_all = set(), False
        self.cycle = cycle
        cycle.thread = threading.Thread(
            target=self._build, args=(cycle,), name=f"build-{cycle.number}", daemon=True
        )
        cycle.thread.start()

    def _build(self, cycle: Cycle) -> None:
        """The build thread: one ordinary build of the selected targets."""
        from eltmake.build import decider_for, install_tools
        from eltmake.lock import ProjectLock
        from eltmake.output import make_reporter, progress_line
        from eltmake.scheduler import Scheduler

        req = self.req
        reporter = CycleReporter(make_reporter(req.json, req.verbose, req.plain), cycle)
        cycle.reporter = reporter
        lock = ProjectLock(cycle.project.state_dir)
        sched = None
        try:
            lock.acquire(wait=True, notify=reporter.message)
            steps = cycle.steps
            blocked = install_tools(cycle.project, steps, progress_line) if cycle.install else {}
            sched = Scheduler(
                cycle.project,
                cycle.graph,
                cycle.order,
                cycle.opts,
                reporter,
                decider_for(cycle.project, cycle.opts, self.cache, self.state),
                self.state,
                steps=steps,
                blocked=blocked,
            )
            with cycle.lock:
                if cycle.stopping:
                    return
                cycle.sched = sched
            cycle.status = sched.run()
            cycle.outcomes = sched.outcomes
            try:
                cycle.new_map = build_map(cycle.project, cycle.graph, cycle.order, sched.steps)
            except Exception:
                cycle.new_map = None  # keep the map we have; the next load makes a new one
        except Exception as e:
            cycle.status = "failed"
            if isinstance(e, EltmakeError):
                cycle.error = str(e)
            else:
                cycle.error = (
                    f"internal error: {type(e).__name__}: {e} (a bug in eltmake or a plugin)"
                )
                if req.debug:
                    import traceback

                    traceback.print_exc(file=sys.stderr)
            if sched is not None:
                cycle.outcomes = sched.outcomes
                if sched.run_id is not None and self.state is not None:
                    self.state.finish_run(sched.run_id, "failed")
            if reporter.open:
                reporter.build_finished("failed", cycle.outcomes)
        finally:
            lock.release()
            self.q.put(("done", cycle))

    def _finished(self, cycle: Cycle, start_next: bool = True) -> None:
        if cycle is not self.cycle:
            return
        self.cycle = None
        if cycle.new_map is not None and cycle.project is self.project:
            self.map = cycle.new_map
            self.notifiers.sync(self.map.watched_top_dirs())
        self._summarize(cycle)
        self.due = self._next_due()
        if self.pending or self.reload_needed:
            if start_next:
                self._start_cycle(self._pending_list())
            return
        if start_next:
            self.say("watch: waiting for changes (Ctrl-C to stop)", "dim")

    def _next_due(self) -> float | None:
        if self.project is None or self.state is None:
            return None
        try:
            records = self.state.records(self.project.env_name or "")
        except Exception:  # a store that cannot be read now: the next cycle tries again
            return None
        return next_due(self.steps, records)

    def _summarize(self, cycle: Cycle) -> None:
        line, style, event = cycle_summary(cycle)
        if cycle.error:
            self.say(f"watch: error: {cycle.error}", "error")
        self.say(line, style)
        self.event(event)

    def _interrupt(self) -> None:
        """Ctrl-C: stop the build's process groups and wait for its thread, briefly."""
        cycle = self.cycle
        if cycle is None:
            return
        with cycle.lock:
            cycle.stopping = True
            sched = cycle.sched
        if sched is None or cycle.thread is None:
            return
        deadline = time.monotonic() + 10
        while cycle.thread.is_alive() and time.monotonic() < deadline:
            sched.interrupt()  # again: a step may have been starting at the first call
            cycle.thread.join(0.1)
        sched.executor.cancel_all(grace=0.0)


def run_watch(opts: WatchOptions) -> int:
    """``eltmake watch``: see the module docstring."""
    return Watch(opts).run()

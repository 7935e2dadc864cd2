"""The scheduler: a ready queue over the topological order, locks, cancellation.

Decisions (skip or run, and why) are asked of :mod:`eltmake.decide` on the main thread as soon as
a target's upstream steps are done, because a key needs the upstream *output fingerprints*. Steps
that must run go to an executor (:mod:`eltmake.executors`: a local thread pool by default), at
most ``-j`` at a time and never two that share a lock; an interrupt stops them all and records
nothing for unfinished steps.
"""

from __future__ import annotations

import heapq
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eltmake.decide import Decider, Decision
from eltmake.errors import Cancelled, ConfigError, StepError
from eltmake.executors import LocalExecutor, StepRun
from eltmake.redact import Redactor
from eltmake.step import BuildInfo, Outcome, Step, path_lock

if TYPE_CHECKING:
    from eltmake.executors import Executor
    from eltmake.graph import Graph
    from eltmake.output import Reporter
    from eltmake.project import Project
    from eltmake.store import Store


@dataclass
class BuildOptions:
    jobs: int = 1
    keep_going: bool = False
    dry_run: bool = False
    force: set[str] = field(default_factory=set)  # target names
    force_all: bool = False
    full_refresh: bool = False
    debug: bool = False
    command: str = "build"
    # Decide and start these before the other targets once they are ready (watch mode: the
    # targets an edit touched), so they do not wait behind many up-to-date decisions.
    first: set[str] = field(default_factory=set)
    # The targets the build was asked for (the defaults when none): what the history shows.
    requested: list[str] = field(default_factory=list)
    # A watch cycle after the first: the targets its edits affect (freshness "always" holds
    # only for them); None for an ordinary build.
    edited: set[str] | None = None
    # The build is a watch cycle: recipes may keep their tools warm between runs.
    warm: bool = False


@dataclass
class _Running:
    name: str
    run: StepRun
    decision: Decision
    started: float


def make_steps(project: Project, names: list[str]) -> dict[str, Step]:
    """A Step per target with a recipe (aggregates have none), with the target's ``locks``."""
    import dataclasses

    steps: dict[str, Step] = {}
    for name in names:
        target = project.targets[name]
        if target.kind is None:
            continue
        step = project.recipes[target.kind].make_step(project, target)
        extra = [path_lock(project, lock) for lock in target.config.get("locks", [])]
        if extra:
            locks = list(step.locks) + [lock for lock in extra if lock not in step.locks]
            step = dataclasses.replace(step, locks=locks)
        steps[name] = step
    return steps


class Scheduler:
    def __init__(
        self,
        project: Project,
        graph: Graph,
        order: list[str],
        opts: BuildOptions,
        reporter: Reporter,
        decider: Decider,
        state: Store | None,
        *,
        steps: dict[str, Step] | None = None,
        blocked: dict[str, str] | None = None,
        executor: Executor | None = None,
    ):
        self.project = project
        self.opts = opts
        self.reporter = reporter
        self.decider = decider
        self.state = state
        self.order = order
        first = opts.first
        self.index = {n: i - len(order) if n in first else i for i, n in enumerate(order)}
        selected = set(order)
        self.preds = {n: [p for p in graph.predecessors(n) if p in selected] for n in order}
        self.succs = {n: [s for s in graph.successors(n) if s in selected] for n in order}
        self.steps = steps if steps is not None else make_steps(project, order)
        self.blocked = blocked or {}  # step -> why it cannot run (its tool failed to install)
        self.executor: Executor = executor or LocalExecutor(project.state_dir)
        self.outcomes: dict[str, Outcome] = {}
        self.fingerprints: dict[str, str | None] = {}
        self.ran: set[str] = set()
        self.run_id: int | None = None
        self.build = BuildInfo(
            project, order, dry_run=opts.dry_run, full_refresh=opts.full_refresh, warm=opts.warm
        )
        self._running: dict[Future, _Running] = {}
        self._pending: dict[str, Decision] = {}
        self._masks: dict[str, Redactor] = {}  # steps with secrets to mask in what they show
        self._lock = threading.Lock()
        self._stop_reason: str | None = None  # set from any thread; read by the loop
        self._stopped_by: str | None = None  # the failure that stopped the running steps
        self.status = "ok"
        self.superseded = False  # cancel() was called: an edit in watch mode

    # --- public --------------------------------------------------------------------------------

    def run(self) -> str:
        """Build the selected targets; returns ``ok``, ``failed`` or ``interrupted``."""
        if self.state is not None and not self.opts.dry_run:
            asked = self.opts.requested or self.order
            self.run_id = self.state.start_run(self.opts.command, asked, self.project.env_name)
            self.build.run_id = self.run_id
        self.reporter.build_started(self.order, self.opts.dry_run)
        self._notify("eltmake_build_started", build=self.build)
        self.executor.start(max(1, self.opts.jobs))
        try:
            self._loop()
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.executor.cancel_all(grace=2.0)
            self.executor.close()
            for fut in list(self._running):
                self._finish(fut)
        except BaseException:  # a bug: still stop every child and close the run's record
            self.executor.cancel_all(grace=2.0)
            self.executor.close()
            if self.run_id is not None and self.state is not None:
                self.state.finish_run(self.run_id, "failed")
            raise
        finally:
            self.executor.close()
        if self._stop_reason == "interrupted":
            self.status = "interrupted"
        for name in self.order:
            if name not in self.outcomes:
                why = {
                    "interrupted": "interrupted",
                    "superseded": "not started: an edit superseded this build",
                }.get(
                    self.status,
                    "not started: the build stopped at the first failure (-k keeps going)",
                )
                self._emit(name, Outcome("cancelled", why))
        if self.status == "ok" and any(
            o.status in ("failed", "upstream_failed") for o in self.outcomes.values()
        ):
            self.status = "failed"
        if self.run_id is not None and self.state is not None:
            self.state.finish_run(self.run_id, self.status)
        self._notify("eltmake_build_finished", build=self.build, status=self.status)
        self.reporter.build_finished(self.status, self.outcomes)
        return self.status

    def cancel(self, names: set[str]) -> None:
        """Stop running steps (watch mode: an edit superseded them); they end as ``cancelled``."""
        self.superseded = True
        with self._lock:
            runs = [r.run for r in self._running.values() if r.name in names]
        for run in runs:
            self.executor.cancel(run, grace=1.0)

    def interrupt(self) -> None:
        """Stop the build from another thread (watch mode's Ctrl-C): start nothing more, stop
        what runs; :meth:`run` then returns ``interrupted``. Safe to call again until it returns,
        to catch a step that was being started at the first call. Only the scheduler's own
        thread changes :attr:`status`; this sets a flag it reads."""
        self._stop_reason = "interrupted"
        self.executor.cancel_all(grace=2.0)

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        waiting = {n: len(self.preds[n]) for n in self.order}
        ready = [(self.index[n], n) for n in self.order if waiting[n] == 0]
        heapq.heapify(ready)
        runq: list[tuple[int, str, str]] = []
        self._waiting = waiting
        self._ready = ready
        stopped = False
        while ready or runq or self._running:
            while ready:
                _, name = heapq.heappop(ready)
                if name in self.outcomes:
                    continue
                reason = self._decide(name)
                if reason is not None:
                    heapq.heappush(runq, (self.index[name], name, reason))
                    # Start it now if a worker is free: deciding a thousand up-to-date targets
                    # must not delay the first one that is out of date.
                    if not self._stopping():
                        self._start(runq)
            if self._stopping():
                stopped = True
            if not stopped:
                self._start(runq)
            if stopped and not self._running:
                return
            if self._running:
                done, _ = wait(list(self._running), timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finish(fut)
            elif not ready and runq and stopped:
                return

    def _start(self, runq: list[tuple[int, str, str]]) -> None:
        """Start queued steps, in order, while workers are free; a step waits while another
        running step holds one of its locks (two writers of one single-writer database)."""
        held = {lock for r in self._running.values() for lock in self.steps[r.name].locks}
        skipped = []
        while runq and len(self._running) < max(1, self.opts.jobs):
            item = heapq.heappop(runq)
            locks = self.steps[item[1]].locks
            if held.intersection(locks):
                skipped.append(item)
                continue
            held.update(locks)
            self._submit(item[1], item[2])
        for item in skipped:
            heapq.heappush(runq, item)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        """Lifecycle hooks; not on a dry run (a notifier must not announce a build that is not)."""
        if not self.opts.dry_run:
            self.project.pm.notify(hook_name, self.reporter.message, **kwargs)

    def _stopping(self) -> bool:
        """Start no more steps: interrupted, or a step failed (or an edit cancelled one: the next
        watch cycle starts sooner) and -k was not given."""
        if self._stop_reason == "interrupted":
            self.status = "interrupted"
        return self.status == "interrupted" or (
            not self.opts.keep_going and self.status in ("failed", "superseded")
        )

    def _decide(self, name: str) -> str | None:
        """Skip ``name`` now (and return None) or return the reason it must run."""
        step = self.steps.get(name)
        if step is None:  # an aggregate target
            built = [p for p in self.preds[name] if p in self.ran]
            d = self.decider.aggregate(self.preds[name], self.fingerprints, built)
            return self._settle(name, d)
        if name in self.blocked:
            self._fail(name, Outcome("failed", "tool not installed", error=self.blocked[name]))
            return None
        upstream = {p: self.fingerprints.get(p) for p in self.preds[name]}
        d = self.decider.step(step, upstream)
        if d.status == "run":
            self._pending[name] = d
            return d.reason
        return self._settle(name, d)

    def _settle(self, name: str, d: Decision) -> None:
        """A target decided without running: skipped, would run (dry run) or an aggregate."""
        self.fingerprints[name] = d.fingerprint
        if d.status in ("built", "would_run"):
            self.ran.add(name)
        self._emit(name, Outcome(d.status, d.reason))
        self._release(name)
        return None

    def _submit(self, name: str, reason: str) -> None:
        d = self._pending.pop(name)
        step = self.steps[name]
        recipe = self.project.recipes[step.kind]
        mask = Redactor(recipe.secrets(self.project, step) or [])
        if mask:
            self._masks[name] = mask
        run = StepRun(
            project=self.project,
            step=step,
            recipe=recipe,
            key=d.key,
            record=d.record,
            state=self.state,
            full_refresh=self.opts.full_refresh,
            run_id=self.run_id,
            changed_inputs=d.changed_inputs,
            warm=self.opts.warm,
            log=(lambda line, n=name: self.reporter.step_log(n, mask(line)))
            if mask
            else (lambda line, n=name: self.reporter.step_log(n, line)),
            progress=lambda text, n=name: self.reporter.step_progress(n, text),
        )
        self.reporter.step_started(name, reason)
        self._notify("eltmake_step_started", build=self.build, step=step)
        fut = self.executor.submit(run)
        with self._lock:
            self._running[fut] = _Running(name, run, d, time.time())

    def _finish(self, fut: Future) -> None:
        with self._lock:
            r = self._running.pop(fut)
        name, step, d = r.name, self.steps[r.name], r.decision
        duration = time.time() - r.started
        cancelled = r.run.cancelled.is_set()
        try:
            result = fut.result()
        except Cancelled as e:
            return self._fail(name, Outcome("cancelled", str(e) or "cancelled", duration))
        except StepError as e:
            if cancelled:  # "killed by signal 15" is our own doing: not news
                return self._fail(name, Outcome("cancelled", self._why_cancelled(d), duration))
            return self._fail(
                name, Outcome("failed", d.reason, duration, error=str(e), tail=e.tail)
            )
        except ConfigError as e:
            return self._fail(name, Outcome("failed", d.reason, duration, error=str(e)))
        except BaseException as e:
            if cancelled:
                return self._fail(name, Outcome("cancelled", self._why_cancelled(d), duration))
            tail = traceback.format_exc().splitlines() if self.opts.debug else []
            msg = f"{name}: internal error in the {step.kind} recipe: {type(e).__name__}: {e}"
            return self._fail(name, Outcome("failed", d.reason, duration, error=msg, tail=tail))
        if cancelled:
            return self._fail(name, Outcome("cancelled", self._why_cancelled(d), duration))
        missing = [o for o in step.outputs if not (self.project.root / o).exists()]
        if missing:
            msg = f"{name}: the step succeeded but did not write its output {missing[0]}"
            return self._fail(name, Outcome("failed", d.reason, duration, error=msg))
        fp, warning = self.decider.finished(step, d, result, duration)
        self.fingerprints[name] = fp
        self.ran.add(name)
        outcome = Outcome("built", d.reason, duration, stats=dict(result.stats), error=warning)
        outcome.warnings = list(result.warnings or [])
        self._emit(name, outcome)
        self._release(name)

    def _fail(self, name: str, outcome: Outcome) -> None:
        self._emit(name, outcome)
        if self._stop_reason == "interrupted":
            self.status = "interrupted"
        if outcome.status == "cancelled" and self.status == "interrupted":
            return
        if self.status != "interrupted":  # an interrupt stays an interrupt
            # A build whose only casualties are steps an edit cancelled was superseded, not failed
            # (the history says so); any real failure makes it failed.
            edit = outcome.status == "cancelled" and self.superseded
            self.status = "superseded" if edit and self.status in ("ok", "superseded") else "failed"
        if outcome.status == "failed" and not self.opts.keep_going and self._stopped_by is None:
            self._stop_running(name)
        # Everything below a failed step is upstream_failed; breadth first so events read in order.
        todo = list(self.succs[name])
        while todo:
            n = todo.pop(0)
            if n in self.outcomes:
                continue
            self._emit(n, Outcome("upstream_failed", f"upstream {name} {outcome.status}"))
            todo.extend(self.succs[n])

    def _why_cancelled(self, d: Decision) -> str:
        if self._stopped_by is not None and self._stop_reason != "interrupted":
            return f"stopped: {self._stopped_by} failed (-k lets running steps finish)"
        return d.reason

    def _stop_running(self, failed: str) -> None:
        """Without -k, a failure stops the other running steps too (their processes, here or on a
        cluster, within about a second): what they would still produce is not wanted, and a
        build that failed should end soon. What they committed stays (a Singer load keeps every
        bookmark its target emitted)."""
        self._stopped_by = failed
        with self._lock:
            runs = [r.run for r in self._running.values()]
        if runs:
            threading.Thread(
                target=lambda: [self.executor.cancel(run, grace=1.0) for run in runs],
                name="stop-running",
                daemon=True,
            ).start()

    def _release(self, name: str) -> None:
        for s in self.succs[name]:
            self._waiting[s] -= 1
            if self._waiting[s] == 0 and s not in self.outcomes:
                heapq.heappush(self._ready, (self.index[s], s))

    def _emit(self, name: str, outcome: Outcome) -> None:
        mask = self._masks.get(name)
        if mask is not None:  # what a step printed may hold a secret of its own
            outcome.error = mask(outcome.error)
            outcome.tail = [mask(line) for line in outcome.tail]
            outcome.warnings = [mask(line) for line in outcome.warnings]
        self.outcomes[name] = outcome
        step = self.steps.get(name)
        if self.run_id is not None and self.state is not None and outcome.status != "would_run":
            end = time.time()
            self.state.record_step(
                self.run_id,
                name,
                outcome.status,
                outcome.reason,
                end - outcome.duration_s,
                end,
                outcome.stats,
                outcome.error,
            )
        if step is not None:
            self._notify("eltmake_step_finished", build=self.build, step=step, outcome=outcome)
        self.reporter.step_finished(name, outcome)

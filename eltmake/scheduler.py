"""The scheduler: a ready queue over the topological order, worker threads, early cutoff.

Decisions (skip or run) are made on the main thread as soon as a target's upstream steps are done,
because a key needs the upstream *output fingerprints*. Steps run in a thread pool of ``-j`` workers;
their child processes live in their own process groups (:mod:`eltmake.procs`), so an interrupt
terminates them all and records nothing for unfinished steps.
"""

from __future__ import annotations

import heapq
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eltmake.cache import (
    Cache,
    digest,
    explain,
    freshness_reason,
    input_stats,
    inputs_changed_since,
    key_of,
    output_snapshot,
    outputs_reason,
    step_parts,
)
from eltmake.errors import Cancelled, ConfigError, StepError
from eltmake.procs import ProcessRegistry
from eltmake.step import BuildInfo, Outcome, Step, StepContext, path_lock

if TYPE_CHECKING:
    from eltmake.graph import Graph
    from eltmake.output import Reporter
    from eltmake.project import Project
    from eltmake.state import StateStore

ALL = "*"


@dataclass
class BuildOptions:
    jobs: int = 1
    keep_going: bool = False
    dry_run: bool = False
    force: set[str] = field(default_factory=set)  # target names, or {ALL}
    full_refresh: bool = False
    debug: bool = False
    command: str = "build"
    # Decide and start these before the other targets once they are ready (watch mode: the
    # targets an edit touched), so they do not wait behind many up-to-date decisions.
    first: set[str] = field(default_factory=set)


@dataclass
class _Running:
    name: str
    ctx: StepContext
    started: float
    parts: dict[str, Any]
    stats: dict[str, tuple | None]
    reason: str


def make_steps(project: Project, names: list[str]) -> dict[str, Step]:
    """Ask the plugins for a Step per target with a recipe."""
    steps: dict[str, Step] = {}
    for name in names:
        target = project.targets[name]
        if target.kind is None:
            continue
        step = project.pm.hook.eltmake_make_step(project=project, target=target)
        if step is None:
            raise ConfigError(
                f"{project.file.name}: targets.{name}: no plugin makes steps of kind {target.kind!r}"
            )
        for lock in target.config.get("locks", []):
            lock = path_lock(project, lock)
            if lock not in step.locks:
                step.locks.append(lock)
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
        cache: Cache,
        state: StateStore | None,
        blocked: dict[str, str] | None = None,
    ):
        self.project = project
        self.opts = opts
        self.reporter = reporter
        self.cache = cache
        self.state = state
        self.order = order
        first = opts.first
        self.index = {n: i - len(order) if n in first else i for i, n in enumerate(order)}
        selected = set(order)
        self.preds = {n: [p for p in graph.predecessors(n) if p in selected] for n in order}
        self.succs = {n: [s for s in graph.successors(n) if s in selected] for n in order}
        self.steps = make_steps(project, order)
        self.blocked = blocked or {}  # step -> why it cannot run (its tool failed to install)
        self.procs = ProcessRegistry()
        self.outcomes: dict[str, Outcome] = {}
        self.fingerprints: dict[str, str | None] = {}
        self.ran: set[str] = set()
        self.run_id: int | None = None
        self.build = BuildInfo(project, order, dry_run=opts.dry_run, full_refresh=opts.full_refresh)
        self._running: dict[Future, _Running] = {}
        self._lock = threading.Lock()
        self.status = "ok"
        self.superseded = False  # cancel() was called: an edit in watch mode

    # --- public --------------------------------------------------------------------------------

    def run(self) -> str:
        """Build the selected targets; returns ``ok``, ``failed`` or ``interrupted``."""
        if self.state is not None and not self.opts.dry_run:
            self.run_id = self.state.start_run(self.opts.command, self.order)
            self.build.run_id = self.run_id
        self.reporter.build_started(self.order, self.opts)
        self._notify("eltmake_build_started", build=self.build)
        pool = ThreadPoolExecutor(max_workers=max(1, self.opts.jobs), thread_name_prefix="step")
        try:
            self._loop(pool)
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.cancel_all()
            pool.shutdown(wait=True)
            for fut in list(self._running):
                self._finish(fut)
        except BaseException:  # a bug: still stop every child and close the run's record
            self.cancel_all()
            pool.shutdown(wait=True)
            if self.run_id is not None:
                self.state.finish_run(self.run_id, "failed")
            raise
        finally:
            pool.shutdown(wait=True)
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
        if self.run_id is not None:
            self.state.finish_run(self.run_id, self.status)
        self._notify("eltmake_build_finished", build=self.build, status=self.status)
        self.reporter.build_finished(self.status, self.outcomes)
        return self.status

    def cancel(self, names: set[str]) -> None:
        """Stop running steps (watch mode: an edit superseded them); they end as ``cancelled``."""
        self.superseded = True
        with self._lock:
            runs = [r for r in self._running.values() if r.name in names]
        for r in runs:
            r.ctx.cancelled.set()
            self.procs.terminate(owner=r.ctx, grace=1.0)

    def interrupt(self) -> None:
        """Stop the build from another thread (watch mode's Ctrl-C): start nothing more, stop
        what runs; :meth:`run` then returns ``interrupted``. Safe to call again until it returns,
        to catch a step that was being started at the first call."""
        self.status = "interrupted"
        self.cancel_all()

    def cancel_all(self) -> None:
        with self._lock:
            runs = list(self._running.values())
        for r in runs:
            r.ctx.cancelled.set()
        self.procs.terminate(grace=2.0)

    # --- the loop --------------------------------------------------------------------------------

    def _loop(self, pool: ThreadPoolExecutor) -> None:
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
                        self._start(pool, runq)
            if self._stopping():
                stopped = True
            if not stopped:
                self._start(pool, runq)
            if stopped and not self._running:
                return
            if self._running:
                done, _ = wait(list(self._running), timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    self._finish(fut)
            elif not ready and runq and stopped:
                return

    def _start(self, pool: ThreadPoolExecutor, runq: list[tuple[int, str, str]]) -> None:
        """Start queued steps, in order, while workers are free; a step waits while another
        running step holds one of its locks (two loaders writing one DuckDB file)."""
        held = {lock for r in self._running.values() for lock in self.steps[r.name].locks}
        skipped = []
        while runq and len(self._running) < max(1, self.opts.jobs):
            item = heapq.heappop(runq)
            locks = self.steps[item[1]].locks
            if held.intersection(locks):
                skipped.append(item)
                continue
            held.update(locks)
            self._submit(pool, item[1], item[2])
        for item in skipped:
            heapq.heappush(runq, item)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        """Lifecycle hooks; not on a dry run (a notifier must not announce a build that is not)."""
        if not self.opts.dry_run:
            self.project.pm.notify(hook_name, self.reporter.message, **kwargs)

    def _stopping(self) -> bool:
        """Start no more steps: interrupted, or a step failed (or an edit cancelled one: the next
        watch cycle starts sooner) and -k was not given."""
        return self.status == "interrupted" or (
            not self.opts.keep_going and self.status in ("failed", "superseded")
        )

    def _decide(self, name: str) -> str | None:
        """Skip ``name`` now (and return None) or return the reason it must run."""
        step = self.steps.get(name)
        if step is None:  # an aggregate target
            fps = {p: self.fingerprints.get(p) for p in self.preds[name]}
            self.fingerprints[name] = None if None in fps.values() else digest(fps)
            built = [p for p in self.preds[name] if p in self.ran]
            if built:
                self.ran.add(name)
            status = ("would_run" if self.opts.dry_run else "built") if built else "skipped"
            if not built:
                reason = "up to date"
            elif self.opts.dry_run:
                reason = f"dependency {built[0]} would run" + (
                    f" (and {len(built) - 1} more)" if len(built) > 1 else ""
                )
            else:
                reason = f"aggregate: {len(built)} of {len(self.preds[name])} deps ran"
            self._emit(name, Outcome(status, reason))
            self._release(name)
            return None
        if name in self.blocked:
            self._fail(name, Outcome("failed", "tool not installed", error=self.blocked[name]))
            return None
        unknown = [p for p in self.preds[name] if self.fingerprints.get(p) is None]
        if unknown:  # dry run: the upstream would run first, its output is unknown
            self.fingerprints[name] = None
            self.ran.add(name)
            self._emit(name, Outcome("would_run", f"upstream {unknown[0]} would run first"))
            self._release(name)
            return None
        upstream = {p: self.fingerprints[p] for p in self.preds[name]}
        rec = self.cache.record(name)
        parts, stats = step_parts(self.project, step, self.cache, upstream, rec)
        key = key_of(parts)
        reason = None
        if ALL in self.opts.force:
            reason = "forced (-B)"
        elif name in self.opts.force:
            reason = f"forced (--force {name})"
        elif rec is None or rec.get("key") != key:
            reason = "; ".join(explain(parts, rec)[:3])
        elif self.opts.full_refresh:
            reason = "full refresh"
        else:
            reason = outputs_reason(self.project, self.cache, step, rec) or freshness_reason(
                step.freshness, rec, time.time()
            )
        if reason is None:
            self.fingerprints[name] = rec["fingerprint"]
            self._emit(name, Outcome("skipped", "up to date"))
            self._release(name)
            return None
        if self.opts.dry_run:
            self.fingerprints[name] = None
            self.ran.add(name)
            self._emit(name, Outcome("would_run", reason))
            self._release(name)
            return None
        self._pending = getattr(self, "_pending", {})
        self._pending[name] = (parts, stats, key, rec)
        return reason

    def _submit(self, pool: ThreadPoolExecutor, name: str, reason: str) -> None:
        parts, stats, key, rec = self._pending.pop(name)
        step = self.steps[name]
        ctx = StepContext(
            self.project,
            step,
            key=key,
            record=rec,
            state=self.state,
            full_refresh=self.opts.full_refresh,
            log=lambda line, n=name: self.reporter.step_log(n, line),
            progress=lambda text, n=name: self.reporter.step_progress(n, text),
            procs=self.procs,
            run_id=self.run_id,
            changed_inputs=self._changed_inputs(name, parts, rec),
        )
        self.reporter.step_started(name, reason)
        self._notify("eltmake_step_started", build=self.build, step=step)
        fut = pool.submit(self._run_one, ctx)
        with self._lock:
            self._running[fut] = _Running(name, ctx, time.time(), parts, stats, reason)

    def _changed_inputs(
        self, name: str, parts: dict[str, Any], rec: dict[str, Any] | None
    ) -> list[str] | None:
        """For :attr:`StepContext.changed_inputs`: which inputs moved, if only inputs did."""
        if (
            rec is None
            or self.opts.full_refresh
            or ALL in self.opts.force
            or name in self.opts.force
        ):
            return None
        old = rec.get("parts") or {}
        if any(old.get(k) != parts[k] for k in ("format", "kind", "definition", "upstream")):
            return None
        a, b = old.get("inputs", {}), parts["inputs"]
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return changed or None

    def _run_one(self, ctx: StepContext):
        result = self.project.pm.hook.eltmake_run_step(ctx=ctx)
        if result is None:
            raise StepError(f"{ctx.step.name}: no plugin ran this {ctx.step.kind} step")
        return result

    def _finish(self, fut: Future) -> None:
        with self._lock:
            run = self._running.pop(fut)
        name, step = run.name, self.steps[run.name]
        duration = time.time() - run.started
        try:
            result = fut.result()
        except Cancelled as e:
            return self._fail(name, Outcome("cancelled", str(e) or "cancelled", duration))
        except StepError as e:
            if run.ctx.cancelled.is_set():  # "killed by signal 15" is our own doing: not news
                return self._fail(name, Outcome("cancelled", run.reason, duration))
            return self._fail(
                name, Outcome("failed", run.reason, duration, error=str(e), tail=e.tail)
            )
        except ConfigError as e:
            return self._fail(name, Outcome("failed", run.reason, duration, error=str(e)))
        except Exception as e:
            if run.ctx.cancelled.is_set():
                return self._fail(name, Outcome("cancelled", "cancelled", duration))
            tail = traceback.format_exc().splitlines() if self.opts.debug else []
            msg = f"{name}: internal error in the {step.kind} plugin: {type(e).__name__}: {e}"
            return self._fail(name, Outcome("failed", run.reason, duration, error=msg, tail=tail))
        if run.ctx.cancelled.is_set():
            return self._fail(name, Outcome("cancelled", "cancelled", duration))
        missing = [o for o in step.outputs if not (self.project.root / o).exists()]
        if missing:
            msg = f"{name}: the step succeeded but did not write its output {missing[0]}"
            return self._fail(name, Outcome("failed", run.reason, duration, error=msg))
        outputs = output_snapshot(self.project, self.cache, step)
        fp = result.fingerprint
        if fp is None:
            fp = (
                digest({k: v[2] for k, v in outputs.items()}) if step.outputs else key_of(run.parts)
            )
        changed = inputs_changed_since(self.project, run.stats)
        outcome = Outcome("built", run.reason, duration, stats=dict(result.stats))
        if changed:
            outcome.error = (
                f"input {changed} changed while the step ran: not recorded, it runs again next time"
            )
        else:
            self.cache.put_record(
                name,
                {
                    "key": key_of(run.parts),
                    "parts": run.parts,
                    "fingerprint": fp,
                    "time": time.time(),
                    "duration": duration,
                    "stats": dict(result.stats),
                    "outputs": outputs,
                    "input_stats": input_stats(run.parts, run.stats),
                },
            )
        self.fingerprints[name] = fp
        self.ran.add(name)
        self._emit(name, outcome)
        self._release(name)

    def _fail(self, name: str, outcome: Outcome) -> None:
        self._emit(name, outcome)
        if outcome.status == "cancelled" and self.status == "interrupted":
            return
        if self.status != "interrupted":  # an interrupt stays an interrupt
            # A build whose only casualties are steps an edit cancelled was superseded, not failed
            # (the history says so); any real failure makes it failed.
            edit = outcome.status == "cancelled" and self.superseded
            self.status = "superseded" if edit and self.status in ("ok", "superseded") else "failed"
        # Everything below a failed step is upstream_failed; breadth first so events read in order.
        todo = list(self.succs[name])
        while todo:
            n = todo.pop(0)
            if n in self.outcomes:
                continue
            self._emit(n, Outcome("upstream_failed", f"upstream {name} {outcome.status}"))
            todo.extend(self.succs[n])

    def _release(self, name: str) -> None:
        for s in self.succs[name]:
            self._waiting[s] -= 1
            if self._waiting[s] == 0 and s not in self.outcomes:
                heapq.heappush(self._ready, (self.index[s], s))

    def _emit(self, name: str, outcome: Outcome) -> None:
        self.outcomes[name] = outcome
        step = self.steps.get(name)
        if self.run_id is not None and outcome.status != "would_run":
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

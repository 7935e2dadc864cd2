"""Where steps run: the executor interface, and the local one (a thread pool on this machine).

The scheduler decides what runs and when; an executor only runs what it is given and reports how
it ended, so another executor (a cluster) plugs in without touching the scheduler. An executor:

* ``start(jobs)`` before the first step;
* ``submit(run)`` returns a :class:`concurrent.futures.Future` whose result is the recipe's
  :class:`~eltmake.step.StepResult` (or whose exception is the step's error);
* ``cancel(run, grace)`` stops one running step's processes (``run.cancelled`` is set first);
  ``cancel_all(grace)`` stops every one;
* ``close()`` after the last step has finished.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any, Protocol

from eltmake.procs import ProcessRegistry
from eltmake.step import StepContext

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.recipe import Recipe
    from eltmake.step import Step, StepResult
    from eltmake.store import Store


@dataclass
class StepRun:
    """One run of one step, as handed to an executor: enough to build the step's context here or
    on another machine (which loads the project at ``project.root`` and makes the step again)."""

    project: Project
    step: Step
    recipe: Recipe
    key: str
    record: dict[str, Any] | None
    state: Store | None
    full_refresh: bool
    run_id: int | None
    changed_inputs: list[str] | None
    log: Callable[[str], None]
    progress: Callable[[str], None]
    cancelled: Event = field(default_factory=Event)

    def context(self, procs: Any) -> StepContext:
        ctx = StepContext(
            self.project,
            self.step,
            key=self.key,
            record=self.record,
            state=self.state,
            full_refresh=self.full_refresh,
            log=self.log,
            progress=self.progress,
            procs=procs,
            run_id=self.run_id,
            changed_inputs=self.changed_inputs,
            cancelled=self.cancelled,
        )
        return ctx


class Executor(Protocol):
    def start(self, jobs: int) -> None: ...
    def submit(self, run: StepRun) -> Future: ...
    def cancel(self, run: StepRun, grace: float) -> None: ...
    def cancel_all(self, grace: float) -> None: ...
    def close(self) -> None: ...


class LocalExecutor:
    """Steps in worker threads of this process; their children in process groups of their own
    (:mod:`eltmake.procs`), terminated on cancel, Ctrl-C and failure."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.procs = ProcessRegistry(state_dir)
        self._pool: ThreadPoolExecutor | None = None
        self._contexts: dict[int, StepContext] = {}

    def start(self, jobs: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="step")

    def submit(self, run: StepRun) -> Future:
        assert self._pool is not None, "start() first"
        ctx = run.context(self.procs)
        self._contexts[id(run)] = ctx
        fut = self._pool.submit(_run, run.recipe, ctx)
        fut.add_done_callback(lambda _: self._contexts.pop(id(run), None))
        return fut

    def cancel(self, run: StepRun, grace: float) -> None:
        run.cancelled.set()
        ctx = self._contexts.get(id(run))
        if ctx is not None:
            self.procs.terminate(owner=ctx, grace=grace)

    def cancel_all(self, grace: float) -> None:
        for ctx in list(self._contexts.values()):
            ctx.cancelled.set()
        self.procs.terminate(grace=grace)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._contexts.clear()


def _run(recipe: Recipe, ctx: StepContext) -> StepResult:
    result = recipe.run(ctx)
    if result is None:  # a recipe that forgot to return: the step still succeeded
        from eltmake.step import StepResult

        return StepResult()
    return result

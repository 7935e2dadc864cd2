"""Where steps run: the executor interface, and the local one (a thread pool on this machine).

The scheduler decides what runs and when; an executor only runs what it is given and reports how
it ended, so another executor (a cluster) plugs in without touching the scheduler. An executor:

* ``start(jobs)`` before the first step;
* ``submit(run)`` returns a :class:`concurrent.futures.Future` whose result is the recipe's
  :class:`~eltmake.step.StepResult` (or whose exception is the step's error);
* ``cancel(run, grace)`` stops one running step's processes (``run.cancelled`` is set first);
  ``cancel_all(grace)`` stops every one;
* ``close()`` after the last step has finished.

:func:`make_executor` turns an executor spec (``local``, ``dask``, ``dask://HOST:PORT``,
``tcp://HOST:PORT``) into one; the Dask executor (:mod:`eltmake.dask_executor`) is imported only
when asked for, so ordinary builds never import Dask.
"""

from __future__ import annotations

import os
import re
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
    warm: bool = False

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
            warm=self.warm,
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


EXECUTOR_CHOICES = (
    "local (the default: threads on this machine), dask (a Dask cluster started on this "
    "machine for the build), or dask://HOST:PORT or tcp://HOST:PORT (a running Dask scheduler)"
)
_ADDRESS = re.compile(r"^(?:dask|tcp)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$")


def parse_executor(spec: str) -> tuple[str, str | None]:
    """``("local", None)``, ``("dask", None)`` (a cluster of our own) or ``("dask", "tcp://H:P")``.

    Raises ValueError with the sentence to show (the caller says where the value came from)."""
    value = spec.strip()
    if value in ("local", "dask"):
        return value, None
    m = _ADDRESS.match(value)
    if m and 0 < int(m.group(2)) < 65536:
        return "dask", f"tcp://{m.group(1)}:{int(m.group(2))}"
    raise ValueError(f"{spec!r} is not an executor; use {EXECUTOR_CHOICES}")


def make_executor(
    project: Project,
    option: str | None,
    jobs: int | None,
    echo: Callable[[str], None],
    debug: bool = False,
) -> tuple[Executor, int]:
    """The executor a build runs on, and how many steps it runs at once.

    The spec comes from ``--executor``, else ``ELTMAKE_EXECUTOR``, else ``[project] executor``,
    else ``local``; ``-j`` wins, else the executor's own width (this machine's cores, or the Dask
    cluster's threads). Connecting to a cluster happens here, so that a wrong address fails
    before the build starts."""
    from eltmake.errors import ConfigError

    env = project.environ.get("ELTMAKE_EXECUTOR")
    spec, where = option, "--executor"
    if not spec and env:
        spec, where = env, "ELTMAKE_EXECUTOR"
    if not spec and project.executor:
        spec, where = project.executor, project.where("project", "executor")
    try:
        kind, address = parse_executor(spec or "local")
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if kind == "local":
        return LocalExecutor(project.state_dir), jobs or os.cpu_count() or 1
    try:
        from eltmake.dask_executor import DaskExecutor
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("dask", "distributed"):
            raise
        raise ConfigError(
            f"{where}: the Dask executor needs Dask distributed: pip install 'eltmake[dask]'"
        ) from None
    executor = DaskExecutor(project, address, echo=echo, debug=debug)
    return executor, executor.open(jobs)

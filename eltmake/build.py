"""``eltmake build``, ``status``, ``touch`` and ``forget``: the project, the decisions and the
scheduler together, from a :class:`BuildRequest` (what the command line asked, as plain data)."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from eltmake.errors import ConfigError
from eltmake.executors import make_executor
from eltmake.graph import check_names, selection
from eltmake.project import Project, load_project
from eltmake.scheduler import BuildOptions, Scheduler, make_steps

if TYPE_CHECKING:
    from collections.abc import Callable

    from eltmake.cache import Cache
    from eltmake.output import Reporter
    from eltmake.step import Outcome, Step
    from eltmake.store import Store

EXIT = {"ok": 0, "failed": 1, "interrupted": 130, "superseded": 1}


@dataclass
class BuildRequest:
    """What a build is asked to do: the command line's options, or the web UI's form."""

    project_dir: str | None = None
    env_name: str | None = None
    targets: list[str] = field(default_factory=list)
    only: bool = False
    jobs: int | None = None
    keep_going: bool = False
    dry_run: bool = False
    force: list[str] = field(default_factory=list)
    force_all: bool = False
    full_refresh: bool = False
    json: bool = False
    verbose: bool = False
    plain: bool = False
    no_wait: bool = False
    debug: bool = False
    command: str = "build"
    executor: str | None = None  # local | dask | dask://HOST:PORT (eltmake.executors)

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> BuildRequest:
        """From parsed command-line arguments (those a command lacks keep their defaults)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values.update(overrides)
        values["targets"] = list(values.get("targets") or [])
        values["force"] = list(values.get("force") or [])
        return cls(**values)

    def options(self, project: Project) -> BuildOptions:
        check_names(project, sorted(self.force))
        return BuildOptions(
            jobs=self.jobs or os.cpu_count() or 1,
            keep_going=self.keep_going,
            dry_run=self.dry_run,
            force=set(self.force),
            force_all=self.force_all,
            full_refresh=self.full_refresh,
            debug=self.debug,
            command=self.command,
        )


def open_stores(
    project: Project, warn: Callable[[str], None], write: bool = True
) -> tuple[Cache, Store | None]:
    """The file-digest cache and the store (records, state, history). A read-only command on a
    project never built opens no local store (it creates nothing)."""
    from eltmake.cache import Cache
    from eltmake.store import open_store

    store = open_store(project, create=write)
    return Cache(project.state_dir, warn=warn), store


def decider_for(project: Project, opts: BuildOptions, cache: Cache, store: Any) -> Any:
    from eltmake.decide import Decider

    return Decider(
        project,
        cache,
        store,
        force=opts.force,
        force_all=opts.force_all,
        full_refresh=opts.full_refresh,
        dry_run=opts.dry_run,
        edited=opts.edited,
    )


def install_tools(
    project: Project, steps: dict[str, Step], echo: Callable[[str], None]
) -> dict[str, str]:
    """Install the missing tools of ``steps`` (``eltmake build`` does it itself).

    Returns {step name: error} for the steps whose tool could not be installed or found: they
    fail like any step, and a tool that only other targets use never blocks this build.
    """
    from eltmake import toolenv
    from eltmake.errors import EltmakeError

    specs = toolenv.declared_tools(project)
    if not specs:
        return {}
    by_name = {s.name: s for s in specs}
    needs: dict[str, list[str]] = {}
    for name, step in steps.items():
        names = project.recipes[step.kind].tools(project, step) or []
        needs[name] = [n for n in names if n in by_name]
    needed = sorted({n for names in needs.values() for n in names})
    if not needed:
        return {}
    try:
        toolenv.ensure_installed(project, specs, needed, echo=echo)
        return {}
    except EltmakeError as first:
        failed: dict[str, str] = {}
        for n in needed:
            try:
                toolenv.executable_path(project, by_name[n])
            except EltmakeError as e:
                failed[n] = str(first) if repr(n) in str(first) else str(e)
        if not failed:
            raise
    return {step: failed[n] for step, names in needs.items() for n in names if n in failed}


def _stop_orphans(project: Project, say: Callable[[str], None]) -> None:
    """What a killed eltmake left running in this project is stopped before anything runs: an
    orphan would write beside the step that runs again."""
    from eltmake.procs import stop_orphans

    stopped = stop_orphans(project.state_dir)
    if stopped:
        say(
            f"stopped {len(stopped)} process group(s) left running by an eltmake that was "
            f"killed: {', '.join(map(str, stopped))}"
        )


def raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handler: stop like Ctrl-C (terminate every step's processes, exit 130)."""
    raise KeyboardInterrupt


def run_build(
    req: BuildRequest,
    reporter: Reporter | None = None,
    started: Callable[[Scheduler], None] | None = None,
) -> int:
    """Build as ``eltmake build`` does. The web UI passes its own ``reporter`` and is handed the
    scheduler (``started``) so that it can interrupt the build from another thread."""
    from eltmake.lock import ProjectLock
    from eltmake.output import make_reporter, progress_line
    from eltmake.steplogs import StepLogs

    project = load_project(req.project_dir, env_name=req.env_name, read_only=req.dry_run)
    g, names, order = selection(project, req.targets, req.only)
    opts = req.options(project)
    opts.requested = list(names)
    reporter = reporter or make_reporter(req.json, req.verbose, req.plain)
    lock = None
    store = None
    executor = None
    if not opts.dry_run:
        lock = ProjectLock(project.state_dir)
        lock.acquire(wait=not req.no_wait, notify=reporter.message)
    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGTERM, raise_interrupt) if main else None
    try:
        if not opts.dry_run:
            _stop_orphans(project, reporter.message)
        cache, store = open_stores(project, reporter.message, write=not opts.dry_run)
        steps = make_steps(project, order)
        # Installing is progress: stderr, like dbt's "parsing" (stdout is for results, --json).
        blocked = {} if opts.dry_run else install_tools(project, steps, progress_line)
        decider = decider_for(project, opts, cache, store)
        if not opts.dry_run:
            executor, opts.jobs = make_executor(
                project, req.executor, req.jobs, reporter.message, req.debug
            )
        logs = None if opts.dry_run else StepLogs(reporter, project)
        sched = Scheduler(
            project,
            g,
            order,
            opts,
            logs or reporter,
            decider,
            None if opts.dry_run else store,
            steps=steps,
            blocked=blocked,
            executor=executor,
        )
        if logs is not None:
            logs.build = sched.build  # its run_id names the folder of the step logs
        if started is not None:
            started(sched)
        status = sched.run()
        cache.close()
        return EXIT[status]
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if executor is not None:
            executor.close()
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()


class _Collect:
    """A reporter for ``status``: keeps the decisions, prints nothing."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None

    def step_finished(self, name: str, outcome: Any) -> None:
        self.outcomes[name] = outcome


def status_outcomes(req: BuildRequest) -> tuple[list[str], dict[str, Outcome]]:
    """The decisions ``status`` makes (a dry run that prints nothing), in build order: also what
    colours the web UI's graph."""
    import sys

    project = load_project(req.project_dir, env_name=req.env_name, read_only=True)
    g, _, order = selection(project, req.targets, req.only)
    req.dry_run = True
    opts = req.options(project)
    collect = _Collect()
    cache, store = open_stores(project, lambda m: print(m, file=sys.stderr), write=False)
    try:
        decider = decider_for(project, opts, cache, store)
        Scheduler(project, g, order, opts, collect, decider, None).run()  # type: ignore[arg-type]
    finally:
        cache.close()
        if store is not None:
            store.close()
    return order, collect.outcomes


def run_status(req: BuildRequest) -> int:
    import json

    order, outcomes = status_outcomes(req)
    stale = {n: o for n, o in outcomes.items() if o.status == "would_run"}
    if req.json:
        for n in order:
            o = outcomes[n]
            status = "out_of_date" if o.status == "would_run" else "up_to_date"
            print(
                json.dumps({"event": "status", "target": n, "status": status, "reason": o.reason})
            )
    else:
        width = max((len(n) for n in order), default=0)
        for n in order:
            o = outcomes[n]
            mark = "out of date" if n in stale else "up to date "
            print(f"{mark}  {n:<{width}}  {o.reason if n in stale else ''}".rstrip())
        print(f"{len(stale)} of {len(order)} targets out of date")
    return 1 if stale else 0


def run_touch_forget(req: BuildRequest, everything: bool) -> int:
    import sys

    from eltmake.lock import ProjectLock

    project = load_project(req.project_dir, env_name=req.env_name)
    if everything:
        g, _, _ = selection(project, [], False)
        names = list(g.order)
    else:
        if not req.targets:
            raise ConfigError(f"eltmake {req.command}: which targets? name them, or pass --all")
        g, _, full = selection(project, req.targets, False)
        names = [n for n in full if n in set(req.targets)]
    with ProjectLock(project.state_dir) as lock:
        lock.acquire()
        cache, store = open_stores(project, lambda m: print(m, file=sys.stderr))
        assert store is not None
        try:
            scope = project.env_name or ""
            if req.command == "forget":
                for n in names:
                    found = store.forget_record(scope, n)
                    print(f"forgot {n}" if found else f"{n}: nothing recorded")
                return 0
            decider = decider_for(project, BuildOptions(), cache, store)
            steps = make_steps(project, names)
            for n in names:
                if n not in steps:
                    continue
                upstream = {}
                for p in g.predecessors(n):
                    fp = decider.recorded_fingerprint(p, g.preds)
                    if fp is None:
                        raise ConfigError(
                            f"cannot touch {n}: its upstream {p} has never been built; build or "
                            "touch it first"
                        )
                    upstream[p] = fp
                step = steps[n]
                missing = [o for o in step.outputs if not (project.root / o).exists()]
                if missing:
                    raise ConfigError(f"cannot touch {n}: its output {missing[0]} does not exist")
                decider.touch(step, upstream)
                print(f"touched {n}")
        finally:
            cache.close()
            store.close()
    return 0

"""``eltmake build``, ``status``, ``touch`` and ``forget``: the project, the cache and the scheduler together."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from eltmake.cache import Cache, digest, key_of, output_snapshot, step_parts
from eltmake.errors import ConfigError
from eltmake.graph import selection
from eltmake.project import Project, load_project
from eltmake.scheduler import ALL, BuildOptions, Scheduler, make_steps

EXIT = {"ok": 0, "failed": 1, "interrupted": 130}


def options_from_args(args: Any, project: Project, dry_run: bool = False) -> BuildOptions:
    force = set(getattr(args, "force", []) or [])
    from eltmake.graph import check_names

    check_names(project, sorted(force))
    if getattr(args, "force_all", False):
        force.add(ALL)
    return BuildOptions(
        jobs=getattr(args, "jobs", None) or os.cpu_count() or 1,
        keep_going=getattr(args, "keep_going", False),
        dry_run=dry_run or getattr(args, "dry_run", False),
        force=force,
        full_refresh=getattr(args, "full_refresh", False),
        debug=getattr(args, "debug", False),
        command=getattr(args, "command", "build") or "build",
    )


def install_tools(project: Project, order: list[str], echo) -> dict[str, str]:
    """Install the missing tools of the steps in ``order`` (``eltmake build`` does it itself).

    Returns {step name: error} for the steps whose tool could not be installed or found: they
    fail like any step, and a tool that only other targets use never blocks this build.
    """
    specs = [s for specs in project.pm.hook.eltmake_tools(project=project) for s in specs or []]
    if not specs:
        return {}
    from eltmake import toolenv
    from eltmake.errors import EltmakeError

    by_name = {s.name: s for s in specs}
    needs: dict[str, list[str]] = {}
    for name, step in make_steps(project, order).items():
        for names in project.pm.hook.eltmake_step_tools(project=project, step=step):
            needs.setdefault(name, []).extend(n for n in names or [] if n in by_name)
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


def run_build(args: Any) -> int:
    from eltmake.lock import ProjectLock
    from eltmake.output import make_reporter
    from eltmake.state import StateStore

    project = load_project(args.project_dir, env_name=args.env_name)
    g, _, order = selection(project, list(args.targets), args.only)
    opts = options_from_args(args, project)
    reporter = make_reporter(args.json, args.verbose, args.plain)
    lock = None
    state = None
    if not opts.dry_run:
        lock = ProjectLock(project.state_dir)
        lock.acquire(wait=not args.no_wait, notify=reporter.message)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cache = Cache(project.state_dir)
        if not opts.dry_run:
            state = StateStore(project.state_dir / "state.db")
            blocked = install_tools(project, order, reporter.message)
        else:
            blocked = {}
        status = Scheduler(project, g, order, opts, reporter, cache, state, blocked=blocked).run()
        cache.close()
        return EXIT[status]
    finally:
        signal.signal(signal.SIGTERM, previous)
        if state is not None:
            state.close()
        if lock is not None:
            lock.release()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Collect:
    """A reporter for ``status``: keeps the decisions, prints nothing."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Any] = {}

    def __getattr__(self, name):
        return lambda *a, **k: None

    def step_finished(self, name, outcome) -> None:
        self.outcomes[name] = outcome


def run_status(args: Any) -> int:
    import json

    project = load_project(args.project_dir, env_name=args.env_name)
    g, _, order = selection(project, list(args.targets), args.only)
    opts = options_from_args(args, project, dry_run=True)
    collect = _Collect()
    Scheduler(project, g, order, opts, collect, Cache(project.state_dir), None).run()
    stale = {n: o for n, o in collect.outcomes.items() if o.status == "would_run"}
    if args.json:
        for n in order:
            o = collect.outcomes[n]
            status = "out_of_date" if o.status == "would_run" else "up_to_date"
            print(
                json.dumps({"event": "status", "target": n, "status": status, "reason": o.reason})
            )
    else:
        width = max((len(n) for n in order), default=0)
        for n in order:
            o = collect.outcomes[n]
            mark = "out of date" if n in stale else "up to date "
            print(f"{mark}  {n:<{width}}  {o.reason if n in stale else ''}".rstrip())
        print(f"{len(stale)} of {len(order)} targets out of date")
    return 1 if stale else 0


def run_touch_forget(args: Any) -> int:
    from eltmake.lock import ProjectLock

    project = load_project(args.project_dir, env_name=args.env_name)
    g, _, order = selection(project, [], False) if args.all else (None, None, None)
    if args.all:
        names = list(g.order)
    else:
        if not args.targets:
            raise ConfigError(f"eltmake {args.command}: which targets? name them, or pass --all")
        g, _, full = selection(project, list(args.targets), False)
        names = [n for n in full if n in set(args.targets)]
    with ProjectLock(project.state_dir) as lock:
        lock.acquire()
        cache = Cache(project.state_dir)
        if args.command == "forget":
            for n in names:
                print(f"forgot {n}" if cache.forget(n) else f"{n}: nothing recorded")
            return 0
        steps = make_steps(project, names)
        for n in names:
            if n not in steps:
                continue
            upstream = {}
            for p in g.predecessors(n):
                fp = _fingerprint(project, g, cache, p, steps)
                if fp is None:
                    raise ConfigError(
                        f"cannot touch {n}: its upstream {p} has never been built; build or touch it first"
                    )
                upstream[p] = fp
            step = steps[n]
            missing = [o for o in step.outputs if not (project.root / o).exists()]
            if missing:
                raise ConfigError(f"cannot touch {n}: its output {missing[0]} does not exist")
            parts, _ = step_parts(project, step, cache, upstream)
            outputs = output_snapshot(project, cache, step)
            old = cache.record(n) or {}
            # The fingerprint of what is there now: the outputs' digest, so the steps below re-run
            # when the accepted outputs differ from what they last saw.
            if step.outputs:
                fp = digest({k: v[2] for k, v in outputs.items()})
            elif old.get("key") == key_of(parts):
                fp = old["fingerprint"]
            else:
                fp = key_of(parts)
            cache.put_record(
                n,
                {
                    "key": key_of(parts),
                    "parts": parts,
                    "fingerprint": fp,
                    "time": time.time(),
                    "duration": 0.0,
                    "stats": {"touched": True},
                    "outputs": outputs,
                },
            )
            print(f"touched {n}")
    return 0


def _fingerprint(project, g, cache: Cache, name: str, steps) -> str | None:
    if project.targets[name].kind is not None:
        rec = cache.record(name)
        return rec["fingerprint"] if rec else None
    fps = {p: _fingerprint(project, g, cache, p, steps) for p in g.predecessors(name)}
    return None if None in fps.values() else digest(fps)

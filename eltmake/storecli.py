"""The commands that read and change the store: ``state``, ``runs`` and ``store migrate``."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from eltmake.errors import ConfigError


def store_for(args: Any, write: bool = True) -> Any:
    """The store of the project in ``-C`` (with ``--env``), as configured. A project file that
    does not load still gives its local store, unless ``ELTMAKE_STORE`` names another (then the
    load error is the answer)."""
    import os

    from eltmake.project import find_root, load_project
    from eltmake.store import STORE_ENV, open_store

    try:
        project = load_project(args.project_dir, env_name=args.env_name, infer=False)
    except ConfigError:
        if os.environ.get(STORE_ENV):
            raise
        from eltmake.state import StateStore

        path = find_root(args.project_dir) / ".eltmake" / "state.db"
        if not write and not path.exists():
            return None
        return StateStore(path)
    return open_store(project, create=write)


def _ts(t: float | None) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def cmd_state(args: Any) -> int:
    store = store_for(args, write=args.action not in ("list", "show"))
    if store is None:
        print("no state stored (this project has not been built)")
        return 0 if args.action == "list" else 2
    try:
        return _state(args, store)
    finally:
        store.close()


def _state(args: Any, store: Any) -> int:
    if args.action == "list":
        rows = store.list()
        held = {lease["state_id"]: lease for lease in store.leases()}
        if not rows:
            print("no state stored")
        for sid, updated, size in rows:
            lease = held.get(sid)
            who = f"  leased by pid {lease['pid']} on {lease['host']}" if lease else ""
            print(f"{sid}  {_ts(updated)}  {size} bytes{who}")
        return 0
    if not args.state_id:
        raise ConfigError(
            f"eltmake state {args.action}: which state id? (`eltmake state list` shows them)"
        )
    if args.action == "show":
        value = store.get(args.state_id)
        if value is None:
            raise ConfigError(
                f"no state stored under {args.state_id!r} (`eltmake state list` shows them)"
            )
        print(json.dumps(value, indent=2, sort_keys=True))
    elif args.action == "set":
        text = sys.stdin.read() if args.value in (None, "-") else args.value
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"eltmake state set: the value is not JSON: {e}") from None
        with store.lease(args.state_id):
            store.set(args.state_id, value)
        print(f"state {args.state_id} set")
    elif args.action == "clear":
        with store.lease(args.state_id):
            found = store.clear(args.state_id)
        print(
            f"state {args.state_id} cleared"
            if found
            else f"no state stored under {args.state_id!r}"
        )
    elif args.action == "unlock":
        print("lease removed" if store.unlock(args.state_id) else "no lease held")
    return 0


WORDS = {"upstream_failed": "upstream failed"}
ORDER = ["built", "failed", "upstream_failed", "cancelled", "skipped", "superseded"]
TARGETS_WIDTH = 40


def counts_text(counts: dict[str, int]) -> str:
    """ "1 failed, 3 upstream failed, 2 skipped": each status as the build said it."""
    keys = [k for k in ORDER if counts.get(k)] + sorted(k for k in counts if k not in ORDER)
    return ", ".join(f"{counts[k]} {WORDS.get(k, k)}" for k in keys) or "no steps"


def targets_text(targets: list[str]) -> str:
    """The targets a build was asked for, cut with an ellipsis when long."""
    text = ", ".join(targets) or "(defaults)"
    return text if len(text) <= TARGETS_WIDTH else text[: TARGETS_WIDTH - 1] + "…"


def cmd_runs(args: Any) -> int:
    store = store_for(args, write=False)
    if store is None:
        print("no builds recorded yet")
        return 0
    try:
        if args.run_id is not None:
            return _run_steps(args, store)
        runs = store.runs(args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print("no builds recorded yet")
        return 0
    rows = []
    for r in runs:
        dur = f"{(r['ended'] - r['started']):.2f}s" if r["ended"] else "running or killed"
        env = f" --env {r['env']}" if r.get("env") else ""
        rows.append(
            [
                f"#{r['id']}",
                _ts(r["started"]),
                r["status"] or "?",
                dur,
                counts_text(r.get("counts") or {}),
                f"{r['command'] or 'build'}{env} {targets_text(r['targets'])}",
            ]
        )
    header = ["run", "started", "status", "time", "steps", "command and targets"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        cells = [
            cell.ljust(w) if i != 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join([*cells, row[5]]).rstrip())
    return 0


def _run_steps(args: Any, store: Any) -> int:
    steps = store.run_steps(args.run_id)
    if args.json:
        print(json.dumps(steps, indent=2))
        return 0
    if not steps and not any(r["id"] == args.run_id for r in store.runs(10**9)):
        raise ConfigError(f"no build #{args.run_id} in the history; `eltmake runs` lists them")
    if not steps:
        print(f"run {args.run_id}: no steps recorded")
    width = max((len(s["target"]) for s in steps), default=0)
    for s in steps:
        dur = (s["ended"] or 0) - (s["started"] or 0)
        status = WORDS.get(s["status"], s["status"])
        print(
            f"{_ts(s['started'])}  {status:<15} {s['target']:<{width}}  {dur:6.2f}s  "
            f"{s['reason'] or ''}" + (f"  {s['error']}" if s["error"] else "")
        )
    return 0


def cmd_store(args: Any) -> int:
    """``eltmake store migrate --to URL``: copy the project's store (bookmarks, step records,
    history and the declared outputs as artifacts) into another, so a laptop project moves to CI
    without losing bookmarks; ``--to local`` copies a shared store back into ``.eltmake/``."""
    from eltmake.project import load_project
    from eltmake.store import open_store, redact_url, store_url

    project = load_project(args.project_dir, env_name=args.env_name, infer=False)
    source = _open_named(project, args.source) if args.source else open_store(project)
    target = _open_named(project, args.to)
    if source.url == target.url:
        raise ConfigError(f"store migrate: --to {redact_url(args.to)} is the store it copies from")
    try:
        counts = migrate(project, source, target, force=args.force)
    finally:
        source.close()
        target.close()
    print(
        f"copied {counts['state']} state id(s), {counts['records']} step record(s), "
        f"{counts['runs']} run(s) and {counts['artifacts']} artifact(s) from {source.url} to "
        f"{target.url}"
        + (
            f"; kept {counts['kept']} state id(s) the target already had (--force replaces)"
            if counts["kept"]
            else ""
        )
    )
    if store_url(project) != args.to and args.to != "local":
        print(f"use it with: export ELTMAKE_STORE='{redact_url(args.to)}' (or [project] store)")
    return 0


def _open_named(project: Any, url: str) -> Any:
    """A store by URL; ``local`` is the project's own ``.eltmake/`` folder."""
    from eltmake.store import STORE_ENV, open_store

    import dataclasses

    environ = dict(project.environ)
    environ.pop(STORE_ENV, None)
    named = dataclasses.replace(project, environ=environ, store=None if url == "local" else url)
    store = open_store(named)
    assert store is not None
    return store


def migrate(project: Any, source: Any, target: Any, force: bool = False) -> dict[str, int]:
    counts = {"state": 0, "kept": 0, "records": 0, "runs": 0, "artifacts": 0}
    for sid, _, _ in source.list():
        if target.get(sid) is not None and not force:
            counts["kept"] += 1
            continue
        with target.lease(sid):
            target.set(sid, source.get(sid))
        counts["state"] += 1
    for scope in source.scopes():
        for name, rec in source.records(scope).items():
            target.put_record(scope, name, rec)
            counts["records"] += 1
            counts["artifacts"] += _share_outputs(project, target, rec)
    for run in reversed(source.runs(10**9)):
        target.add_run(run, source.run_steps(run["id"]))
        counts["runs"] += 1
    return counts


def _share_outputs(project: Any, target: Any, rec: dict[str, Any]) -> int:
    """Upload the recorded outputs that are still as recorded (so another runner restores them)."""
    if not getattr(target, "shares_artifacts", False):
        return 0
    from eltmake.digest import file_digest

    n = 0
    for rel, (_, _, digest_) in (rec.get("outputs") or {}).items():
        path = project.root / rel
        if (
            path.is_file()
            and not target.has_artifact(digest_)
            and file_digest(str(path)) == digest_
        ):
            target.put_artifact(digest_, path)
            n += 1
    return n

"""The extract-load step: from a ``[targets.NAME]`` table with ``extract`` to a finished run.

Choices, and why:

* Freshness: an extract with no ``inputs`` defaults to ``freshness = "always"``. eltmake cannot
  hash an API or a database before reading it, so every build re-extracts (a cron build then
  picks up new rows), and early cutoff keeps the dbt work below it skipped when nothing new
  arrived. An extract that lists its ``inputs`` (a file tap) is keyed by their content like any
  step, so it runs when they change. Set ``freshness`` to override either.
* Fingerprint (for early cutoff): the digest of the loader's identity and config (another
  warehouse is another output) and, per stream, the count and digest of the records delivered
  (:mod:`eltmake_singer.messages`). A run that delivers no record keeps the previous fingerprint:
  an incremental run with no new rows changes nothing downstream.
* State: only what the target emits (its commits) is saved, each state as it arrives, merged per
  stream into the state store under ``state_id`` while holding its lease. ``--full-refresh``
  (or ``full_refresh = true``) runs the tap without ``--state`` and re-discovers its catalog;
  the merge keeps the bookmarks of streams the run does not touch. A stream whose table is gone
  from the warehouse (:mod:`eltmake_singer.outputs`) is passed no bookmark, so it is delivered
  again; the others keep theirs.
* Changed inputs, nothing delivered: a file tap that keeps its own state (modification times)
  can take an edited file for one it has read. eltmake then says so, with the remedy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from eltmake.api import Redactor, Step, StepError, StepResult, executable_path, tool_identity
from eltmake_singer.config import (
    DEFAULT_BUFFER_MB,
    DEFAULT_MAX_LINE,
    DEFAULT_SELECT,
    ToolConfig,
    digest,
    key_facts,
    resolve_config,
    secret_values,
    timeout_seconds,
    tool,
    write_config,
)

if TYPE_CHECKING:
    from eltmake.api import Project, StepContext, Target
    from eltmake_singer.runner import PipelineResult

KIND = "singer"


def tools_of(project: Project, target: Target) -> tuple[ToolConfig, list[ToolConfig], ToolConfig]:
    """(extractor, mappers in order, loader) of a Singer target."""
    cfg = target.config
    maps = cfg.get("map", [])
    maps = [maps] if isinstance(maps, str) else list(maps)
    return (
        tool(project, "extractors", cfg["extract"]),
        [tool(project, "mappers", m) for m in maps],
        tool(project, "loaders", cfg["load"]),
    )


def effective_select(target: Target, tap: ToolConfig) -> list[str] | None:
    """The target's ``select`` when it has one, else the extractor's (None: the default)."""
    if "select" in target.config:
        return list(target.config["select"])
    return tap.select


def make_step(project: Project, target: Target) -> Step:
    freshness = target.freshness
    if freshness is None and not target.inputs:
        freshness = "always"
    cfg = target.config
    from eltmake_singer.destinations import loader_warehouse

    warehouse = loader_warehouse(project, cfg["load"])
    sid = state_id(project, target)
    return Step(
        name=target.name,
        kind=KIND,
        target=target,
        inputs=list(target.inputs),
        outputs=list(target.outputs),
        freshness=freshness,
        params={"state_id": sid},
        # Two targets of one build that share a state id take turns: each writes the bookmark
        # under its own lease, and would otherwise be refused while the other holds it.
        locks=(list(warehouse.locks) if warehouse else []) + [f"state:{sid}"],
    )


def state_id(project: Project, target: Target) -> str:
    """Where a target's bookmarks live: its ``state_id`` as written (so environments that name
    the same one share it, on purpose), else its name within its environment (``prod:orders``),
    so a dev build never moves production's bookmark."""
    explicit = target.config.get("state_id")
    if explicit:
        return explicit
    return f"{project.env_name}:{target.name}" if project.env_name else target.name


def definition(project: Project, step: Step) -> dict[str, Any]:
    """Per tool: its installed identity and config (secrets as a digest); the effective select."""
    tap, mappers, loader = tools_of(project, step.target)
    out: dict[str, Any] = {}
    for t in [tap, *mappers, loader]:
        out[f"{t.name}.version"] = tool_identity(project, t.spec())
        out[f"{t.name}.config"] = key_facts(project, t, resolve_config(project, t))
    out[f"{tap.name}.select"] = effective_select(step.target, tap) or DEFAULT_SELECT
    if tap.capabilities is not None:
        out[f"{tap.name}.capabilities"] = sorted(tap.capabilities)
    return out


def run_step(ctx: StepContext) -> StepResult:
    # Imported here: a no-op build needs only make_step and definition, not the machinery.
    from eltmake.api import LeaseHeld
    from eltmake_singer import catalog

    project, target = ctx.project, ctx.step.target
    cfg = target.config
    tap, mappers, loader = tools_of(project, target)
    chain = [tap, *mappers, loader]
    configs = {t.name: resolve_config(project, t) for t in chain}
    redact = Redactor([v for t in chain for v in secret_values(t, configs[t.name])])
    exes = {t.name: executable_path(project, t.spec()) for t in chain}
    full_refresh = bool(ctx.full_refresh or cfg.get("full_refresh", False))
    state_id = ctx.step.params["state_id"]
    where = f"{project.file.name}: targets.{target.name}.timeout"
    timeout = timeout_seconds(cfg.get("timeout"), where)
    stats: dict[str, Any] = {}
    check_connection(ctx, loader)

    with ctx.private_dir() as private:
        paths = {
            t.name: write_config(private, f"config-{i}-{t.role}.json", configs[t.name])
            for i, t in enumerate(chain)
        }
        identity = tool_identity(project, tap.spec())
        caps = catalog.capabilities(project, tap, exes[tap.name], identity, ctx.popen, ctx.log)
        tap_argv = [exes[tap.name], "--config", str(paths[tap.name])]
        select = effective_select(target, tap)
        if {"catalog", "properties", "discover"} & set(caps):
            cat = catalog.discover(
                project,
                tap,
                exes[tap.name],
                paths[tap.name],
                [identity, key_facts(project, tap, configs[tap.name]), caps],
                ctx.popen,
                redact,
                refresh=full_refresh,
                timeout=timeout,
            )
            selected = catalog.apply_selection(cat, select)
            streams = catalog.selected_streams(selected)
            if not streams:
                message = (
                    f"{tap.name}: the selection {select or catalog.DEFAULT_SELECT} matches no "
                    f"stream; `eltmake select {tap.name} --list` shows what there is"
                )
                if select:  # a typo would otherwise load nothing and report success
                    raise StepError(f"{target.name}: {message}")
                ctx.log(message)
            cat_path = write_config(private, "catalog.json", selected)
            flag = "--properties" if "properties" in caps and "catalog" not in caps else "--catalog"
            tap_argv += [flag, str(cat_path)]
        elif select:
            ctx.log(f"{tap.name} declares no catalog capability: its select is not applied")

        try:
            with ctx.state.lease(state_id):
                result = _run_with_state(
                    ctx,
                    private,
                    tap,
                    mappers,
                    loader,
                    tap_argv,
                    exes,
                    paths,
                    caps,
                    state_id,
                    full_refresh,
                    timeout,
                    redact,
                    stats,
                )
        except LeaseHeld as exc:
            raise StepError(str(exc)) from None

    total = sum(result.counts.values())
    stats.update(
        records=total,
        streams=dict(sorted(result.counts.items())),
        bytes=result.bytes,
        states_saved=result.states,
    )
    if full_refresh:
        stats["full_refresh"] = True
    from eltmake_singer.outputs import tables_now

    previous_tables = ((ctx.record or {}).get("stats") or {}).get("tables")
    tables = tables_now(project, loader.name, previous_tables, result.counts, result.announced)
    if tables:
        stats["tables"] = tables
    warnings = []
    if total == 0 and ctx.changed_inputs and not full_refresh:
        warning = nothing_delivered(target.name, tap.name, ctx.changed_inputs)
        warnings.append(warning)  # shown under the step even without -v
        stats["warning"] = warning
    loader_facts = key_facts(project, loader, configs[loader.name])
    previous = (ctx.record or {}).get("fingerprint")
    if total == 0 and previous:
        fingerprint = previous
    else:
        fingerprint = digest(
            {
                "loader": [loader.name, loader_facts, [m.name for m in mappers]],
                "streams": {s: [result.counts[s], d] for s, d in sorted(result.digests.items())},
            }
        )
    rate = total / result.duration_s if result.duration_s > 0 else 0.0
    message = f"{total:,} records in {len(result.counts)} streams ({rate:,.0f}/s)"
    return StepResult(fingerprint=fingerprint, stats=stats, message=message, warnings=warnings)


def nothing_delivered(target: str, tap: str, changed: list[str]) -> str:
    """The warning for a re-run caused by changed inputs that delivered no record."""
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return (
        f"{target}: {shown} changed, but {tap} delivered 0 records: it probably keeps its own "
        "state (e.g. file modification times) and took the edit for something it had read "
        f"(an edit within the same second keeps the mtime); `eltmake build --full-refresh "
        f"{target}` reads everything again"
    )


def check_connection(ctx: StepContext, loader: ToolConfig) -> None:
    """A PostgreSQL destination is tried before any tool starts, so that an unreachable server,
    a wrong password or a missing database fails the step in one line naming the setting, not
    in a loader's 160-line traceback. Nothing runs and nothing is recorded then."""
    from eltmake_singer.destinations import loader_warehouse

    wh = loader_warehouse(ctx.project, loader.name)
    if wh is None or wh.type != "postgres":
        return
    import eltmake_warehouse as W

    from eltmake_singer.outputs import loader_password

    try:
        conn = W.pg_connect(
            wh.settings,
            ctx.env,
            where=f"loaders.{loader.name}.config",
            password=loader_password(ctx.project, loader.name),
        )
    except W.Unreachable as e:
        raise StepError(f"{ctx.step.name}: {e}") from None
    except W.CannotCheck as e:  # psycopg is not installed: the loader will say what it says
        W.note_once(str(e))
        return
    conn.close()


def without_gone_streams(ctx: StepContext, stored: Any, stats: dict[str, Any]) -> Any:
    """The stored state without the bookmarks of streams whose tables are gone from the
    warehouse (None, no state at all, when the whole destination is gone and the record names no
    stream). The stored state itself is not changed: the target's next commits update it."""
    from eltmake_singer.bookmarks import drop_streams
    from eltmake_singer.outputs import gone_streams

    gone = gone_streams(ctx.project, ctx.step, ctx.record)
    if gone == []:
        return stored
    if gone is None:
        ctx.log("the destination is gone: the tap runs without state")
        stats["restarted_streams"] = "all"
        return None
    ctx.log(
        f"tables of {', '.join(gone)} are gone from the warehouse: "
        f"{'that stream starts' if len(gone) == 1 else 'those streams start'} from no bookmark "
        "(the others keep theirs)"
    )
    stats["restarted_streams"] = gone
    return drop_streams(stored, gone)


def _run_with_state(
    ctx: StepContext,
    private: Path,
    tap: ToolConfig,
    mappers: list[ToolConfig],
    loader: ToolConfig,
    tap_argv: list[str],
    exes: dict[str, str],
    paths: dict[str, Path],
    caps: list[str],
    state_id: str,
    full_refresh: bool,
    timeout: float | None,
    redact: Redactor,
    stats: dict[str, Any],
) -> PipelineResult:
    """Pass the stored state to the tap, run the pipeline, save each state the target emits."""
    from eltmake_singer import runner
    from eltmake_singer.bookmarks import merge_state, state_streams

    cfg = ctx.step.target.config
    stored = ctx.state.get(state_id)
    restarted = False
    if stored is not None and "state" in caps and not full_refresh:
        stored = without_gone_streams(ctx, stored, stats)
        restarted = stored is None
    if "state" not in caps:
        ctx.log(
            f"{tap.name} does not declare the 'state' capability: it gets no --state, so every "
            f"run extracts in full (set extractors.{tap.name}.capabilities if it does)"
        )
        stats["state"] = "tap takes no state"
    elif full_refresh:
        kept = state_streams(stored)
        if kept:
            ctx.log(
                f"full refresh: {tap.name} runs without state; bookmarks of streams it does "
                f"not sync are kept ({', '.join(kept[:5])}{'...' if len(kept) > 5 else ''})"
            )
        stats["state"] = "full refresh"
    elif stored is not None:
        state_path = write_config(private, "state.json", stored)
        tap_argv = [*tap_argv, "--state", str(state_path)]
        stats["state"] = "resumed"
    else:
        stats["state"] = "destination gone: no state" if restarted else "first run"

    def on_state(value: Any) -> None:
        ctx.state.update(state_id, lambda old: merge_state(old, value))

    tools = [runner.Tool(tap.name, "tap", tap_argv)]
    tools += [
        runner.Tool(m.name, "mapper", [exes[m.name], "--config", str(paths[m.name])])
        for m in mappers
    ]
    tools.append(
        runner.Tool(loader.name, "target", [exes[loader.name], "--config", str(paths[loader.name])])
    )
    result = runner.run(
        ctx,
        tools,
        on_state=on_state,
        redact=redact,
        timeout=timeout,
        max_line=int(cfg.get("max_line_bytes", DEFAULT_MAX_LINE)),
        buffer_bytes=int(float(cfg.get("buffer_mb", DEFAULT_BUFFER_MB)) * 1024 * 1024),
    )
    if result.states == 0:
        ctx.log(
            f"{loader.name} emitted no state: nothing was saved, so the next run starts from "
            "the same bookmarks"
        )
        stats["state"] = f"{stats.get('state', '')}; target emitted none".lstrip("; ")
    if result.bad_state_lines:
        stats["bad_state_lines"] = result.bad_state_lines
    return result

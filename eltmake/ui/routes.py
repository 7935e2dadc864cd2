"""The UI's pages and JSON API.

Pages are fixed files of the package's ``static/`` folder (each works on its own and fetches its
data); the API reads the project, the store (through :mod:`eltmake.ui.history`) and the builds
started here. Handlers that read files or the store are plain functions, which Starlette runs in
its thread pool, so a slow decision never blocks the event stream.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from eltmake.errors import EltmakeError

if TYPE_CHECKING:
    from eltmake.ui.app import UIContext

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"graph": "graph.html", "build": "build.html", "runs": "runs.html", "state": "state.html"}


def ctx(request: Request) -> UIContext:
    return request.app.state.ui


def api(fn: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """A JSON endpoint: what it returns becomes JSON; bad input is a 400 with one line; a bug is
    a 500 that says so (the traceback goes to the server's terminal)."""

    @functools.wraps(fn)
    def wrapper(request: Request) -> Response:
        try:
            out = fn(request)
        except EltmakeError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            msg = f"internal error: {type(e).__name__}: {e} (a bug in eltmake or a plugin)"
            return JSONResponse({"error": msg}, status_code=500)
        return out if isinstance(out, Response) else JSONResponse(out)

    return wrapper


# --- pages -----------------------------------------------------------------------------------


def page(request: Request) -> Response:
    name = request.path_params.get("page", "graph")
    if name not in PAGES:
        return PlainTextResponse("no such page", status_code=404)
    return FileResponse(STATIC / PAGES[name], headers={"cache-control": "no-cache"})


def run_page(request: Request) -> Response:
    return FileResponse(STATIC / "run.html", headers={"cache-control": "no-cache"})


# --- the project and its graph -----------------------------------------------------------------


@api
def session(request: Request) -> Any:
    c = ctx(request)
    build, last = c.runner.snapshot()
    return {
        "csrf": c.csrf,
        "read_only": c.read_only,
        "project": c.project_name,
        "env": c.env_name,
        "lock": c.history.lock_holder(),
        "build": build,
        "last_event": last,
    }


@api
def graph(request: Request) -> Any:
    from eltmake.ui.graphdata import graph_data

    return graph_data(ctx(request).load())


@api
def status(request: Request) -> Any:
    from eltmake.ui.graphdata import statuses

    c = ctx(request)
    project = c.load()
    redact = c.redactor(project)
    with c.status_lock:  # one decision pass at a time, however many tabs ask
        kinds = {n: t.kind for n, t in project.targets.items()}
        st = statuses(c.project_dir, c.env_name, kinds, c.history, c.runner.current)
    for s in st.values():
        s["reason"] = redact(s["reason"])
    return {"targets": st, "lock": c.history.lock_holder()}


@api
def target(request: Request) -> Any:
    from eltmake.graph import check_names
    from eltmake.ui.masking import mask

    c = ctx(request)
    project = c.load()
    name = request.path_params["name"]
    check_names(project, [name])
    t = project.targets[name]
    redact = c.redactor(project)
    last = c.history.latest_steps(ran_only=True).get(name)
    if last is not None:
        last["error"] = redact(last["error"] or "")
        last["has_log"] = c.history.log_path_exists(last["run_id"], name)
    return {
        "name": name,
        "kind": t.kind or "aggregate",
        "description": t.description,
        "deps": t.deps,
        "table": mask(t.config, redact),
        "last": last,
    }


# --- builds ----------------------------------------------------------------------------------


async def start_build(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"error": "send a JSON object: {targets, dry_run, force}"}, 400)
    targets = body.get("targets") or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        return JSONResponse({"error": "targets must be a list of target names"}, 400)
    from starlette.concurrency import run_in_threadpool

    from eltmake.ui.runner import Busy

    c = ctx(request)
    try:
        b = await run_in_threadpool(
            c.runner.start, targets, bool(body.get("dry_run")), bool(body.get("force"))
        )
    except Busy as e:
        return JSONResponse({"error": str(e), "lock": c.history.lock_holder()}, 409)
    except EltmakeError as e:
        return JSONResponse({"error": str(e)}, 400)
    return JSONResponse({"build": b.id}, status_code=202)


async def stop_build(request: Request) -> Response:
    stopped = ctx(request).runner.stop_async()
    return JSONResponse({"stopping": stopped}, status_code=202 if stopped else 409)


@api
def current_build(request: Request) -> Any:
    build, last = ctx(request).runner.snapshot()
    return {"build": build, "last_event": last}


async def events(request: Request) -> Response:
    import anyio
    from sse_starlette.sse import EventSourceResponse

    from eltmake.ui.events import PING_S, last_event_id

    last = last_event_id(request.headers.get("last-event-id"), request.query_params.get("after"))
    stop = anyio.Event()  # set by sse-starlette when the server shuts down (Ctrl-C)
    return EventSourceResponse(
        ctx(request).hub.stream(last, stop),
        ping=PING_S,
        headers={"x-accel-buffering": "no"},
        shutdown_event=stop,
        shutdown_grace_period=1.0,
    )


# --- history and state -------------------------------------------------------------------------


def _int(value: str, what: str) -> int:
    if not value.isdigit():
        from eltmake.errors import ConfigError

        raise ConfigError(f"{what} must be a number, not {value!r}")
    return int(value)


@api
def runs(request: Request) -> Any:
    limit = _int(request.query_params.get("limit", "50"), "limit")
    c = ctx(request)
    return {"runs": c.history.runs(min(limit, 1000)), "lock": c.history.lock_holder()}


@api
def run(request: Request) -> Any:
    c = ctx(request)
    r = c.history.run(request.path_params["run_id"])
    if r is None:
        return JSONResponse({"error": "no such build in the history"}, status_code=404)
    redact = c.redactor(c.load())
    for s in r["steps"]:
        s["error"] = redact(s["error"] or "")
        s["reason"] = redact(s["reason"] or "")
    return r


@api
def step_log(request: Request) -> Any:
    c = ctx(request)
    run_id = request.path_params["run_id"]
    name = request.path_params["name"]
    full = request.query_params.get("full") == "1"
    text = c.history.log(run_id, name, full, c.redactor(c.load()))
    if text is None:
        return JSONResponse({"error": f"no log kept for {name} in build #{run_id}"}, 404)
    return PlainTextResponse(text)


@api
def state_list(request: Request) -> Any:
    return {"state": ctx(request).history.state()}


@api
def state_value(request: Request) -> Any:
    from eltmake.ui.masking import mask

    c = ctx(request)
    sid = request.path_params["state_id"]
    value = c.history.state_value(sid)
    if value is None:
        return JSONResponse({"error": f"no state stored under {sid!r}"}, status_code=404)
    return {"id": sid, "value": mask(value, c.redactor(c.load()), by_name=False)}

"""The UI's ASGI application: routes, the static folder, the security guard, and the tasks that
live as long as the server (the lock watcher; a running build is stopped on shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from eltmake.ui import routes as r
from eltmake.ui.events import EventHub
from eltmake.ui.history import History
from eltmake.ui.runner import BuildRunner
from eltmake.ui.security import Guard

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.redact import Redactor

LOCK_POLL_S = 1.0


@dataclass
class UIContext:
    """What every handler shares: the project's place, the store's reader, the builds."""

    project_dir: str
    env_name: str | None
    project_name: str
    read_only: bool
    history: History
    hub: EventHub = field(default_factory=EventHub)
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    status_lock: threading.Lock = field(default_factory=threading.Lock)
    runner: BuildRunner = field(init=False)

    def __post_init__(self) -> None:
        self.runner = BuildRunner(
            self.hub, self.project_dir, self.env_name, self.history.lock_holder
        )

    def load(self, infer: bool = True) -> Project:
        """The project as it is on disk now (the UI is a window on it; edits show at once)."""
        from eltmake.project import load_project

        return load_project(self.project_dir, env_name=self.env_name, infer=infer)

    def redactor(self, project: Project) -> Redactor:
        from eltmake.ui.masking import project_redactor

        return project_redactor(project)


async def watch_lock(c: UIContext) -> None:
    """Tell the pages when another process takes or releases the project lock (a build from a
    terminal), so they can say who holds it and refresh when it ends."""
    last: Any = None
    while True:
        holder = c.history.lock_holder()
        pid = holder["pid"] if holder else None
        if pid != last:
            if last is not None or pid is not None:
                c.hub.publish("lock", {"holder": holder})
            last = pid
        await asyncio.sleep(LOCK_POLL_S)


def create_app(c: UIContext, loopback_only: bool = True) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(watch_lock(c))
        try:
            yield
        finally:
            task.cancel()
            # Ctrl-C: stop a running build like `eltmake build` stops (process groups ended).
            await asyncio.to_thread(c.runner.stop)

    routes = [
        Route("/", lambda request: RedirectResponse("/graph", status_code=307)),
        Route("/runs/{run_id:int}", r.run_page),
        Route("/{page:str}", r.page),
        Route("/api/session", r.session),
        Route("/api/graph", r.graph),
        Route("/api/status", r.status),
        Route("/api/targets/{name:path}", r.target),
        Route("/api/builds", r.start_build, methods=["POST"]),
        Route("/api/builds/stop", r.stop_build, methods=["POST"]),
        Route("/api/build", r.current_build),
        Route("/api/events", r.events),
        Route("/api/runs", r.runs),
        Route("/api/runs/{run_id:int}", r.run),
        Route("/api/runs/{run_id:int}/logs/{name:path}", r.step_log),
        Route("/api/state", r.state_list),
        Route("/api/state/{state_id:path}", r.state_value),
        Mount("/static", StaticFiles(directory=r.STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ui = c
    return Guard(app, csrf=c.csrf, read_only=c.read_only, loopback_only=loopback_only)

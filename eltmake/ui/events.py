"""The UI's event stream: what builds report, numbered, kept in a bounded buffer, sent as
server-sent events.

Every event gets the next id. A browser that loses its connection reconnects with the last id it
saw (``Last-Event-ID``) and gets what it missed from the buffer, so a live build view survives a
laptop's sleep or a flaky proxy without re-reading whole pages. When the missed events have left
the buffer (or the server restarted and the ids start again), the client is told to ``reset``:
it fetches the current snapshot once and goes on from there.

Builds report from their own threads; waiting streams live on the server's event loop, so a
publisher wakes them with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

BUFFER = 20_000  # events kept for reconnecting clients
PING_S = 15


class EventHub:
    """Numbered events, the last :data:`BUFFER` of them, and the streams waiting for more."""

    def __init__(self, size: int = BUFFER):
        self._lock = threading.Lock()
        self._events: deque[tuple[int, str, str]] = deque(maxlen=size)
        self._next = 1
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def last_id(self) -> int:
        return self._next - 1

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Add an event (from any thread) and wake every waiting stream; returns its id."""
        text = json.dumps(data, default=str)
        with self._lock:
            eid = self._next
            self._next += 1
            self._events.append((eid, kind, text))
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed: its stream is gone
                pass
        return eid

    def since(self, last: int) -> tuple[list[tuple[int, str, str]], bool]:
        """The events after ``last``, and whether some in between are lost (reset needed)."""
        with self._lock:
            if last > self._next - 1:  # ids from before a restart
                return [], True
            oldest = self._events[0][0] if self._events else self._next
            lost = last + 1 < oldest
            return [e for e in self._events if e[0] > last], lost

    async def stream(self, last: int, stop: Any = None) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events after ``last``, until the client leaves (the response ends it) or
        ``stop`` is set (the server shuts down: the stream then ends cleanly)."""
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        waiter = (loop, ev)
        with self._lock:
            self._waiters.add(waiter)
        try:
            events, lost = self.since(last)
            if lost:
                last = self.last_id
                yield {"id": str(last), "event": "reset", "data": "{}"}
                events, _ = self.since(last)
            while True:
                for eid, kind, text in events:
                    last = eid
                    yield {"id": str(eid), "event": kind, "data": text}
                ev.clear()
                events, lost = self.since(last)
                if events or lost:
                    if lost:
                        last = self.last_id
                        yield {"id": str(last), "event": "reset", "data": "{}"}
                        events, _ = self.since(last)
                    continue
                while not ev.is_set():
                    if stop is not None and stop.is_set():
                        return
                    try:
                        await asyncio.wait_for(ev.wait(), timeout=0.5)
                    except TimeoutError:
                        pass
                events, _ = self.since(last)
        finally:
            with self._lock:
                self._waiters.discard(waiter)


def last_event_id(header: str | None, query: str | None) -> int:
    """The id a reconnecting client saw last (header first; a query parameter for the first
    connection of a page that already has a snapshot), 0 when none or not a number."""
    for value in (header, query):
        if value and value.strip().isdigit():
            return int(value.strip())
    return 0

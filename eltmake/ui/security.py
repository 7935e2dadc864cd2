"""What keeps a page on another site from using the UI: a Host check, Origin and CSRF checks on
every request that changes something, a read-only switch, and headers that keep the pages
self-contained.

Why each:

* **Host** (on loopback): a site can point its own domain at 127.0.0.1 (DNS rebinding) and talk
  to the UI as a same-origin page; only the names of this machine are answered.
* **POST only, Origin + token**: a build starts only from a POST that carries the token of this
  server's start (``X-Eltmake-CSRF``). A page on another origin cannot read the token (no CORS
  headers are ever sent), a custom header makes its browser ask first (and we never say yes),
  and an ``Origin`` or ``Sec-Fetch-Site`` that names another site is refused outright.
* **--read-only**: nothing changes state, whoever asks.
* **Headers**: a content security policy that allows only this server's own scripts, styles and
  connections (no CDN, no inline script), no framing, no referrer, no caching of API answers.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.datastructures import Headers

CSRF_HEADER = "x-eltmake-csrf"
SAFE_METHODS = {"GET", "HEAD"}
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def _host_name(host: str) -> str:
    """``127.0.0.1`` from ``127.0.0.1:8321``, ``[::1]`` from ``[::1]:8321``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware around the whole app."""

    def __init__(self, app: Any, *, csrf: str, read_only: bool, loopback_only: bool):
        self.app = app
        self.csrf = csrf
        self.read_only = read_only
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = None
        if self.loopback_only and _host_name(host).lower() not in LOOPBACK_NAMES:
            refusal = (421, f"this server answers for this machine only, not for host {host!r}")
        elif scope["method"] not in SAFE_METHODS:
            refusal = self.check_write(headers, host)
        if refusal is not None:
            return await _refuse(send, *refusal)
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if api:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check_write(self, headers: Headers, host: str) -> tuple[int, str] | None:
        """Why a state-changing request is refused, or None."""
        if self.read_only:
            return (
                403,
                "this UI is read-only (started with --read-only): start builds from a terminal",
            )
        origin = headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return 403, f"refused: this request came from another site ({origin})"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "refused: this request came from another site"
        token = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.csrf.encode()):
            return 403, "refused: missing or wrong CSRF token; reload the page and try again"
        return None


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

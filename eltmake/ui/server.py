"""Serving: bind the socket ourselves (so a taken port is one clear line, and ``--port 0`` works),
warn when the address is not this machine's own, then run uvicorn until Ctrl-C."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading

from eltmake.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ConfigError that says what to do."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == 98:  # EADDRINUSE
            raise ConfigError(
                f"port {port} on {host} is already in use (another eltmake ui?); "
                "pick another with --port"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = host if ":" not in host or host.startswith("[") else f"[{host}]"
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/"


def serve(
    project_dir: str | None,
    env_name: str | None,
    host: str,
    port: int,
    open_browser: bool,
    read_only: bool,
) -> int:
    import uvicorn

    from eltmake.project import find_root, load_project
    from eltmake.ui.app import UIContext, create_app
    from eltmake.ui.history import History

    # A broken project file is one line and exit 2 now; the edges plugins infer (which may need
    # a tool installed first) wait for the graph page, so the server is up at once.
    project = load_project(project_dir, env_name=env_name, infer=False)
    root = str(find_root(project_dir))
    loopback = is_loopback(host)
    sock = bind(host, port)
    history = History(project.state_dir, lambda: load_project(root, env_name=env_name, infer=False))
    c = UIContext(root, env_name, project.name, read_only, history)
    app = create_app(c, loopback_only=loopback)
    url = url_of(sock, host)
    if not loopback:
        print(
            f"eltmake ui: warning: listening on {host}, not only on this machine: anyone who can "
            "reach it can see this project"
            + ("" if read_only else " and start builds (add --read-only to prevent that)"),
            file=sys.stderr,
            flush=True,
        )
    mode = " (read-only)" if read_only else ""
    print(f"eltmake ui: {project.name} on {url}{mode}  (Ctrl-C stops it)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.2, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0

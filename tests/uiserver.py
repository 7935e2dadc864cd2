"""``eltmake ui`` run as a real server for tests: start it on a free port, talk HTTP to it, read
its server-sent events, stop it with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

# A project of command steps: `a` prints a secret from its env; `slow` waits until the test
# creates the file `go` (so a test sees it running, with no timing guess); `many` prints 500 lines.
PROJECT = """
[project]
name = "uitest"
default = "all"

[targets.a]
run = ["python", "scripts/a.py"]
env = { API_TOKEN = "s3cr3t-value-42" }
outputs = ["out/a.txt"]
description = "prints a line and its token"

[targets.slow]
run = ["python", "scripts/slow.py"]
outputs = ["out/slow.txt"]
deps = ["a"]

[targets.many]
run = ["python", "scripts/many.py"]

[targets.all]
deps = ["slow", "many"]
"""
SCRIPTS = {
    "scripts/a.py": """
        import os
        print("hello from a", flush=True)
        print("token is", os.environ["API_TOKEN"], flush=True)
        open("out/a.txt", "w").write("a")
    """,
    "scripts/slow.py": """
        import os, time
        open("slow.pid", "w").write(str(os.getpid()))
        print("waiting for go", flush=True)
        while not os.path.exists("go"):
            time.sleep(0.02)
        print("went", flush=True)
        open("out/slow.txt", "w").write("slow")
    """,
    "scripts/many.py": """
        for i in range(500):
            print(f"line {i}")
    """,
}


def make_project(root: Path) -> Path:
    (root / "eltmake.toml").write_text(textwrap.dedent(PROJECT))
    for rel, text in SCRIPTS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def eltmake(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eltmake", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class UIServer:
    def __init__(self, root: Path, *args: str):
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eltmake", "-C", str(root), "ui", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = self.proc.stdout.readline()
        m = re.search(r"http://(\S+?)/", line)
        if not m:
            self.proc.kill()
            raise AssertionError(f"eltmake ui did not start: {line!r} {self.proc.stderr.read()}")
        self.host = m.group(1)
        self.url = f"http://{self.host}"
        self.csrf = self.get("/api/session")["csrf"]

    # --- HTTP --------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
        return status, json.loads(raw) if "json" in ctype else raw.decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any, **headers: str) -> tuple[int, Any]:
        h = {"x-eltmake-csrf": self.csrf, "origin": self.url}
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.request("POST", path, body, {k: v for k, v in h.items() if v is not None})

    def wait_build(self, timeout: float = 120) -> dict[str, Any]:
        """The UI's build, once it has finished (polls the snapshot; no timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            b = self.get("/api/build")["build"]
            if b and b["status"] not in ("starting", "running"):
                return b
            time.sleep(0.05)
        raise AssertionError(f"the build did not finish in {timeout}s: {b}")

    # --- server-sent events ------------------------------------------------------------------

    def events(self, last_id: int | None = None, until: Any = None, timeout: float = 60):
        """Read events (id, kind, data) until ``until(kind, data)`` is true; then disconnect."""
        req = urllib.request.Request(self.url + "/api/events")
        if last_id is not None:
            req.add_header("Last-Event-ID", str(last_id))
        out: list[tuple[int, str, Any]] = []
        with urllib.request.urlopen(req, timeout=timeout) as r:
            eid, kind, data = None, "message", ""
            for raw in r:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("id:"):
                    eid = int(line[3:].strip())
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line == "" and eid is not None:
                    out.append((eid, kind, json.loads(data or "{}")))
                    if until is not None and until(kind, out[-1][2]):
                        return out
                    eid, kind, data = None, "message", ""
        return out

    # --- stopping ----------------------------------------------------------------------------

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> UIServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

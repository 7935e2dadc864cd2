"""Shared fixtures: real temporary projects, and eltmake run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The throwaway PostgreSQL server (session) and a fresh database per test, for every module.
from pgserver import pg_env, pg_server  # noqa: F401


class Project:
    """A temporary eltmake project folder, and ``eltmake`` run in it as a subprocess."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def toml(self, text: str) -> Path:
        return self.write("eltmake.toml", text)

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def run(
        self, *args: str, check: bool | int = False, env: dict | None = None, timeout: float = 300
    ):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "eltmake", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        expected = 0 if check is True else check
        if check is not False and proc.returncode != expected:
            raise AssertionError(
                f"eltmake {' '.join(args)} exited {proc.returncode}, expected {expected}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def events(self, *args: str, check: bool | int = True, env: dict | None = None) -> list[dict]:
        import json

        proc = self.run(*args, "--json", check=check, env=env)
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def statuses(
        self, *args: str, check: bool | int = True, env: dict | None = None
    ) -> dict[str, str]:
        events = self.events("build", *args, check=check, env=env)
        return {e["target"]: e["status"] for e in events if e["event"] == "step"}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def tools_dir() -> str:
    """One folder of installed tools (taps, targets, dbt) for the whole test session, kept between
    sessions: real tools from PyPI are installed once, not per test."""
    import tempfile

    path = os.environ.get("ELTMAKE_TEST_TOOLS_DIR") or str(
        Path(tempfile.gettempdir()) / f"eltmake-test-tools-{os.getuid()}"
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    return path

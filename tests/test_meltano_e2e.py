"""A real Meltano from PyPI runs a real pipeline; eltmake imports the project and its state and
goes on where Meltano stopped.

Meltano (pinned) is installed once into its own environment under the shared tools folder, with
uv. The plugins are custom ones (namespace + pip_url + executable), so ``meltano install`` needs
PyPI only, never the Hub; tracking and the version check are switched off.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MELTANO = "meltano==4.4.1"
QUIET = {
    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MELTANO_DISABLE_TRACKING": "true",
    "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
    "MELTANO_SNOWPLOW_COLLECTOR_ENDPOINTS": "[]",
    "MELTANO_VENV_BACKEND": "uv",
    "MELTANO_AUTO_INSTALL": "false",
}

MELTANO_YML = """\
version: 1
default_environment: dev
project_id: 6f3c1e8a-0000-4000-8000-000000000001
send_anonymous_usage_stats: false
environments:
- name: dev
plugins:
  extractors:
  - name: tap-jsonfile
    namespace: tap_jsonfile
    pip_url: tap-jsonfile==0.1.2
    executable: tap-jsonfile
    capabilities: [catalog, discover, state]
    config:
      paths: [data/*.json]
      stream_name: orders
  loaders:
  - name: target-jsonl
    namespace: target_jsonl
    pip_url: target-jsonl==0.1.4
    executable: target-jsonl
    config:
      destination_path: output
      do_timestamp_file: false
jobs:
- name: load
  tasks:
  - tap-jsonfile target-jsonl
"""


@pytest.fixture(scope="session")
def meltano_bin(tools_dir: str) -> str:
    """``meltano`` installed once per tools folder (a lock lets parallel workers share it)."""
    from uv import find_uv_bin

    env_dir = Path(tools_dir) / f"meltano-{MELTANO.split('==')[1]}"
    exe = env_dir / "bin" / "meltano"
    with open(f"{env_dir}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = env_dir / ".installed"
        if not done.exists():
            uv = find_uv_bin()
            subprocess.run(
                [uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(env_dir)],
                check=True,
            )
            subprocess.run(
                [uv, "pip", "install", "--quiet", "--python", str(env_dir / "bin" / "python"), MELTANO],
                check=True,
            )  # fmt: skip
            done.write_text(MELTANO)
    return str(exe)


def orders(ids: range) -> str:
    return json.dumps([{"id": i, "customer": f"c{i % 3}"} for i in ids])


def test_eltmake_goes_on_where_meltano_stopped(project, tools_dir, meltano_bin):
    from uv import find_uv_bin

    root = project.root
    project.write("meltano.yml", MELTANO_YML)
    project.write("data/a.json", orders(range(1, 4)))
    project.write("data/b.json", orders(range(4, 8)))
    (root / "output").mkdir()
    # uv for Meltano's installs (MELTANO_VENV_BACKEND=uv) comes with eltmake.
    path = os.pathsep.join([os.path.dirname(find_uv_bin()), os.environ.get("PATH", "")])
    menv = {**os.environ, **QUIET, "PATH": path}

    def meltano(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [meltano_bin, *args], cwd=root, env=menv, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"meltano {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    meltano("install")
    meltano("run", "load")
    loaded = (root / "output" / "orders.jsonl").read_text().splitlines()
    assert len(loaded) == 7  # Meltano loaded both files

    proc = project.run("import", "meltano", check=0)
    assert "the result loads" in proc.stderr
    doc = tomllib.loads(project.read("eltmake.toml"))
    assert doc["targets"]["load"]["deps"] == ["tap-jsonfile-to-target-jsonl"]
    proc = project.run("import", "meltano", "--state", check=0)
    # Meltano's dev state lands in eltmake's dev environment (state is scoped by --env).
    assert (
        "dev:tap-jsonfile-to-target-jsonl -> state dev:tap-jsonfile-to-target-jsonl" in proc.stdout
    )

    # A new file arrives; eltmake extracts it and nothing Meltano already loaded.
    project.write("data/c.json", orders(range(8, 10)))
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    events = project.events("build", "load", "--env", "dev", env=env)
    step = next(
        e for e in events if e["event"] == "step" and e["target"] == "tap-jsonfile-to-target-jsonl"
    )
    assert step["status"] == "built"
    assert step["stats"]["state"] == "resumed"
    assert step["stats"]["records"] == 2
    lines = (root / "output" / "orders.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == list(range(1, 10))  # each record once: none loaded twice

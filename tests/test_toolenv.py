"""Tool environments: naming, identity, lookup, failed installs, and a real parallel install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eltmake import toolenv
from eltmake.errors import ConfigError, StepError
from eltmake.project import Project
from eltmake.step import ToolSpec


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """The default tools folder is the user's cache folder: each test gets its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ELTMAKE_TOOLS_DIR", raising=False)


def make_project(root: Path, environ: dict | None = None) -> Project:
    return Project(
        root=root,
        file=root / "eltmake.toml",
        name="p",
        default=[],
        plugins=[],
        targets={},
        tables={},
        environ={"PATH": os.environ["PATH"], **(environ or {})},
    )


def test_env_folder_is_per_tool_and_pip_url(tmp_path):
    project = make_project(tmp_path)
    a = toolenv.env_dir(project, ToolSpec("tap-x", "tap-x==1.0", "tap-x"))
    b = toolenv.env_dir(project, ToolSpec("tap-x", "tap-x==1.1", "tap-x"))
    c = toolenv.env_dir(project, ToolSpec("tap-x", "  tap-x==1.0 ", "tap-x"))
    # shared by every project, in the user's cache folder
    assert a.parent == tmp_path / "cache" / "eltmake" / "tools"
    assert a.name.startswith("tap-x-") and a != b  # a changed pip_url is a new environment
    assert a == c


def test_shared_tools_dir_from_the_environment(tmp_path):
    project = make_project(tmp_path, {"ELTMAKE_TOOLS_DIR": str(tmp_path / "shared")})
    env = toolenv.env_dir(project, ToolSpec("t", "t==1", "t"))
    assert env.parent == tmp_path / "shared"


def test_identity_is_read_from_the_install_record(tmp_path):
    project = make_project(tmp_path)
    spec = ToolSpec("tap-x", "tap-x==1.0", "tap-x")
    assert toolenv.tool_identity(project, spec) == {"pip_url": "tap-x==1.0", "installed": False}
    assert not toolenv.is_installed(project, spec)
    env = toolenv.env_dir(project, spec)
    (env / "bin").mkdir(parents=True)
    (env / toolenv.MARKER).write_text(json.dumps({"versions": {"tap-x": "1.0", "requests": "2"}}))
    assert toolenv.tool_identity(project, spec) == {
        "pip_url": "tap-x==1.0",
        "versions": {"tap-x": "1.0", "requests": "2"},
    }
    with pytest.raises(StepError, match="installed no executable named 'tap-x'"):
        toolenv.executable_path(project, spec)


def test_not_installed_says_what_to_run(tmp_path):
    project = make_project(tmp_path)
    with pytest.raises(StepError, match="run `eltmake install tap-x`"):
        toolenv.executable_path(project, ToolSpec("tap-x", "tap-x==1.0", "tap-x"))


def test_executable_without_pip_url_on_path_or_next_to_python(tmp_path):
    project = make_project(tmp_path, {"PATH": "/nonexistent"})
    # eltmake's own loader lives next to the running Python even when PATH lacks that folder.
    spec = ToolSpec("duckdb", None, "eltmake-target-duckdb")
    path = toolenv.executable_path(project, spec)
    assert Path(path).parent == Path(sys.executable).parent
    assert toolenv.tool_identity(project, spec)["executable"] == "eltmake-target-duckdb"
    # keyed by its file's content, so an upgrade in place re-runs its steps
    assert len(toolenv.tool_identity(project, spec)["file"]) == 32
    missing = ToolSpec("nope", None, "no-such-tool-anywhere")
    with pytest.raises(StepError, match="'no-such-tool-anywhere' is not on PATH"):
        toolenv.executable_path(project, missing)
    with pytest.raises(StepError):
        toolenv.ensure_installed(project, [missing])


def test_unknown_name_gets_a_hint(tmp_path):
    project = make_project(tmp_path)
    specs = [ToolSpec("tap-jsonl", "tap-jsonl==0.3.1", "tap-jsonl")]
    with pytest.raises(ConfigError, match="did you mean 'tap-jsonl'"):
        toolenv.ensure_installed(project, specs, names=["tap-jsnl"])


def test_nothing_to_do_when_everything_is_installed(tmp_path):
    project = make_project(tmp_path)
    spec = ToolSpec("tap-x", "tap-x==1.0", "tap-x")
    env = toolenv.env_dir(project, spec)
    (env / "bin").mkdir(parents=True)
    (env / toolenv.MARKER).write_text("{}")
    said: list[str] = []
    assert toolenv.ensure_installed(project, [spec], echo=said.append) == []
    assert said == []


def test_a_failed_install_names_the_tool_with_the_installer_output(tmp_path):
    project = make_project(tmp_path)
    bad = ToolSpec("tap-broken", f"{tmp_path}/no-such-package-dir", "tap-broken")
    with pytest.raises(StepError) as err:
        toolenv.ensure_installed(project, [bad], echo=lambda s: None)
    assert "installing tool 'tap-broken' failed" in str(err.value)
    assert err.value.tail
    assert not toolenv.is_installed(project, bad)  # no half-made environment passes as installed


@pytest.mark.integration
def test_two_processes_install_the_same_tool_once(tmp_path):
    """A real install from PyPI, raced by two processes: the lock makes the second one wait."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_toolenv import make_project
        from eltmake import toolenv
        from eltmake.step import ToolSpec
        project = make_project(Path({str(tmp_path)!r}))
        spec = ToolSpec("target-jsonl", "target-jsonl==0.1.4", "target-jsonl")
        done = toolenv.ensure_installed(project, [spec], echo=lambda s: print(s, flush=True))
        print("DONE", done)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("installing target-jsonl") for o in outs) == 1
    project = make_project(tmp_path)
    spec = ToolSpec("target-jsonl", "target-jsonl==0.1.4", "target-jsonl")
    ident = toolenv.tool_identity(project, spec)
    assert ident["versions"]["target-jsonl"] == "0.1.4"
    exe = toolenv.executable_path(project, spec)
    assert subprocess.run([exe, "--help"], capture_output=True).returncode == 0


RACE = """
import json
import threading
from eltmake import toolenv

barrier = threading.Barrier(8)
found, errors = [], []

def find():
    barrier.wait()
    try:
        found.append(toolenv._uv_bin())
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=find) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(errors or sorted(set(map(str, found)))))
"""


def test_finding_uv_from_parallel_installs_in_a_fresh_process():
    # In a fresh process the first uv.find_uv_bin() initialises sysconfig, which is not
    # thread-safe: parallel installs of two tools used to crash with a TypeError. The race is
    # lost most of the time, not always: five fresh processes make a miss unlikely.
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-c", RACE], capture_output=True, text=True, check=True
        )
        result = json.loads(proc.stdout)
        assert len(result) == 1 and result[0] != "None" and "Error" not in result[0], result

"""Nothing outlives a killed eltmake: its steps' process groups and private folders go with it.

Each test kills eltmake with SIGKILL (no chance to clean up) and waits, with a generous
deadline, for what it had started to disappear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DEADLINE_S = 20.0


def wait_for(check, what: str, deadline: float = DEADLINE_S):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_build(project, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build", "--plain", *args],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


SLOW_STEP = """
[targets.slow]
run = "echo $$ > step.pid; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo line >> out.log; sleep 0.5; done"
"""


def test_a_killed_build_takes_its_steps_with_it(project):
    project.toml(SLOW_STEP)
    build = start_build(project)
    pid = int(
        wait_for(
            lambda: project.root.joinpath("step.pid").exists() and project.read("step.pid").strip(),
            "the step to start",
        )
    )
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    wait_for(lambda: not alive(pid), f"step process {pid} to stop after eltmake was killed")
    lines = project.read("out.log").count("line")
    time.sleep(1.2)  # the step wrote every 0.5 s: a survivor would have added lines
    assert project.read("out.log").count("line") == lines


def _guard_of(pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"-S" in cmd and b"-c" in cmd:
            return int(entry)
    return None


def test_the_next_build_stops_what_a_killed_build_left_when_the_guard_died_too(project):
    project.toml(SLOW_STEP)
    build = start_build(project)
    pid = int(
        wait_for(
            lambda: project.root.joinpath("step.pid").exists() and project.read("step.pid").strip(),
            "the step to start",
        )
    )
    guard = wait_for(lambda: _guard_of(build.pid), "the guard process")
    os.kill(guard, signal.SIGKILL)
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    assert alive(pid)  # no guard left to stop it: the record under .eltmake/procs is the fallback
    records = list((project.root / ".eltmake" / "procs").glob("*.json"))
    assert records and json.loads(records[0].read_text())[0][0] == pid
    project.toml('[targets.other]\nrun = "true"\n')
    proc = project.run("build", "--plain", check=True)
    assert (
        f"stopped 1 process group(s) left running by an eltmake that was killed: {pid}"
        in proc.stdout
    )
    wait_for(lambda: not alive(pid), "the orphan to stop")
    assert not list((project.root / ".eltmake" / "procs").glob("*.json"))


PRIVATE_PLUGIN = """
import time
from pathlib import Path

from eltmake.api import Recipe, StepResult, hookimpl


class Secretive(Recipe):
    kind, marker, keys = "secretive", "secretive", {"secretive": (str,)}

    def run(self, ctx):
        with ctx.private_dir() as private:
            (private / "config.json").write_text('{"token": "s3cr3t-t0ken"}')
            Path(ctx.root, "private.path").write_text(str(private))
            proc = ctx.popen(["sleep", "30"])
            proc.wait()
        return StepResult()


@hookimpl
def eltmake_add_recipes():
    return [Secretive()]
"""


def test_no_file_holding_a_secret_outlives_a_killed_build(project):
    project.write("plugins/secretive.py", PRIVATE_PLUGIN)
    project.toml('[targets.s]\nsecretive = "yes"\n')
    build = start_build(project)
    path = Path(
        wait_for(
            lambda: project.root.joinpath("private.path").exists() and project.read("private.path"),
            "the private folder",
        )
    )
    assert (path / "config.json").exists()
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    wait_for(lambda: not path.exists(), f"{path} to be removed after eltmake was killed")


def test_work_outside_steps_dies_with_eltmake(tmp_path):
    """Installs and parses run through procs.run: a killed eltmake leaves no installer behind."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\nfrom eltmake import procs\n"
        f"procs.run(['sh', '-c', 'echo $$ > {tmp_path}/child.pid; exec sleep 30'])\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)])
    pid_file = tmp_path / "child.pid"
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the child"))
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not alive(pid), "the child of a killed parent to stop")


@pytest.mark.parametrize("finish", ["exit", "exception"])
def test_a_finished_run_leaves_no_guard_behind(tmp_path, finish):
    script = tmp_path / "parent.py"
    tail = "raise SystemExit(0)" if finish == "exit" else "raise RuntimeError('x')"
    script.write_text(
        "import os\nfrom eltmake import procs\n"
        "procs.run(['true'])\n"
        f"open('{tmp_path}/guard.pid', 'w').write(str(procs.GUARD._proc.pid))\n{tail}\n"
    )
    subprocess.run([sys.executable, str(script)], capture_output=True)
    guard = int((tmp_path / "guard.pid").read_text())
    wait_for(lambda: not alive(guard), "the guard to exit with its parent")


def test_a_stopped_helper_is_gone_and_forgotten():
    """stop_helper ends a long-lived helper for good: its group killed, its pipe closed, and no
    longer on the list that the exit clean-up signals (its pid may belong to another process
    by then)."""
    from eltmake import procs

    proc = procs.spawn_helper(
        [sys.executable, "-c", "import sys, time; sys.stdin.read(); time.sleep(60)"],
        stdin=subprocess.PIPE,
    )
    assert proc in procs._HELPERS
    procs.stop_helper(proc)
    assert proc.returncode is not None and proc.stdin.closed
    assert proc not in procs._HELPERS
    procs.stop_helper(proc)  # a second stop is harmless: nothing is signalled
    assert proc not in procs._HELPERS

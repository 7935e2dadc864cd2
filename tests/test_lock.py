"""The project lock: a second build waits (or fails at once with --no-wait)."""

import subprocess
import sys
import time


def test_second_build_waits_or_fails_fast(project):
    project.toml(
        """
        [targets.slow]
        run = "touch started; while [ ! -f release ]; do sleep 0.02; done; rm release; echo done >> log.txt"
        freshness = "always"
        """
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (project.root / "started").exists():
        time.sleep(0.02)
    busy = project.run("build", "--no-wait")
    assert busy.returncode == 1
    assert "project is busy" in busy.stderr and "Traceback" not in busy.stderr
    second = subprocess.Popen(
        [sys.executable, "-m", "eltmake", "build"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert "waiting for the project lock" in second.stdout.readline()  # it waits for the first
    (project.root / "started").unlink()
    (project.root / "release").touch()
    first.communicate(timeout=60)
    assert first.returncode == 0
    while not (project.root / "started").exists():  # the second build got the lock and runs
        time.sleep(0.02)
    (project.root / "release").touch()
    second.communicate(timeout=60)
    assert second.returncode == 0
    assert project.read("log.txt").split() == ["done", "done"]

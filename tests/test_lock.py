"""The project lock: a second build waits (or fails at once with --no-wait)."""

import subprocess
import sys
import time


def test_second_build_waits_or_fails_fast(project):
    project.toml(
        """
        [targets.slow]
        run = "touch started; sleep 1.5; echo done >> log.txt"
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
    second = project.run("build")  # waits for the first, then builds
    assert second.returncode == 0
    assert "waiting for the project lock" in second.stdout + second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert project.read("log.txt").split() == ["done", "done"]

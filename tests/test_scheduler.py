"""Builds through the CLI on real temporary projects: skipping, early cutoff, failures, interrupts."""

import json
import os
import signal
import subprocess
import sys
import time

PY = sys.executable


def chain(project, b_run="cp out/a.txt out/b.txt"):
    project.toml(
        f"""
        [project]
        default = "all"

        [targets.a]
        run = "mkdir -p out && cat src/a.txt > out/a.txt && echo ran >> log.txt"
        inputs = ["src/*.txt"]
        outputs = ["out/a.txt"]

        [targets.b]
        run = "{b_run} && echo ran-b >> log.txt"
        inputs = ["out/a.txt"]
        outputs = ["out/b.txt"]
        deps = ["a"]

        [targets.all]
        deps = ["b"]
        """
    )
    project.write("src/a.txt", "one\n")


def test_first_build_then_noop(project):
    chain(project)
    assert project.statuses() == {"a": "built", "b": "built", "all": "built"}
    assert project.read("out/b.txt") == "one\n"
    assert project.statuses() == {"a": "skipped", "b": "skipped", "all": "skipped"}
    assert project.read("log.txt").split() == ["ran", "ran-b"]


def test_json_events_follow_the_contract(project):
    chain(project)
    events = project.events("build")
    steps = [e for e in events if e["event"] == "step"]
    assert {e["target"] for e in steps} == {"a", "b", "all"}
    for e in steps:
        assert set(e) >= {"event", "target", "status", "reason", "duration_s"}
        assert isinstance(e["duration_s"], int | float)
    assert events[-1]["event"] == "build" and events[-1]["status"] == "ok"


def test_input_change_reruns_and_says_why(project):
    chain(project)
    project.run("build", check=True)
    project.write("src/a.txt", "two\n")
    events = project.events("build")
    a = next(e for e in events if e.get("target") == "a" and e["event"] == "step")
    assert a["status"] == "built" and a["reason"] == "input changed: src/a.txt"
    b = next(e for e in events if e.get("target") == "b" and e["event"] == "step")
    assert b["status"] == "built" and "upstream a delivered new data" in b["reason"]
    assert project.read("out/b.txt") == "two\n"


def test_same_content_saved_again_runs_nothing(project):
    chain(project)
    project.run("build", check=True)
    time.sleep(0.01)
    project.write("src/a.txt", "one\n")  # new mtime, same bytes
    assert project.statuses() == {"a": "skipped", "b": "skipped", "all": "skipped"}


def test_new_input_file_matching_the_glob(project):
    chain(project)
    project.run("build", check=True)
    project.write("src/extra.txt", "x\n")
    events = project.events("build")
    a = next(e for e in events if e.get("target") == "a" and e["event"] == "step")
    assert a["reason"] == "new input: src/extra.txt"


def test_early_cutoff(project):
    # a re-runs (its input changed) but writes the same output: b stays skipped.
    project.toml(
        """
        [targets.a]
        run = "python3 -c \\"print(open('src/a.txt').read().strip().upper()[:3])\\" > a.txt"
        inputs = ["src/a.txt"]
        outputs = ["a.txt"]

        [targets.b]
        run = "cp a.txt b.txt && echo ran >> b.log"
        outputs = ["b.txt"]
        deps = ["a"]
        """
    )
    project.write("src/a.txt", "one\n")
    assert project.statuses("b") == {"a": "built", "b": "built"}
    project.write("src/a.txt", "one and more\n")  # output is still "ONE"
    assert project.statuses("b") == {"a": "built", "b": "skipped"}
    assert project.read("b.log").split() == ["ran"]


def test_deleted_or_edited_output_reruns(project):
    chain(project)
    project.run("build", check=True)
    (project.root / "out/b.txt").unlink()
    events = project.events("build")
    b = next(e for e in events if e.get("target") == "b" and e["event"] == "step")
    assert b["status"] == "built" and b["reason"] == "output missing: out/b.txt"
    project.write("out/b.txt", "tampered\n")
    events = project.events("build")
    b = next(e for e in events if e.get("target") == "b" and e["event"] == "step")
    assert b["status"] == "built" and b["reason"] == "output changed: out/b.txt"
    assert project.read("out/b.txt") == "one\n"


def test_definition_change_is_named(project):
    chain(project)
    project.run("build", check=True)
    chain(project, b_run="cp out/a.txt out/b.txt && true")
    events = project.events("build")
    b = next(e for e in events if e.get("target") == "b" and e["event"] == "step")
    assert b["reason"] == "definition changed: run"


def test_description_change_runs_nothing(project):
    project.toml('[targets.a]\nrun = "echo x >> log"\ndescription = "one"\n')
    project.run("build", check=True)
    project.toml('[targets.a]\nrun = "echo x >> log"\ndescription = "two"\n')
    assert project.statuses() == {"a": "skipped"}


def test_dry_run_explains_and_runs_nothing(project):
    chain(project)
    proc = project.run("build", "-n", check=True)
    assert "would run a  (never built)" in proc.stdout
    # early cutoff may still skip b: -n says on what it depends
    assert "would run b  (if upstream a delivers new data)" in proc.stdout
    assert not (project.root / "out").exists()
    project.run("build", check=True)
    project.write("src/a.txt", "changed\n")
    proc = project.run("build", "-n", check=True)
    assert "input changed: src/a.txt" in proc.stdout
    assert project.read("out/a.txt") == "one\n"


def test_status_exit_codes(project):
    chain(project)
    proc = project.run("status")
    assert proc.returncode == 1 and "never built" in proc.stdout
    project.run("build", check=True)
    assert project.run("status").returncode == 0
    project.write("src/a.txt", "new\n")
    proc = project.run("status")
    assert proc.returncode == 1 and "input changed: src/a.txt" in proc.stdout


def test_force(project):
    chain(project)
    project.run("build", check=True)
    assert project.statuses("--force", "b") == {"a": "skipped", "b": "built", "all": "built"}
    assert project.statuses("-B") == {"a": "built", "b": "built", "all": "built"}


def test_only_builds_no_dependencies(project):
    chain(project)
    proc = project.run("build", "b", "--only", "--json")
    steps = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {e["target"] for e in steps if e["event"] == "step"} == {"b"}


def test_failure_marks_dependents_and_exits_1(project):
    project.toml(
        """
        [targets.bad]
        run = "echo 'something broke' >&2; exit 3"
        [targets.after]
        run = "true"
        deps = ["bad"]
        [targets.other]
        run = "echo ok > other.txt"
        outputs = ["other.txt"]
        """
    )
    proc = project.run("build", "bad", "after", "other", "-k", "--json")
    assert proc.returncode == 1
    events = {
        e["target"]: e for e in map(json.loads, proc.stdout.splitlines()) if e["event"] == "step"
    }
    assert events["bad"]["status"] == "failed"
    assert "exited with code 3" in events["bad"]["error"]
    assert events["after"]["status"] == "upstream_failed"
    assert events["other"]["status"] == "built"  # -k: independent work goes on
    assert "something broke" in proc.stderr  # the failing step's output is shown
    # A failed step is not recorded: it runs again next time.
    proc = project.run("build", "bad", "--json")
    assert proc.returncode == 1


def test_without_keep_going_the_build_stops(project):
    project.toml(
        """
        [targets.bad]
        run = "exit 1"
        [targets.later]
        run = "echo ran > later.txt"
        deps = ["slow"]
        [targets.slow]
        run = "sleep 0.5"
        """
    )
    statuses = project.statuses("bad", "later", "-j", "1", check=1)
    assert statuses["bad"] == "failed"
    assert not (project.root / "later.txt").exists()
    assert statuses["later"] in ("cancelled", "upstream_failed")


def test_missing_output_after_success_fails(project):
    project.toml('[targets.a]\nrun = "true"\noutputs = ["never.txt"]\n')
    events = project.events("build", check=1)
    a = next(e for e in events if e.get("target") == "a" and e["event"] == "step")
    assert a["status"] == "failed" and "did not write its output never.txt" in a["error"]


def test_freshness(project):
    project.toml(
        """
        [targets.always]
        run = "echo x >> always.log"
        freshness = "always"
        [targets.hourly]
        run = "echo x >> hourly.log"
        freshness = "1h"
        [targets.tiny]
        run = "echo x >> tiny.log"
        freshness = "0.001s"
        """
    )
    project.run("build", "always", "hourly", "tiny", check=True)
    time.sleep(0.05)
    statuses = project.statuses("always", "hourly", "tiny")
    assert statuses == {"always": "built", "hourly": "skipped", "tiny": "built"}
    events = project.events("build", "tiny")
    assert events[1]["reason"] == "older than freshness 0.001s"


def test_input_changed_while_running_is_not_recorded(project):
    project.toml(
        """
        [targets.a]
        run = "touch started; sleep 0.5; echo ran >> log.txt"
        inputs = ["in.txt"]
        """
    )
    project.write("in.txt", "1\n")
    proc = subprocess.Popen(
        [PY, "-m", "eltmake", "build"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not (project.root / "started").exists():
        time.sleep(0.01)
    project.write("in.txt", "2\n")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "changed while the step ran" in out
    assert project.statuses() == {"a": "built"}  # not recorded: it runs again


def test_touch_and_forget(project):
    chain(project)
    project.write("out/a.txt", "made by hand\n")
    project.write("out/b.txt", "made by hand\n")
    project.run("touch", "a", "b", check=True)
    assert project.statuses() == {"a": "skipped", "b": "skipped", "all": "skipped"}
    project.run("forget", "b", check=True)
    assert project.statuses() == {"a": "skipped", "b": "built", "all": "built"}


def test_parallel_jobs_run_at_once(project):
    """Each step waits for the other to have started: with -j 2 both finish; run one at a time,
    the first would wait in vain (and fail at its deadline). No timing is asserted."""
    project.write(
        "meet.py",
        """
        import os, sys, time
        me, other = sys.argv[1], sys.argv[2]
        open(me + ".start", "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(other + ".start"):
            if time.monotonic() > deadline:
                sys.exit("the other step never started")
            time.sleep(0.01)
        """,
    )
    project.toml(
        """
        [targets.x]
        run = ["python3", "meet.py", "x", "y"]
        [targets.y]
        run = ["python3", "meet.py", "y", "x"]
        """
    )
    project.run("build", "x", "y", "-j", "2", check=True)


def test_ctrl_c_stops_children_and_records_nothing(project):
    project.toml(
        """
        [targets.slow]
        run = "echo $$ > pid.txt; sleep 60 & echo $! > child.txt; wait"
        """
    )
    proc = subprocess.Popen(
        [PY, "-m", "eltmake", "build"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not (project.root / "child.txt").exists() or not project.read("child.txt").strip():
        assert time.time() < deadline
        time.sleep(0.05)
    child = int(project.read("child.txt"))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    deadline = time.time() + 30
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the step's grandchild outlived the build"
    runs = project.run("runs", check=True).stdout
    assert "interrupted" in runs
    assert project.run("status").returncode == 1  # nothing recorded for the unfinished step


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_runs_history(project):
    chain(project)
    project.run("build", check=True)
    project.run("build", check=True)
    out = project.run("runs", check=True).stdout.splitlines()
    assert out[0].split() == [
        "run",
        "started",
        "status",
        "time",
        "steps",
        "command",
        "and",
        "targets",
    ]
    assert out[1].startswith("#2") and "3 skipped" in out[1] and "built" not in out[1]
    assert out[2].startswith("#1") and "3 built" in out[2]
    steps = project.run("runs", "1", check=True).stdout
    assert "built" in steps and "never built" in steps


def test_touch_takes_the_fingerprint_of_the_outputs_as_they_are(project):
    chain(project)
    project.run("build", check=True)
    project.write("out/a.txt", "edited by hand\n")
    project.run("touch", "a", check=True)
    # a is accepted as built, but b has not seen the new out/a.txt yet.
    assert project.statuses() == {"a": "skipped", "b": "built", "all": "built"}
    assert project.read("out/b.txt") == "edited by hand\n"


def test_dotenv_change_reruns_commands(project):
    project.toml('[targets.a]\nrun = "echo $FOO > a.txt"\noutputs = ["a.txt"]\n')
    project.write(".env", "FOO=1\n")
    project.run("build", check=True)
    project.write(".env", "FOO=2\n")
    events = project.events("build")
    a = next(e for e in events if e["event"] == "step")
    assert a["status"] == "built" and a["reason"] == "definition changed: dotenv"
    assert project.read("a.txt") == "2\n"


def test_unknown_run_id(project):
    chain(project)
    project.run("build", check=True)
    proc = project.run("runs", "999")
    assert proc.returncode == 2 and "no build #999" in proc.stderr


def test_steps_sharing_a_lock_take_turns(project):
    project.write(
        "span.py",
        """
        import sys, time
        start = time.time()
        time.sleep(0.4)
        open(sys.argv[1] + ".t", "w").write(f"{start} {time.time()}")
        """,
    )
    project.toml(
        """
        [targets.x]
        run = ["python3", "span.py", "x"]
        locks = ["./warehouse.duckdb"]
        [targets.y]
        run = ["python3", "span.py", "y"]
        locks = ["warehouse.duckdb"]
        [targets.z]
        run = ["python3", "span.py", "z"]
        """
    )
    project.run("build", "x", "y", "z", "-j", "3", check=True)
    (x0, x1), (y0, y1), (z0, z1) = (map(float, project.read(f"{n}.t").split()) for n in "xyz")
    assert x1 <= y0 or y1 <= x0  # never at once
    assert z0 < max(x1, y1) and min(x0, y0) < z1  # an unlocked step still runs alongside


def test_a_failure_without_keep_going_stops_the_running_steps(project):
    """Without -k, a failed step stops the others still running (here: one waiting for a file
    that never comes); with -k they finish."""
    project.toml(
        """
        [targets.slow]
        run = "echo $$ > slow.pid; while [ ! -e go ]; do sleep 0.05; done; echo done > slow.txt"
        [targets.broken]
        run = "while [ ! -e slow.pid ]; do sleep 0.05; done; exit 3"
        """
    )
    events = project.events("build", "-j", "2", check=1)
    steps = {e["target"]: e for e in events if e["event"] == "step"}
    assert steps["broken"]["status"] == "failed"
    assert steps["slow"]["status"] == "cancelled"
    assert steps["slow"]["reason"] == "stopped: broken failed (-k lets running steps finish)"
    assert not (project.root / "slow.txt").exists()
    pid = int(project.read("slow.pid"))
    deadline = time.time() + 30
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    # With -k the running step goes on (here it is released once the failure is in).
    (project.root / "slow.pid").unlink()
    (project.root / "go").write_text("")
    steps = {
        e["target"]: e["status"]
        for e in project.events("build", "-j", "2", "-k", check=1)
        if e["event"] == "step"
    }
    assert steps == {"slow": "built", "broken": "failed"}

"""``eltmake watch`` as a real subprocess, driven by real file edits.

Every wait is for an output line, with a generous timeout; nothing here asserts a duration.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eltmake.watchpaths import (
    ADDED,
    DELETED,
    MODIFIED,
    GitIgnore,
    WatchMap,
    glob_regex,
    is_editor_junk,
)

PY = sys.executable
WAIT = 60  # seconds: generous, for a loaded CI machine


class Watcher:
    """A running ``eltmake watch``; its output lines are collected as they come."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None):
        self.root = root
        self.proc = subprocess.Popen(
            [PY, "-m", "eltmake", "watch", *args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._seen = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> str:
        """The next line (after the last one matched) that matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                line = self.lines[self._seen]
                self._seen += 1
                if rx.search(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output())
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"eltmake watch exited ({self.proc.wait()}) before printing {pattern!r}:\n"
                    + self.output()
                )
            self.lines.append(line)

    def since(self, marker: str) -> list[str]:
        """The lines after the last line containing ``marker``."""
        idx = max(i for i, line in enumerate(self.lines) if marker in line)
        return self.lines[idx + 1 : self._seen]

    def output(self) -> str:
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=WAIT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def watch(project):
    started: list[Watcher] = []

    def start(*args: str) -> Watcher:
        w = Watcher(project.root, "--plain", *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def edit(path: Path, text: str) -> None:
    """Write a file the way an editor saves it (and make sure its mtime moves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead for our purpose
    except FileNotFoundError:
        return False


def _wait_pid(path: Path, old: int | None = None) -> int:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text and int(text) != old:
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path.name} never got a new pid")


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


THREE = """
    [project]
    default = "all"

    [targets.a]
    run = "mkdir -p out && cat src/a.txt > out/a.txt && echo a >> log.txt"
    inputs = ["src/a.txt"]
    outputs = ["out/a.txt"]

    [targets.b]
    run = "cp out/a.txt out/b.txt && echo b >> log.txt"
    inputs = ["out/a.txt"]
    outputs = ["out/b.txt"]
    deps = ["a"]

    [targets.c]
    run = "mkdir -p out && cat src/c/*.txt > out/c.txt && echo c >> log.txt"
    inputs = ["src/c/*.txt"]
    outputs = ["out/c.txt"]

    [targets.all]
    deps = ["b", "c"]
    """


def three(project) -> None:
    project.toml(THREE)
    project.write("src/a.txt", "a1\n")
    project.write("src/c/one.txt", "c1\n")
    project.write(".gitignore", "scratch/\n*.log\n")


# --- end to end --------------------------------------------------------------------------------


def test_an_edit_reruns_only_the_affected_targets(project, watch):
    three(project)
    w = watch()
    first = w.wait_for(r"^watch: cycle 1 ")
    assert "ok" in first and "re-ran a, c, b" in first
    w.wait_for(r"^watch: waiting for changes")

    edit(project.root / "src/c/one.txt", "c2\n")
    w.wait_for(r"^watch: changed: src/c/one.txt$")
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "ok" in line and "re-ran c" in line and "skipped a, b" in line
    assert project.read("out/c.txt") == "c2\n"

    # A new file matching the glob is an input too; editor droppings, ignored files, outputs and
    # files nothing reads are not: none of them makes a cycle of its own.
    w.wait_for(r"^watch: waiting for changes")
    for junk in ("src/c/.one.txt.swp", "src/c/one.txt~", "src/c/4913", "scratch/x.txt", "run.log"):
        edit(project.root / junk, "noise\n")
    edit(project.root / "notes.md", "not an input\n")
    edit(project.root / "out/b.txt", "an output\n")
    time.sleep(0.5)  # give any (wrong) cycle a chance to show up before the real edit
    edit(project.root / "src/c/two.txt", "c3\n")
    changed = w.wait_for(r"^watch: changed: ")
    assert changed == "watch: changed: src/c/two.txt", w.output()
    line = w.wait_for(r"^watch: cycle \d+ ")
    # out/b.txt edited by hand made no cycle, but the next build notices and makes it again.
    assert line.startswith("watch: cycle 3 ok"), w.output()
    assert "re-ran c, b" in line and "skipped a" in line

    edit(project.root / "src/a.txt", "a2\n")
    line = w.wait_for(r"^watch: cycle 4 ")
    assert "re-ran a, b" in line and "skipped c" in line
    assert project.read("out/b.txt") == "a2\n"
    ran = project.read("log.txt").split()
    assert {n: ran.count(n) for n in "abc"} == {"a": 2, "b": 3, "c": 3}
    assert w.interrupt() == 130


def test_a_broken_project_file_is_shown_and_the_watch_goes_on(project, watch):
    three(project)
    w = watch()
    w.wait_for(r"^watch: cycle 1 ok")
    w.wait_for(r"^watch: waiting for changes")

    (project.root / "eltmake.toml").write_text(THREE + "\n[targets.d\n")
    err = w.wait_for(r"^watch: error: ")
    assert "eltmake.toml:" in err and "invalid TOML" in err
    w.wait_for(r"^watch: keeping the last good graph; waiting for the next edit")

    # An input edit while the file is broken builds nothing: the error is shown again.
    edit(project.root / "src/a.txt", "a2\n")
    w.wait_for(r"^watch: error: eltmake.toml:")
    assert not any(line.startswith("watch: cycle 2") for line in w.lines)

    # An error the core finds after parsing (an unknown dependency) is shown the same way.
    (project.root / "eltmake.toml").write_text(
        THREE + '\n[targets.d]\nrun = "echo d >> log.txt"\ndeps = ["nope"]\n'
    )
    err = w.wait_for(r"^watch: error: ")
    assert "targets.d.deps: unknown target 'nope'" in err

    fixed = THREE.replace('deps = ["b", "c"]', 'deps = ["b", "c", "d"]')
    (project.root / "eltmake.toml").write_text(fixed + '\n[targets.d]\nrun = "echo d >> log.txt"\n')
    w.wait_for(r"^watch: the project loads again")
    # The edit of src/a.txt made while the file was broken is not lost: a and b re-run now.
    assert w.wait_for(r"^watch: changed: ") == "watch: changed: eltmake.toml, src/a.txt"
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "ok" in line and "re-ran a, d, b" in line and "skipped c" in line, w.output()
    assert w.proc.poll() is None
    assert w.interrupt() == 130


def test_a_failing_step_shows_its_log_and_the_next_edit_recovers(project, watch):
    project.toml(
        """
        [targets.check]
        run = "grep -q good src/x.txt || { echo 'line one of the log'; echo 'src/x.txt is not good'; exit 3; }"
        inputs = ["src/x.txt"]
        [targets.after]
        run = "echo after >> log.txt"
        deps = ["check"]
        """
    )
    project.write("src/x.txt", "good\n")
    w = watch("check", "after")
    w.wait_for(r"^watch: cycle 1 ok")

    edit(project.root / "src/x.txt", "bad\n")
    w.wait_for(r"^failed\s+check")
    w.wait_for(r"check \| src/x.txt is not good")
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "FAILED" in line and "failed check" in line and "not run (upstream failed) after" in line

    edit(project.root / "src/x.txt", "good again\n")
    line = w.wait_for(r"^watch: cycle 3 ")
    assert "ok" in line and "re-ran check" in line, w.output()
    assert w.interrupt() == 130


def test_an_edit_cancels_the_affected_running_step_and_leaves_no_orphan(project, watch):
    project.toml(
        """
        [targets.slow]
        run = "cat src/slow.txt >> starts.txt; sleep 300 & echo $! > child.txt; wait"
        inputs = ["src/slow.txt"]

        [targets.other]
        run = "while [ ! -e release ]; do sleep 0.02; done; echo other >> log.txt"
        inputs = ["src/other.txt"]
        """
    )
    project.write("src/slow.txt", "1\n")
    project.write("src/other.txt", "1\n")
    w = watch("slow", "other", "-j", "2")
    first = _wait_pid(project.root / "child.txt")
    w.wait_for(r"^run\s+other")

    edit(project.root / "src/slow.txt", "2\n")
    w.wait_for(r"^watch: src/slow.txt changed during the build: cancelling slow$")
    assert _wait_gone(first), "the cancelled step's grandchild is still running"
    w.wait_for(r"^cancelled\s+slow")

    # The unaffected step was not cancelled: it finishes, then the next cycle starts.
    (project.root / "release").write_text("")
    line = w.wait_for(r"^watch: cycle 1 ")
    assert "superseded by a new edit" in line
    assert "re-ran other" in line and "cancelled slow" in line
    w.wait_for(r"^watch: changed: src/slow.txt$")
    second = _wait_pid(project.root / "child.txt", old=first)
    assert project.read("starts.txt").split() == ["1", "2"]
    assert project.read("log.txt").split() == ["other"]  # not run again: the cache kept it

    # Ctrl-C in the middle of a step: exit 130 at once, and nothing left behind.
    assert w.interrupt() == 130
    assert _wait_gone(second), "Ctrl-C left the step's grandchild running"
    assert "watch: interrupted" in w.output()
    # The history tells a superseded cycle from a failed one.
    runs = json.loads(project.run("runs", "--json", check=True).stdout)
    assert [r["status"] for r in sorted(runs, key=lambda r: r["id"])] == [
        "superseded",
        "interrupted",
    ]


def test_sigterm_stops_like_ctrl_c(project, watch):
    project.toml(
        """
        [targets.slow]
        run = "sleep 300 & echo $! > child.txt; wait"
        """
    )
    w = watch()
    child = _wait_pid(project.root / "child.txt")
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=WAIT) == 130
    assert _wait_gone(child), "SIGTERM left the step's grandchild running"


def test_a_project_file_edit_during_a_build_cancels_only_the_redefined_step(project, watch):
    toml = """
        [targets.slow]
        run = "echo VERSION >> starts.txt; sleep 300 & echo $! > child.txt; wait"

        [targets.other]
        run = "while [ ! -e release ]; do sleep 0.02; done; echo other >> log.txt"
        """
    project.toml(toml.replace("VERSION", "v1"))
    w = watch("slow", "other", "-j", "2")
    first = _wait_pid(project.root / "child.txt")
    w.wait_for(r"^run\s+other")

    project.toml(toml.replace("VERSION", "v2"))
    w.wait_for(r"^watch: eltmake.toml changed during the build: cancelling slow$")
    assert _wait_gone(first)
    (project.root / "release").write_text("")
    line = w.wait_for(r"^watch: cycle 1 ")
    assert "superseded" in line and "re-ran other" in line and "cancelled slow" in line
    second = _wait_pid(project.root / "child.txt", old=first)
    assert project.read("starts.txt").split() == ["v1", "v2"]
    assert w.interrupt() == 130
    assert _wait_gone(second)
    assert project.read("log.txt").split() == ["other"]


def test_a_folder_created_with_its_inputs_in_it(project, watch):
    project.toml(
        """
        [targets.late]
        run = "cat later/deep/*.txt > late.out"
        inputs = ["later/**/*.txt"]
        outputs = ["late.out"]
        """
    )
    w = watch()
    line = w.wait_for(r"^watch: cycle 1 ")  # nothing to read yet: cat fails
    assert "FAILED" in line
    # The folder and the file appear at once, before the watch can watch the new folder.
    (project.root / "later/deep").mkdir(parents=True)
    (project.root / "later/deep/x.txt").write_text("here\n")
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "ok" in line and "re-ran late" in line, w.output()
    assert project.read("late.out") == "here\n"
    assert w.interrupt() == 130


def test_the_edited_target_starts_first(project, watch):
    """With one worker, the target an edit touched is decided and started before the others
    that are out of date too (here: its output deleted, which the watch does not watch),
    whatever their place in the order."""
    project.toml(
        """
        [targets.a_other]
        run = "echo a > a.txt"
        outputs = ["a.txt"]

        [targets.z_edited]
        run = "true"
        inputs = ["z.txt"]
        """
    )
    project.write("z.txt", "1")
    w = watch("-j", "1", "a_other", "z_edited")
    w.wait_for(r"^watch: cycle 1 ok")
    (project.root / "a.txt").unlink()
    edit(project.root / "z.txt", "2")
    w.wait_for(r"^watch: changed: z.txt$")
    first = w.wait_for(r"^run\s")
    assert first.split()[1] == "z_edited", w.output()
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "re-ran a_other, z_edited" in line
    assert w.interrupt() == 130


def test_json_events_per_cycle(project):
    three(project)
    w = Watcher(project.root, "--json")
    try:
        events: list[dict] = []

        def next_event(name: str) -> dict:
            while True:
                line = w.wait_for(r"^\{")
                ev = json.loads(line)
                events.append(ev)
                if ev["event"] == name:
                    return ev

        started = next_event("watch_started")
        assert started["targets"] == ["a", "c", "b", "all"]
        result = next_event("watch_result")
        assert result["cycle"] == 1 and result["status"] == "ok"
        assert result["ran"] == ["a", "c", "b"]
        edit(project.root / "src/a.txt", "a2\n")
        cycle = next_event("watch_cycle")
        assert cycle == {"event": "watch_cycle", "cycle": 2, "changed": ["src/a.txt"]}
        result = next_event("watch_result")
        assert result["ran"] == ["a", "b"] and result["skipped"] == ["c"]
        steps = {e["target"]: e["status"] for e in events if e["event"] == "step"}
        assert steps["c"] == "skipped" and steps["a"] == "built"
        assert any(e["event"] == "build" and e["status"] == "ok" for e in events)
    finally:
        w.close()


def test_a_missing_project_file_is_a_usage_error(project):
    proc = project.run("watch")
    assert proc.returncode == 2
    assert "eltmake.toml: not found" in proc.stderr


@pytest.mark.integration
def test_dbt_model_edit_reruns_that_model_and_what_its_output_changes(project, tools_dir):
    """examples/shop with real dbt: an edit re-runs the dbt target that holds the model; the
    targets below it re-run only when its output changed (early cutoff)."""
    import shutil

    example = Path(__file__).resolve().parent.parent / "examples" / "shop"
    marts = "transform/models/marts/fct_orders.sql"
    staging = "transform/models/staging/stg_orders.sql"
    if not all((example / f).exists() for f in ("eltmake.toml", marts, staging)):
        pytest.skip("examples/shop has no dbt models to edit")
    shutil.copytree(
        example,
        project.root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    project.run("build", check=True, env=env, timeout=1800)
    w = Watcher(project.root, "--plain", env=env)
    try:
        line = w.wait_for(r"^watch: cycle 1 ", timeout=600)
        assert "ok" in line and "re-ran" not in line, w.output()  # all up to date
        w.wait_for(r"^watch: waiting for changes")

        # A comment in a mart: marts re-runs; its tables hold the same rows, so report does not.
        path = project.root / marts
        path.write_text(path.read_text() + "\n-- a comment\n")
        line = w.wait_for(r"^watch: cycle 2 ", timeout=600)
        assert "ok" in line and "re-ran marts;" in line, w.output()
        assert "skipped raw, staging, report" in line

        # A staging model that now yields other rows: staging, then marts, then report.
        path = project.root / staging
        text = path.read_text()
        assert "    status\n" in text
        path.write_text(
            text.replace(
                "    status\n",
                "    case when status = 'returned' then 'completed' else status end as status\n",
            )
        )
        line = w.wait_for(r"^watch: cycle 3 ", timeout=900)
        assert "ok" in line and "re-ran staging, marts, report" in line, w.output()
        assert "skipped raw" in line

        # A dbt compile error fails a step (which one is the dbt plugin's call: dbt refuses to
        # parse the whole project), with dbt's words; the watch waits for the fix.
        path = project.root / marts
        good = path.read_text()
        path.write_text(good.replace("ref('stg_orders')", "ref('stg_ordrs')"))
        line = w.wait_for(r"^watch: cycle 4 ", timeout=600)
        assert "FAILED" in line and "failed " in line, w.output()
        assert "depends on a node named 'stg_ordrs' which was not found" in w.output()
        path.write_text(good)
        line = w.wait_for(r"^watch: cycle 5 ", timeout=600)
        assert " ok " in line and "failed" not in line, w.output()
        assert w.proc.poll() is None
        assert w.interrupt() == 130
    finally:
        w.close()


PROBE_PLUGIN = """
import json

from eltmake.api import Recipe, StepError, StepResult, hookimpl


class Probe(Recipe):
    kind, marker, keys = "probe", "probe", {"probe": (str,)}

    def run(self, ctx):
        with open(ctx.root / "seen.jsonl", "a") as f:
            f.write(json.dumps(ctx.changed_inputs) + "\\n")
        if (ctx.root / "fail").exists():
            raise StepError("asked to fail")
        return StepResult()


@hookimpl
def eltmake_add_recipes():
    return [Probe()]
"""


def test_changed_inputs_tells_a_step_what_moved_since_its_last_recorded_run(project):
    """The field a partial runner (dbt: edited models and descendants) reads; edits across a
    failed run add up."""
    project.write("plugins/probe.py", PROBE_PLUGIN)
    project.toml(
        """
        [targets.p]
        probe = "v1"
        inputs = ["a.txt", "b.txt"]
        """
    )
    project.write("a.txt", "1")
    project.write("b.txt", "1")

    def seen() -> list:
        return [json.loads(line) for line in project.read("seen.jsonl").splitlines()]

    project.run("build", check=True)
    project.write("a.txt", "2")
    project.run("build", check=True)
    (project.root / "fail").write_text("")
    project.write("b.txt", "2")
    project.run("build", check=1)
    (project.root / "fail").unlink()
    project.write("a.txt", "3")
    project.run("build", check=True)
    project.run("build", "--force", "p", check=True)
    project.toml('[targets.p]\nprobe = "v2"\ninputs = ["a.txt", "b.txt"]\n')
    project.write("a.txt", "4")
    project.run("build", check=True)
    assert seen() == [None, ["a.txt"], ["b.txt"], ["a.txt", "b.txt"], None, None]


# --- the pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,junk",
    [
        (".model.sql.swp", True),
        ("model.sql~", True),
        (".#model.sql", True),
        ("#model.sql#", True),
        ("4913", True),
        ("5036", True),
        ("model.sql", False),
        ("2024", False),
        ("orders.jsonl", False),
    ],
)
def test_editor_junk(name, junk):
    assert is_editor_junk(name) is junk


@pytest.mark.parametrize(
    "pattern,path,match",
    [
        ("src/*.txt", "src/a.txt", True),
        ("src/*.txt", "src/sub/a.txt", False),
        ("src/**/*.sql", "src/a.sql", True),
        ("src/**/*.sql", "src/x/y/a.sql", True),
        ("**/*.py", "a.py", True),
        ("data/orders-[0-9].csv", "data/orders-7.csv", True),
        ("data/orders-[!0-9].csv", "data/orders-7.csv", False),
        ("data/?.csv", "data/ab.csv", False),
    ],
)
def test_glob_regex_reads_patterns_like_the_cache(pattern, path, match):
    assert bool(re.match(f"^{glob_regex(pattern)}$", path)) is match


def test_gitignore_reader(tmp_path):
    (tmp_path / ".gitignore").write_text(
        "# comment\n*.log\n/build\ntmp/\n!keep.log\ndocs/**/draft.md\n"
    )
    gi = GitIgnore(tmp_path)
    assert gi.ignored("x.log") and gi.ignored("deep/x.log") and not gi.ignored("keep.log")
    assert gi.ignored("build/out.txt") and not gi.ignored("src/build/out.txt")
    assert gi.ignored("a/tmp/file") and not gi.ignored("a/tmp")
    assert gi.ignored("docs/x/y/draft.md") and not gi.ignored("docs/final.md")


def test_classify_ignores_what_builds_write(tmp_path):
    (tmp_path / "transform").mkdir()
    (tmp_path / "transform/dbt_project.yml").write_text("name: t\n")
    wm = WatchMap(root=tmp_path, loaded=True)
    # what the dbt recipe says its steps write (written_paths)
    wm.written = {"transform/target", "transform/logs", "transform/dbt_packages"}
    wm.add_inputs("orders", ["data/orders.jsonl", "data/*.csv"], from_plugin=False)
    wm.add_inputs("marts", ["transform/models/a.sql"], from_plugin=True)
    wm.outputs = {"out/report.html", "out/dir"}
    wm.config = {"eltmake.toml", ".env"}

    def c(rel, kind=MODIFIED):
        return wm.classify(kind, str(tmp_path / rel))

    assert c("data/orders.jsonl") == ("input", {"orders"})
    assert c("data/new.csv", ADDED) == ("input", {"orders"})
    assert c("eltmake.toml") == ("config", set()) and c(".env") == ("config", set())
    assert c("plugins/notify.py") == ("config", set())
    assert c("out/report.html") is None and c("out/dir/part-1") is None
    assert c(".eltmake/cache/cache.db") is None and c(".git/index") is None
    assert c("transform/target/manifest.json") is None and c("transform/logs/dbt.log") is None
    assert c("transform/models/.a.sql.swp") is None
    assert c("README.md") is None
    # a file added beside a plugin-reported input may be a new model: build, the cache decides
    assert c("transform/models/b.sql", ADDED) == ("input", {"marts"})
    assert c("transform/models/b.sql", DELETED) == ("input", {"marts"})
    assert c("transform/models/b.sql", MODIFIED) is None
    # a folder that appears where inputs may be: its files may have been written before the
    # notifier watched it
    (tmp_path / "data").mkdir()
    (tmp_path / "elsewhere").mkdir()
    assert c("data", ADDED) == ("input", {"orders"})
    assert c("elsewhere", ADDED) is None


def test_declared_inputs_are_watched_even_if_git_ignored(tmp_path):
    (tmp_path / ".gitignore").write_text("data/\nscratch/\n")
    for d in ("data", "scratch", "src"):
        (tmp_path / d).mkdir()
    wm = WatchMap(root=tmp_path, loaded=True, gitignore=GitIgnore(tmp_path))
    wm.add_inputs("orders", ["data/orders.jsonl"], from_plugin=False)
    assert wm.classify(MODIFIED, str(tmp_path / "data/orders.jsonl")) == ("input", {"orders"})
    assert wm.classify(MODIFIED, str(tmp_path / "data/other.jsonl")) is None
    assert wm.watched_top_dirs() == {"data", "src"}


FRESHNESS = """
    [project]
    default = "all"

    [targets.api]
    run = "echo api >> log.txt"
    freshness = "always"

    [targets.soon]
    run = "echo soon >> log.txt"
    freshness = "4s"

    [targets.model]
    run = "cat src/m.txt > out.txt && echo model >> log.txt"
    inputs = ["src/m.txt"]
    outputs = ["out.txt"]

    [targets.all]
    deps = ["api", "soon", "model"]
    """


def test_a_save_does_not_rerun_steps_out_of_date_only_by_freshness(project, watch):
    """freshness = "always" held when the watch started; a save re-runs what it affects. A
    duration freshness still expires, and the watch builds by itself when it does."""
    project.toml(FRESHNESS)
    project.write("src/m.txt", "1\n")
    w = watch()
    w.wait_for(r"^watch: cycle 1 ok")
    edit(project.root / "src/m.txt", "2\n")
    line = w.wait_for(r"^watch: cycle 2 ")
    assert "re-ran model" in line and "api" not in line.split("skipped")[0], line
    assert project.read("log.txt").split().count("api") == 1
    # The 4-second freshness of `soon` expires: a cycle of its own, with no edit.
    w.wait_for(r"^watch: a target's freshness expired")
    line = w.wait_for(r"^watch: cycle 3 ")
    assert "re-ran soon" in line and "model" not in line.split("skipped")[0], line
    assert project.read("log.txt").split().count("api") == 1
    assert w.interrupt() == 130

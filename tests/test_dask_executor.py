"""The Dask executor against real Dask: a LocalCluster started by eltmake, and a `dask scheduler`
with `dask worker` processes started here on free loopback ports.

Every wait is event-driven (a line, a file) with a generous deadline; nothing asserts a duration.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

if os.environ.get("CI"):  # CI installs eltmake[test], which includes Dask: never skip there
    import distributed
else:
    distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.dask
PY = sys.executable
DEADLINE_S = 120.0

CHAIN = """
import os, sys
# The ancestors of this process, each with its command line: proof of where the step ran.
pid, rows = os.getpid(), []
while pid > 1:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
    rows.append(f"{pid} {' '.join(cmd.split())}")  # a bash -c script spans lines
    with open(f"/proc/{pid}/status") as f:
        pid = int(next(line for line in f if line.startswith("PPid:")).split()[1])
with open(sys.argv[1], "w") as f:
    f.write("\\n".join(rows) + "\\n")
"""

SPAN = """
import sys, time
# When the step held the database: its start and end times, in a file of its own.
start = time.time()
time.sleep(0.3)
with open(f"span-{sys.argv[1]}.txt", "w") as f:
    f.write(f"{start} {time.time()}")
"""

MEET = """
import os, sys, time
# Two steps that can only both succeed when they run at the same time.
open(f"here-{sys.argv[1]}", "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(f"here-{sys.argv[2]}"):
    if time.monotonic() > deadline:
        sys.exit(f"{sys.argv[2]} never ran beside me")
    time.sleep(0.02)
"""

PROBE = """
import os, time
from eltmake.api import Recipe, StepError, StepResult, hookimpl


class Probe(Recipe):
    # Saves state, reports progress and a line, then waits for the test's go file.
    kind, marker, keys = "probe", "probe", {"probe": (str,)}

    def run(self, ctx):
        sid = ctx.step.target.config["probe"]
        ctx.state.set(sid, {"bookmark": 1})
        ctx.progress("1 of 2 batches")
        ctx.log(f"state saved by pid {os.getpid()}")
        deadline = time.monotonic() + 120
        while not (ctx.root / "go").exists():
            if time.monotonic() > deadline:
                raise StepError("the test never said go")
            time.sleep(0.02)
        ctx.state.set(sid, {"bookmark": 2})
        return StepResult(stats={"pid": os.getpid()})


@hookimpl
def eltmake_add_recipes():
    return [Probe()]
"""

TOOL = """
import subprocess
from eltmake.api import Recipe, StepError, StepResult, ToolSpec, executable_path, hookimpl

SPEC = ToolSpec("target-jsonl", "target-jsonl==0.1.4", "target-jsonl")


class UseTool(Recipe):
    # Runs a tool that lives in its own environment: it must be installed where the step runs.
    kind, marker, keys = "usetool", "use_tool", {"use_tool": (str,)}

    def tools(self, project, step):
        return [SPEC.name]

    def run(self, ctx):
        exe = executable_path(ctx.project, SPEC)
        if ctx.popen([exe, "--help"], stdout=subprocess.DEVNULL).wait() != 0:
            raise StepError(f"{exe} --help failed")
        ctx.log(f"ran {exe}")
        return StepResult()


@hookimpl
def eltmake_tools(project):
    return [SPEC]


@hookimpl
def eltmake_add_recipes():
    return [UseTool()]
"""

SLEEPER = 'run = "echo $$ > pid.txt; sleep 60 & echo $! > child.txt; wait"'


# --- helpers ------------------------------------------------------------------------------------


def _spawn(argv: list[str], cwd: Path, log: Path | None = None, **kw) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.PIPE  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})},
        **kw,
    )


def _wait(what: str, ready, deadline: float = DEADLINE_S):
    end = time.monotonic() + deadline
    while not (value := ready()):
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead here
    except FileNotFoundError:
        return False


def _text(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


class Cluster:
    """A `dask scheduler` and `dask worker` processes (no nanny: the worker's pid is the process
    that runs the steps), each in a session of its own, on free loopback ports."""

    def __init__(self, folder: Path, workers: int, nthreads: int = 2, env: dict | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        file = folder / "scheduler.json"
        self._start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(file)],
            "scheduler.log",
        )
        _wait("the scheduler file", lambda: _text(file).endswith("}"))
        self.address = json.loads(file.read_text())["address"]
        self.client = distributed.Client(self.address, timeout="30s", set_as_default=False)
        for i in range(workers):
            self._start(
                [
                    "worker",
                    self.address,
                    "--nthreads",
                    str(nthreads),
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    f"w{i}",
                ],
                f"worker{i}.log",
                env,
            )
        _wait("the workers", lambda: len(self.client.nthreads()) == workers)
        self.pids: dict[str, int] = self.client.run(os.getpid)  # worker address -> pid
        assert set(self.pids.values()) <= {p.pid for p in self.procs}

    def _start(self, args: list[str], log: str, env: dict | None = None) -> None:
        argv = [PY, "-m", "dask", *args, "--no-dashboard"]
        self.procs.append(_spawn(argv, self.folder, self.folder / log, env=env or {}))

    def close(self) -> None:
        self.client.close()
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield c
    c.close()


class Build:
    """``eltmake build`` running in the background, its output read line by line."""

    def __init__(self, project, *args: str, env: dict | None = None):
        argv = [PY, "-m", "eltmake", "build", "--plain", *args]
        self.proc = _spawn(argv, project.root, env=env or {})
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, text: str) -> str:
        end = time.monotonic() + DEADLINE_S
        while True:
            line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            assert line is not None, f"the build ended without printing {text!r}:\n" + "\n".join(
                self.seen
            )
            self.seen.append(line)
            if text in line:
                return line

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait(timeout=DEADLINE_S)
        while (line := self.lines.get(timeout=DEADLINE_S)) is not None:
            self.seen.append(line)
        return rc, "\n".join(self.seen)


# --- choosing the executor: no cluster needed ----------------------------------------------------


def test_a_bad_executor_is_one_line_and_exit_2(project):
    project.toml('[targets.a]\nrun = "true"\n')
    proc = project.run("build", "--executor", "dask:/nowhere")
    assert proc.returncode == 2
    assert "'dask:/nowhere' is not an executor" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = project.run("build", env={"ELTMAKE_EXECUTOR": "kubernetes"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("eltmake: error: ELTMAKE_EXECUTOR: 'kubernetes' is not")
    project.toml('[project]\nexecutor = "tcp://host"\n[targets.a]\nrun = "true"\n')
    proc = project.run("build")
    assert proc.returncode == 2
    assert proc.stderr.startswith("eltmake: error: eltmake.toml: project.executor: 'tcp://host'")
    assert "Traceback" not in proc.stderr


def test_the_option_beats_the_environment_beats_the_project_file(project):
    # Nothing listens on port 1: the project's executor fails at once, with one line.
    project.toml('[project]\nexecutor = "dask://127.0.0.1:1"\n[targets.a]\nrun = "true"\n')
    proc = project.run("build")
    assert proc.returncode == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert project.run("build", "--executor", "local").returncode == 0
    assert project.run("build", "-B", env={"ELTMAKE_EXECUTOR": "local"}).returncode == 0
    proc = project.run(
        "build", "-B", "--executor", "dask://127.0.0.1:1", env={"ELTMAKE_EXECUTOR": "local"}
    )
    assert proc.returncode == 2


def test_ordinary_builds_and_version_never_import_dask(project):
    project.toml('[targets.a]\nrun = "true"\n')
    code = (
        "import sys\nfrom eltmake.cli import main\nrc = main(sys.argv[1:])\n"
        "print('DASK' if {'dask', 'distributed'} & set(sys.modules) else 'NO-DASK', file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    for args in (["--version"], ["build", "--plain"], ["build", "-B", "--executor", "local"]):
        proc = subprocess.run(
            [PY, "-c", code, *args], cwd=project.root, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip().endswith("NO-DASK"), (args, proc.stderr)


def test_without_distributed_the_hint_is_one_line(project, tmp_path):
    project.toml('[targets.a]\nrun = "true"\n')
    fake = tmp_path / "no-dask"
    fake.mkdir()
    (fake / "distributed.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'distributed'\", name='distributed')\n"
    )
    proc = project.run("build", "--executor", "dask", env={"PYTHONPATH": str(fake)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "eltmake: error: --executor: the Dask executor needs Dask distributed: "
        "pip install 'eltmake[dask]'"
    )


# --- a LocalCluster started by eltmake -----------------------------------------------------------


def test_local_cluster_runs_steps_in_worker_processes(project):
    project.toml(
        """
        [project]
        executor = "dask"

        [targets.chain]
        run = ["python", "chain.py", "chain.txt"]
        outputs = ["chain.txt"]
        """
    )
    project.write("chain.py", CHAIN)
    build = Build(project)
    rc, out = build.finish()
    assert rc == 0, out
    assert "executor: a local Dask cluster" in out
    rows = project.read("chain.txt").splitlines()
    parent_pid, parent_cmd = rows[1].split(" ", 1)
    # The step's parent is a worker process that eltmake started, not eltmake itself.
    assert int(parent_pid) != build.proc.pid
    assert "multiprocessing" in parent_cmd
    assert int(rows[2].split()[0]) == build.proc.pid
    # The coordinator recorded the result: the next build skips the step, without a cluster.
    statuses = project.statuses("--executor", "local")
    assert statuses == {"chain": "skipped"}


def test_ctrl_c_on_a_terminal_stops_local_cluster_steps(project):
    project.toml(f'[project]\nexecutor = "dask"\n[targets.slow]\n{SLEEPER}\n')
    build = Build(project)
    child = int(_wait("the step's child", lambda: _text(project.root / "child.txt")))
    # A terminal sends Ctrl-C to the whole process group: eltmake and its cluster's workers.
    os.killpg(build.proc.pid, signal.SIGINT)
    rc, out = build.finish()
    assert rc == 130, out
    _wait("the step's sleep to end", lambda: not _alive(child))
    assert "cancelled slow" in out
    assert "KeyboardInterrupt" not in out and "died" not in out  # the workers stayed up


# --- a `dask scheduler` and `dask worker` processes ------------------------------------------------


def test_steps_run_under_the_dask_worker(project, cluster):
    project.toml(
        """
        [targets.chain]
        run = ["python", "chain.py", "chain.txt"]
        outputs = ["chain.txt"]
        """
    )
    project.write("chain.py", CHAIN)
    events = project.events("build", "--executor", cluster.address.replace("tcp://", "dask://"))
    assert [e["status"] for e in events if e["event"] == "step"] == ["built"]
    pids = [int(row.split()[0]) for row in project.read("chain.txt").splitlines()]
    assert pids[1] in cluster.pids.values()  # its parent: a `dask worker` started above


def test_output_and_state_arrive_while_the_step_runs(project, cluster):
    project.toml(
        """
        [targets.probe]
        probe = "probe-state"
        """
    )
    project.write("plugins/probe.py", PROBE)
    build = Build(project, "-v", "--executor", cluster.address)
    line = build.wait_for_line("state saved by pid")
    # The step waits for the go file, so this line came while it ran, and so did its state.
    assert build.proc.poll() is None
    assert int(line.rsplit(" ", 1)[1]) in cluster.pids.values()
    shown = project.run("state", "show", "probe-state", check=True).stdout
    assert json.loads(shown) == {"bookmark": 1}
    (project.root / "go").touch()
    rc, out = build.finish()
    assert rc == 0, out
    assert json.loads(project.run("state", "show", "probe-state", check=True).stdout) == {
        "bookmark": 2
    }


def test_steps_that_share_a_lock_never_overlap_and_others_do(project, cluster):
    project.toml(
        """
        [targets.a]
        run = ["python", "span.py", "a"]
        locks = ["warehouse.db"]
        [targets.b]
        run = ["python", "span.py", "b"]
        locks = ["warehouse.db"]
        [targets.x]
        run = ["python", "meet.py", "x", "y"]
        [targets.y]
        run = ["python", "meet.py", "y", "x"]
        """
    )
    project.write("span.py", SPAN)
    project.write("meet.py", MEET)
    statuses = project.statuses("-j", "4", "--executor", cluster.address)
    assert statuses == {"a": "built", "b": "built", "x": "built", "y": "built"}
    a0, a1 = map(float, project.read("span-a.txt").split())
    b0, b1 = map(float, project.read("span-b.txt").split())
    assert a1 <= b0 or b1 <= a0, "two steps that share a lock overlapped"


def test_a_lock_held_elsewhere_on_the_cluster_makes_the_step_wait(project, cluster):
    project.toml('[targets.a]\nrun = ["python", "span.py", "a"]\nlocks = ["warehouse.db"]\n')
    project.write("span.py", SPAN)
    # Another coordinator (another build of this project) holds the lock on the cluster.
    name = f"eltmake:{project.root.resolve()}:warehouse.db"
    lock = distributed.Lock(name, scheduler_rpc=cluster.client.scheduler, loop=cluster.client.loop)
    assert lock.acquire(timeout=30)
    try:
        build = Build(project, "-v", "--executor", cluster.address)
        build.wait_for_line("waiting for the lock 'warehouse.db'")
        assert not (project.root / "span-a.txt").exists()
    finally:
        lock.release()
    rc, out = build.finish()
    assert rc == 0, out
    assert (project.root / "span-a.txt").exists()


def test_a_worker_that_would_use_another_store_refuses_the_step(project, tmp_path):
    # This worker was told to keep state in a shared store; the build keeps it in the project.
    env = {"ELTMAKE_STORE": "postgresql://eltmake@127.0.0.1:1/elsewhere"}
    lone = Cluster(tmp_path / "lone", workers=1, nthreads=1, env=env)
    try:
        project.toml('[targets.a]\nrun = "touch ran"\n')
        events = project.events("build", "--executor", lone.address, check=1)
        step = next(e for e in events if e["event"] == "step")
        assert step["status"] == "failed"
        assert "would keep state in another store than this machine" in step["error"]
        assert not (project.root / "ran").exists()
    finally:
        lone.close()


def test_ctrl_c_stops_the_remote_processes(project, cluster):
    project.toml(f"[targets.slow]\n{SLEEPER}\n")
    build = Build(project, "--executor", cluster.address)
    child = int(_wait("the step's child", lambda: _text(project.root / "child.txt")))
    shell = int(_text(project.root / "pid.txt"))
    with open(f"/proc/{shell}/status") as f:
        parent = int(next(line for line in f if line.startswith("PPid:")).split()[1])
    assert parent in cluster.pids.values()
    build.proc.send_signal(signal.SIGINT)
    rc, out = build.finish()
    assert rc == 130, out
    _wait("the remote sleep to end", lambda: not _alive(child))
    assert project.run("status").returncode == 1  # nothing recorded for the stopped step
    assert "interrupted" in project.run("runs", check=True).stdout


def test_a_killed_worker_fails_its_step_naming_it(project, tmp_path):
    lone = Cluster(tmp_path / "lone", workers=1, nthreads=1)
    try:
        project.toml(f"[targets.slow]\n{SLEEPER}\n")
        build = Build(project, "--json", "--executor", lone.address)
        child = int(_wait("the step's child", lambda: _text(project.root / "child.txt")))
        (address, pid), *_ = lone.pids.items()
        os.kill(pid, signal.SIGKILL)
        rc, out = build.finish()
        assert rc == 1, out
        step = next(json.loads(s) for s in out.splitlines() if s.startswith('{"event": "step"'))
        assert step["status"] == "failed"
        assert f"Dask worker {address} died while running this step" in step["error"]
        assert "\n" not in step["error"]
        assert project.run("status").returncode == 1  # no record: it runs again next time
        # The worker had no chance to stop its step's processes: eltmake's guard process did.
        _wait("the dead worker's step processes to end", lambda: not _alive(child))
    finally:
        lone.close()
        if (project.root / "pid.txt").exists():  # whatever the outcome, leave nothing behind
            try:
                os.killpg(int(_text(project.root / "pid.txt")), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if "child" in locals():
            _wait("the orphan to end", lambda: not _alive(child))


@pytest.mark.integration
def test_a_tool_missing_on_the_worker_is_installed_there(project, tmp_path, tools_dir):
    # This worker keeps its tools in a folder of its own, where the coordinator installed none.
    worker_tools = tmp_path / "worker-tools"
    lone = Cluster(tmp_path / "lone", workers=1, env={"ELTMAKE_TOOLS_DIR": str(worker_tools)})
    try:
        project.toml('[targets.t]\nuse_tool = "yes"\n')
        project.write("plugins/tool.py", TOOL)
        build = Build(
            project, "-v", "--executor", lone.address, env={"ELTMAKE_TOOLS_DIR": tools_dir}
        )
        rc, out = build.finish()
        assert rc == 0, out
        assert "t | installing target-jsonl" in out  # on the worker, its output streamed back
        assert f"t | ran {worker_tools}/target-jsonl-" in out
    finally:
        lone.close()

"""The warm dbt of watch mode (eltmake_dbt.warm), with real dbt and real DuckDB files.

What matters: a warm rebuild leaves exactly what a cold one leaves (tables row for row, recorded
fingerprints); the worker is started afresh when what it caches may be stale, and after a crash,
a hang or a cancelled run, with the step re-run cold when the worker could not finish it; dbt's
lines arrive while it runs; and the worker never outlives the watch. No timing is asserted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from test_watch import Watcher, _wait_gone

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shop"
PIN = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"
WAIT = 600  # a loaded CI machine; dbt's first start may install it
PID = re.compile(r"warm dbt \(pid (\d+),")

pytestmark = pytest.mark.integration


def _shop(root: Path, tools_dir: str, project_run) -> None:
    shutil.copytree(
        EXAMPLE,
        root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    project_run("build", check=True, env={"ELTMAKE_TOOLS_DIR": tools_dir}, timeout=1800)


def _tables(db: Path) -> dict[str, list]:
    """Every dbt-built relation of the warehouse, its rows sorted: row-for-row comparison."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema not in ('raw', 'information_schema') order by all"
        ).fetchall()
        return {
            f"{s}.{n}": con.execute(f'select * from "{s}"."{n}" order by all').fetchall()
            for s, n in names
        }
    finally:
        con.close()


def _fingerprints(root: Path) -> dict[str, str | None]:
    from eltmake.state import StateStore

    store = StateStore(root / ".eltmake" / "state.db")
    try:
        records = store.records("")
    finally:
        store.close()
    return {name: records[name]["fingerprint"] for name in ("staging", "marts")}


def _pids(text: str) -> list[int]:
    return [int(p) for p in PID.findall(text)]


def test_a_warm_rebuild_leaves_what_a_cold_one_leaves(tmp_path, tools_dir):
    """The same two edits to examples/shop, rebuilt by a watch (warm) and by `eltmake build`
    (cold): the same tables, row for row, and the same recorded fingerprints."""
    from conftest import Project

    warm, cold = Project(tmp_path / "warm"), Project(tmp_path / "cold")
    for p in (warm, cold):
        _shop(p.root, tools_dir, p.run)
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    staging = "transform/models/staging/stg_orders.sql"
    marts = "transform/models/marts/fct_orders.sql"

    def edit_staging(root: Path) -> None:
        path = root / staging
        text = path.read_text()
        assert "    status\n" in text
        path.write_text(
            text.replace(
                "    status\n",
                "    case when status = 'returned' then 'completed' else status end as status\n",
            )
        )

    def edit_marts(root: Path) -> None:
        path = root / marts
        path.write_text(path.read_text() + "\n-- a comment\n")

    w = Watcher(warm.root, "--plain", "-v", env=env)
    try:
        w.wait_for(r"^watch: waiting for changes", timeout=WAIT)
        edit_staging(warm.root)
        line = w.wait_for(r"^watch: cycle 2 ", timeout=WAIT)
        assert " ok " in line and "re-ran staging, marts, report" in line, w.output()
        edit_marts(warm.root)
        line = w.wait_for(r"^watch: cycle 3 ", timeout=WAIT)
        assert " ok " in line and "re-ran marts;" in line, w.output()
        out = w.output()
        # Each dbt step of both cycles ran in the one warm worker.
        assert len(_pids(out)) == 3 and len(set(_pids(out))) == 1, out
        assert "running dbt cold" not in out and "no table checksums" not in out
        assert "starting afresh" not in out
        assert w.interrupt() == 130
        assert _wait_gone(_pids(out)[0]), "the warm dbt outlived the watch"
    finally:
        w.close()

    edit_staging(cold.root)
    edit_marts(cold.root)
    proc = cold.run("build", "-v", "--plain", check=True, env=env)
    assert "warm dbt" not in proc.stdout  # a build is cold
    assert _tables(warm.root / "warehouse.duckdb") == _tables(cold.root / "warehouse.duckdb")
    fps = _fingerprints(warm.root)
    assert all(fps.values()) and fps == _fingerprints(cold.root)


SLOW = """\
import os, sys, time

def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("a")  # downstream of a: an edit to a.sql runs this model too
    assert sys.stdin.read() == ""  # as for a cold dbt: an empty stdin, never eltmake's requests
    sys.path.insert(0, {lib!r})
    import helper  # a helper module of the project: imported afresh by every run, warm or cold
    if os.path.exists({crash!r}):  # a worker that dies in the middle of a command
        os.remove({crash!r})
        os._exit(7)
    deadline = time.time() + 120
    while os.path.exists({hold!r}) and time.time() < deadline:  # a run that takes a while
        time.sleep(0.05)
    return session.sql(f"select {{helper.Y}} as y")
"""


@pytest.fixture
def small(project, tools_dir):
    """A dbt project with a plain model and a Python model that can crash or wait on demand."""
    project.toml(
        f"""
        [transformers.dbt]
        pip_url = "{PIN}"
        project_dir = "transform"
        warehouse = "wh.duckdb"

        [targets.m]
        transform = "dbt"
        """
    )
    project.write("transform/dbt_project.yml", "name: t\nprofile: t\nconfig-version: 2\n")
    project.write("transform/models/a.sql", "select 1 as x\n")
    hold, crash = project.root / "hold", project.root / "crash"
    lib = project.root / "transform" / "lib"
    project.write("transform/lib/helper.py", "Y = 2\n")
    project.write(
        "transform/models/slow.py", SLOW.format(hold=str(hold), crash=str(crash), lib=str(lib))
    )
    project.run("build", check=True, env={"ELTMAKE_TOOLS_DIR": tools_dir}, timeout=1800)
    return project


def _x(project, query: str = "select x from main.a") -> int:
    import duckdb

    con = duckdb.connect(str(project.root / "wh.duckdb"), read_only=True)
    try:
        return con.execute(query).fetchone()[0]
    finally:
        con.close()


def test_the_worker_starts_afresh_after_a_crash_a_hang_and_a_project_change(small, tools_dir):
    env = {"ELTMAKE_TOOLS_DIR": tools_dir, "ELTMAKE_DBT_WARM_START_S": "20"}
    a = small.root / "transform/models/a.sql"
    w = Watcher(small.root, "--plain", "-v", env=env)
    n = 1

    def cycle(value: int) -> str:
        nonlocal n
        mark = len(w.lines)
        a.write_text(f"select {value} as x\n")
        n += 1
        line = w.wait_for(rf"^watch: cycle {n} ", timeout=WAIT)
        assert " ok " in line and "re-ran m" in line, w.output()
        assert _x(small) == value
        return "\n".join(w.lines[mark:])

    try:
        w.wait_for(r"^watch: waiting for changes", timeout=WAIT)
        first = _pids(cycle(2))
        assert first, w.output()
        assert _pids(cycle(3)) == first  # the same worker, kept warm
        # A helper module the Python model imports, edited: seen, as a cold dbt would see it.
        (small.root / "transform/lib/helper.py").write_text("Y = 5\n")
        assert _pids(cycle(33)) == first
        assert _x(small, "select y from main.slow") == 5

        # Killed between runs: a new worker, saying why.
        os.kill(first[0], signal.SIGKILL)
        out = cycle(4)
        assert "warm dbt: starting afresh (it had exited)" in out, out
        second = _pids(out)
        assert second and second != first

        # Hung (stopped): the command does not start in time; it runs cold and is right.
        os.kill(second[0], signal.SIGSTOP)
        out = cycle(5)
        assert (
            "the warm dbt was silent for 20s and did not start the command; running dbt cold" in out
        ), out
        assert _wait_gone(second[0]), "the hung worker was left behind"

        # Dies in the middle of a command: the step runs again cold, and is right.
        (small.root / "crash").touch()
        out = cycle(6)
        assert "the warm dbt exited in the middle of the command (exit code 7)" in out, out
        assert "running dbt cold" in out and not (small.root / "crash").exists()

        # A Jinja edit (a config block): the parse that tells what the target selects is warm.
        mark = len(w.lines)
        a.write_text("{{ config(tags=['t']) }}\nselect 8 as x\n")
        n += 1
        line = w.wait_for(rf"^watch: cycle {n} ", timeout=WAIT)
        out = "\n".join(w.lines[mark:])
        assert " ok " in line and "(its files changed, in the warm dbt)" in out, w.output()
        assert _x(small) == 8

        # What a worker caches changed (dbt_project.yml): a new worker, saying why.
        before = _pids(cycle(7))
        project_yml = small.root / "transform/dbt_project.yml"
        project_yml.write_text(project_yml.read_text() + "vars:\n  unused: 1\n")
        n += 1
        line = w.wait_for(rf"^watch: cycle {n} ", timeout=WAIT)
        out = w.output()
        assert " ok " in line, out
        assert "warm dbt: starting afresh (dbt_project.yml changed)" in out, out
        assert _pids(out)[-1] != before[-1]
        assert w.interrupt() == 130
        assert _wait_gone(_pids(out)[-1]), "the warm dbt outlived the watch"
    finally:
        w.close()


def test_an_edit_cancels_a_warm_run_whose_lines_arrive_as_dbt_prints_them(small, tools_dir):
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    a = small.root / "transform/models/a.sql"
    hold = small.root / "hold"
    w = Watcher(small.root, "--plain", "-v", env=env)
    try:
        w.wait_for(r"^watch: waiting for changes", timeout=WAIT)
        hold.touch()
        a.write_text("select 10 as x\n")
        # The Python model waits for `hold` to go: this line came while dbt was running.
        w.wait_for(r"START python table model main\.slow", timeout=WAIT)
        assert w.proc.poll() is None and hold.exists()
        busy = _pids(w.output())[-1]

        a.write_text("select 11 as x\n")  # an edit during the warm run cancels it
        w.wait_for(r"changed during the build: cancelling m$", timeout=WAIT)
        assert _wait_gone(busy), "the cancelled warm run's worker is still running"
        hold.unlink()
        line = w.wait_for(r"^watch: cycle 3 ", timeout=WAIT)
        assert " ok " in line and "re-ran m" in line, w.output()
        assert _x(small) == 11  # the next cycle started from the new file
        warm = _pids(w.output())[-1]
        assert warm != busy
        # kill -9 of eltmake: its warm dbt goes with it (the guard of every child process).
        os.kill(warm, 0)  # alive, kept for the next edit
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
        assert _wait_gone(warm), "the warm dbt outlived kill -9 of eltmake"
    finally:
        w.close()


def test_a_worker_over_its_memory_bound_is_replaced_after_its_command(small, tools_dir):
    env = {"ELTMAKE_TOOLS_DIR": tools_dir, "ELTMAKE_DBT_WARM_MAX_MB": "1"}
    a = small.root / "transform/models/a.sql"
    w = Watcher(small.root, "--plain", "-v", env=env)
    try:
        w.wait_for(r"^watch: waiting for changes", timeout=WAIT)
        pids = []
        for i, value in enumerate((20, 21), start=2):
            a.write_text(f"select {value} as x\n")
            line = w.wait_for(rf"^watch: cycle {i} ", timeout=WAIT)
            assert " ok " in line, w.output()
            assert _x(small) == value
            pids.append(_pids(w.output())[-1])
        assert re.search(r"warm dbt: holds \d+ MB after the command \(limit 1\)", w.output())
        assert pids[0] != pids[1]
        assert _wait_gone(pids[0])
    finally:
        w.close()


def test_warm_false_keeps_watch_cold(small, tools_dir):
    toml = small.root / "eltmake.toml"
    toml.write_text(
        toml.read_text().replace('warehouse = "wh.duckdb"', 'warehouse = "wh.duckdb"\nwarm = false')
    )
    w = Watcher(small.root, "--plain", "-v", env={"ELTMAKE_TOOLS_DIR": tools_dir})
    try:
        w.wait_for(r"^watch: waiting for changes", timeout=WAIT)
        (small.root / "transform/models/a.sql").write_text("select 30 as x\n")
        line = w.wait_for(r"^watch: cycle 2 ", timeout=WAIT)
        assert " ok " in line and "re-ran m" in line, w.output()
        assert "warm dbt" not in w.output()
        assert _x(small) == 30
    finally:
        w.close()

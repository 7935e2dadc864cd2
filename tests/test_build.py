"""`eltmake build` and its tools: only the selected steps' tools are needed, and a missing one
fails its steps like any failure (with events), not the whole build up front."""

import json

TOML = """
[extractors.tap-nope]
executable = "tap-nonexistent-anywhere"

[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = { path = "warehouse.duckdb" }

[targets.other]
run = "echo hi > other.txt"
outputs = ["other.txt"]

[targets.raw]
extract = "tap-nope"
load = "duckdb"

[targets.after]
run = "true"
deps = ["raw", "other"]
"""


def test_a_missing_tool_blocks_only_its_steps(project):
    project.toml(TOML)
    project.run("build", "other", check=True)  # raw's tool is not needed for this
    assert project.read("other.txt") == "hi\n"
    proc = project.run("build", "-k", "--json")
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    steps = {e["target"]: e for e in events if e["event"] == "step"}
    assert steps["raw"]["status"] == "failed"
    assert "tap-nonexistent-anywhere" in steps["raw"]["error"]
    assert steps["after"]["status"] == "upstream_failed"
    assert steps["other"]["status"] == "skipped"
    assert events[-1] == {**events[-1], "event": "build", "status": "failed"}


def test_a_dotenv_value_overridden_by_the_environment_is_what_the_key_holds(project):
    """A command sees the real environment's value over .env's: that value re-runs it."""
    project.toml('[targets.a]\nrun = "echo $GREETING >> seen.txt"\n')
    project.write(".env", "GREETING=hello\n")
    project.run("build", check=True, env={"GREETING": "from-env"})
    assert project.statuses(env={"GREETING": "from-env"}) == {"a": "skipped"}
    assert project.statuses(env={"GREETING": "changed"}) == {"a": "built"}
    assert project.read("seen.txt").split() == ["from-env", "changed"]


def test_a_relative_executable_is_found_from_the_project_folder(project, tmp_path_factory):
    """`executable = "./tool.sh"` with -C DIR: looked up in DIR, not where eltmake was started."""
    from eltmake import toolenv
    from eltmake.project import load_project
    from eltmake.step import ToolSpec

    project.toml('[targets.a]\nrun = "true"\n')
    tool = project.write("tool.sh", "#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    import os

    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        loaded = load_project(project.root)
        found = toolenv.executable_path(loaded, ToolSpec("t", None, "./tool.sh"))
    finally:
        os.chdir(cwd)
    assert found == str(project.root / "tool.sh")

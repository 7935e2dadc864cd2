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

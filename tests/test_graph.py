"""Graph selection and pictures."""

import json


def diamond(project):
    project.toml(
        """
        [project]
        default = "top"
        [targets.base]
        run = "true"
        [targets.left]
        run = "true"
        deps = ["base"]
        [targets.right]
        run = "true"
        deps = ["base"]
        [targets.top]
        deps = ["left", "right"]
        [targets.lonely]
        run = "true"
        """
    )


def test_build_selects_the_target_and_its_dependencies(project):
    diamond(project)
    assert set(project.statuses()) == {"base", "left", "right", "top"}  # not lonely
    assert set(project.statuses("left")) == {"base", "left"}


def test_order_is_topological(project):
    diamond(project)
    events = project.events("build", "top")
    order = [e["target"] for e in events if e["event"] == "step"]
    assert order.index("base") < order.index("left") < order.index("top")
    assert order.index("right") < order.index("top")


def test_graph_formats(project):
    diamond(project)
    data = json.loads(project.run("graph", "--format", "json", check=True).stdout)
    assert {n["name"] for n in data["nodes"]} == {"base", "left", "right", "top", "lonely"}
    assert {"from": "base", "to": "left", "inferred": False} in data["edges"]
    dot = project.run("graph", "--format", "dot", check=True).stdout
    assert '"base" -> "left";' in dot
    mermaid = project.run("graph", "--format", "mermaid", check=True).stdout
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid
    tree = project.run("graph", check=True).stdout
    assert "top" in tree and "└──" in tree and "lonely" in tree


def test_list(project):
    diamond(project)
    out = project.run("list", check=True).stdout
    assert "* top" in out and "left" in out
    data = json.loads(project.run("list", "--json", check=True).stdout)
    assert next(t for t in data if t["name"] == "top")["deps"] == ["left", "right"]


def test_no_default_builds_every_leaf(project):
    project.toml(
        '[targets.a]\nrun = "true"\n[targets.b]\nrun = "true"\ndeps = ["a"]\n[targets.c]\nrun = "true"\n'
    )
    assert set(project.statuses()) == {"a", "b", "c"}


def test_graph_shape_cache_follows_edits(project):
    diamond(project)
    project.run("build", check=True)
    # Add a cycle after the shape was cached: it must still be found.
    text = (
        (project.root / "eltmake.toml")
        .read_text()
        .replace('[targets.base]\nrun = "true"', '[targets.base]\nrun = "true"\ndeps = ["top"]')
    )
    (project.root / "eltmake.toml").write_text(text)
    proc = project.run("build")
    assert proc.returncode == 2 and "cycle" in proc.stderr

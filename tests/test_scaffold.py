"""`eltmake init`: a starter project that builds as it is."""

import duckdb
import pytest


def test_init_writes_a_valid_project(project):
    project.run("init", ".", "--name", "mine", check=True)
    for rel in ("eltmake.toml", "data/people.jsonl", "scripts/report.py", ".gitignore"):
        assert (project.root / rel).exists(), rel
    assert 'name = "mine"' in project.read("eltmake.toml")
    listed = project.run("list", check=True).stdout
    assert "people" in listed and "singer" in listed and "report" in listed


def test_init_never_overwrites(project):
    project.toml("[targets.mine]\nrun = 'true'\n")
    proc = project.run("init", ".")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert "mine" in project.read("eltmake.toml")


@pytest.mark.integration
def test_init_project_builds_into_duckdb(project, tools_dir):
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    project.run("init", ".", check=True)
    project.run("build", check=True, env=env)
    con = duckdb.connect(str(project.root / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), sum(id) FROM raw.people").fetchone() == (6, 21)
    con.close()
    assert project.read("out/report.csv").splitlines()[0] == "city,people"
    assert "Boston,2" in project.read("out/report.csv")
    assert project.statuses(env=env) == {"people": "skipped", "report": "skipped", "all": "skipped"}


def test_init_in_an_existing_repository_adds_to_its_gitignore(project):
    project.write(".gitignore", "node_modules/\n*.log\n")
    out = project.run("init", ".", check=True).stdout
    lines = project.read(".gitignore").splitlines()
    assert lines[:2] == ["node_modules/", "*.log"]  # theirs kept, first
    assert ".eltmake/" in lines and "*.duckdb" in lines and ".env" in lines
    assert "added .eltmake/" in out
    again = project.read(".gitignore")
    project.run("init", "sub", check=True)  # another project: its own .gitignore
    assert project.read(".gitignore") == again

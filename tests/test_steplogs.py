"""Step logs on disk: what ``eltmake build`` keeps of each step's output, with secrets masked."""

from __future__ import annotations

from pathlib import Path

from eltmake.redact import Redactor
from eltmake.steplogs import KEEP_RUNS, prune, read_log
from eltmake.ui.masking import mask, secret_values

PROJECT = """
[project]
name = "logs"

[targets.talk]
run = "echo hello; echo token=$API_TOKEN; echo key=$SORT_KEY"
env = { API_TOKEN = "${MY_TOKEN}", SORT_KEY = "id" }

[targets.quiet]
run = "true"
outputs = []
"""


def test_a_build_keeps_each_steps_output_with_secrets_masked(project):
    project.toml(PROJECT)
    env = {"MY_TOKEN": "tok-9f8e7d"}
    p = project.run("build", "-v", "--plain", check=True, env=env)
    assert "tok-9f8e7d" not in p.stdout and "token=****" in p.stdout
    log = project.root / ".eltmake" / "logs" / "1" / "talk.log"
    assert log.read_text() == "hello\ntoken=****\nkey=id\n"  # "id" is too short to mask
    assert not (project.root / ".eltmake" / "logs" / "1" / "quiet.log").exists()
    # A no-op build writes no log folder at all.
    project.run("build", check=True, env=env)
    assert sorted(p.name for p in (project.root / ".eltmake" / "logs").iterdir()) == ["1"]


def test_a_failed_steps_tail_and_error_are_masked(project):
    project.toml(
        """
        [targets.bad]
        run = "echo password is $DB_PASSWORD; exit 3"
        env = { DB_PASSWORD = "hunter2-long" }
        """
    )
    p = project.run("build", "--plain", check=1)
    assert "hunter2-long" not in p.stdout + p.stderr
    assert "password is ****" in p.stdout
    assert read_log(project.root / ".eltmake", 1, "bad") == "password is ****\n"


def test_only_the_last_builds_keep_logs(tmp_path: Path):
    logs = tmp_path / "logs"
    for i in range(1, KEEP_RUNS + 6):
        (logs / str(i)).mkdir(parents=True)
    prune(logs)
    kept = sorted(int(p.name) for p in logs.iterdir())
    assert kept == list(range(6, KEEP_RUNS + 6))


def test_secret_rules():
    table = {"env": {"API_TOKEN": "abc123", "SORT_KEY": "x"}, "nested": [{"password": "pw1"}]}
    assert sorted(secret_values(table)) == ["abc123", "pw1", "x"]
    redact = Redactor(secret_values(table))
    assert redact("abc123 and pw1 and x") == "**** and **** and x"  # one letter stays
    assert mask(table, redact) == {
        "env": {"API_TOKEN": "****", "SORT_KEY": "****"},
        "nested": [{"password": "****"}],
    }


def test_read_log_tail_of_a_large_log(tmp_path: Path):
    from eltmake.steplogs import log_file

    path = log_file(tmp_path, 7, "a/b")
    assert path.parent == tmp_path / "logs" / "7"  # a slash in a name stays in the folder
    path.parent.mkdir(parents=True)
    path.write_text("".join(f"line {i} " + "x" * 100 + "\n" for i in range(10_000)))
    tail = read_log(tmp_path, 7, "a/b", tail=200).splitlines()
    assert len(tail) == 200 and tail[-1].startswith("line 9999 ")
    assert read_log(tmp_path, 7, "nope") is None

"""The plugin contract: a project plugin adds a recipe kind without touching eltmake."""

import inspect
import subprocess
import sys

from eltmake import hookspecs

PLUGIN = '''
"""A project plugin: `greet = "NAME"` targets write a greeting file."""
from pathlib import Path

from eltmake.api import ConfigError, Recipe, StepResult, hookimpl


class Greet(Recipe):
    kind = "greet"
    marker = "greet"
    keys = {"greet": (str,), "loud": (bool,)}

    def validate(self, project, target):
        if not target.config["greet"]:
            raise ConfigError(f"{project.file.name}: targets.{target.name}.greet: say who to greet")

    def run(self, ctx):
        text = f"hello {ctx.step.target.config['greet']}"
        if ctx.step.target.config.get("loud"):
            text = text.upper()
        Path(ctx.root, ctx.step.outputs[0]).write_text(text)
        ctx.log(text)
        return StepResult(stats={"greetings": 1})


@hookimpl
def eltmake_add_recipes():
    return [Greet()]


@hookimpl
def eltmake_step_finished(build, step, outcome):
    with open(Path(build.project.root, "audit.log"), "a") as f:
        f.write(f"{step.name} {outcome.status}\\n")
'''


def test_project_plugin_adds_a_recipe(project):
    project.write("plugins/greet.py", PLUGIN)
    project.toml(
        """
        [targets.hi]
        greet = "world"
        outputs = ["hi.txt"]
        """
    )
    assert project.statuses() == {"hi": "built"}
    assert project.read("hi.txt") == "hello world"
    assert project.read("audit.log") == "hi built\n"
    assert project.statuses() == {"hi": "skipped"}
    project.toml('[targets.hi]\ngreet = "world"\nloud = true\noutputs = ["hi.txt"]\n')
    assert project.statuses() == {"hi": "built"}
    assert project.read("hi.txt") == "HELLO WORLD"


def test_plugin_keys_are_type_checked_and_validated(project):
    project.write("plugins/greet.py", PLUGIN)
    project.toml('[targets.hi]\ngreet = "world"\nloud = "yes"\n')
    proc = project.run("build")
    assert proc.returncode == 2 and "targets.hi.loud must be true or false" in proc.stderr
    project.toml('[targets.hi]\ngreet = ""\n')
    proc = project.run("build")
    assert proc.returncode == 2 and "say who to greet" in proc.stderr


def test_plugin_module_from_project_plugins_list(project):
    project.write("my_plugins/greeter.py", PLUGIN)
    project.write("my_plugins/__init__.py", "")
    project.toml(
        '[project]\nplugins = ["my_plugins.greeter"]\n[targets.hi]\ngreet = "you"\noutputs = ["hi.txt"]\n'
    )
    project.run("build", check=True)
    assert project.read("hi.txt") == "hello you"


def test_broken_project_plugin_is_one_line(project):
    project.write("plugins/broken.py", "import no_such_module_here\n")
    project.toml('[targets.a]\nrun = "true"\n')
    proc = project.run("build")
    assert proc.returncode == 2
    assert (
        "plugins/broken.py: plugin failed to load" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_plugins_command_lists_builtins_and_project_plugins(project):
    project.write("plugins/greet.py", PLUGIN)
    project.toml('[targets.hi]\ngreet = "x"\n')
    out = project.run("plugins", check=True).stdout
    assert "command  (entry point eltmake_command" in out
    assert "project:greet  (plugins/greet.py)" in out
    assert "eltmake_add_recipes" in out


COMMAND_PLUGIN = """
from eltmake.api import hookimpl


def cmd_hello(args):
    print(f"hello {args.who} from {args.project_dir}")
    return 0


@hookimpl
def eltmake_add_commands(commands):
    p = commands.add("hello", help="say hello", func=cmd_hello)
    p.add_argument("who")
"""


def test_project_plugin_adds_a_command_listed_by_plugins(project):
    project.write("plugins/hello.py", COMMAND_PLUGIN)
    project.toml('[targets.a]\nrun = "true"\n')
    out = project.run("plugins", check=True).stdout
    assert "project:hello  (plugins/hello.py)" in out
    assert "eltmake hello: say hello" in out
    assert "eltmake config: print a Singer tool's resolved config" in out  # a built-in's command
    proc = project.run("hello", "you", check=True)
    assert proc.stdout.startswith("hello you from ")
    elsewhere = subprocess.run(
        [sys.executable, "-m", "eltmake", "-C", str(project.root), "hello", "there"],
        cwd=project.root.parent,
        capture_output=True,
        text=True,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == f"hello there from {project.root}\n"


def test_every_hook_is_documented():
    hooks = [
        f
        for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("eltmake_")
    ]
    assert len(hooks) >= 12
    for hook in hooks:
        doc = inspect.getdoc(hook) or ""
        assert len(doc) > 40, (
            f"{hook.__name__} needs a docstring saying when it is called and what it returns"
        )


def test_every_recipe_method_is_documented():
    from eltmake.recipe import Recipe

    methods = [m for name, m in inspect.getmembers(Recipe, inspect.isfunction) if name[0] != "_"]
    assert {m.__name__ for m in methods} >= {
        "make_step",
        "definition",
        "inputs",
        "check_outputs",
        "run",
        "tools",
        "written_paths",
    }
    for m in methods:
        assert len(inspect.getdoc(m) or "") > 40, f"Recipe.{m.__name__} needs a docstring"


def test_built_in_plugins_use_only_the_public_api():
    """What a user's plugin can copy: the built-ins import from eltmake.api alone."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "plugins"
    for path in sorted(root.glob("eltmake_*/**/*.py")):
        text = path.read_text()
        bad = re.findall(r"^\s*(?:from|import) (eltmake\.(?!api\b)[\w.]+)", text, re.M)
        assert not bad, f"{path.relative_to(root)} imports {bad[0]}; use eltmake.api"


def test_a_failing_notification_hook_does_not_stop_the_build(project):
    project.write(
        "plugins/bad_notify.py",
        """
        from eltmake import hookimpl

        @hookimpl
        def eltmake_step_finished(step):
            raise ValueError("slack is down")
        """,
    )
    project.toml('[targets.a]\nrun = "echo a > a.txt"\noutputs = ["a.txt"]\n')
    proc = project.run("build", check=True)
    assert (
        "plugin 'project:bad_notify': eltmake_step_finished failed: ValueError: slack is down"
        in proc.stdout
    )
    assert project.read("a.txt") == "a\n"
    assert " ok " in project.run("runs", check=True).stdout.splitlines()[1]  # [0]: the header


def test_a_misspelt_hook_is_refused(project):
    project.write(
        "plugins/typo.py",
        """
        from eltmake import hookimpl

        @hookimpl
        def eltmake_step_finishd(step):
            pass
        """,
    )
    project.toml('[targets.a]\nrun = "true"\n')
    proc = project.run("build")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "eltmake_step_finishd is not an eltmake hook" in proc.stderr
    assert "did you mean 'eltmake_step_finished'" in proc.stderr


def test_entry_points_are_cached_until_an_install_changes_the_metadata(tmp_path, monkeypatch):
    import json

    from eltmake import plugins

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    found = plugins.entry_points()
    assert ("command", "eltmake_command") in [(n, v) for n, v, _ in found]
    from eltmake.metacache import cache_file

    file = cache_file("entry-points")

    def poison(name: str) -> None:
        data = json.loads(file.read_text())
        data["entries"] = [[name, f"{name}_module", ""]]
        file.write_text(json.dumps(data))

    # The cached answer is used while the installed distributions are unchanged, whatever else
    # changes in the folders on sys.path ...
    poison("fake")
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    (site / "some_module.py").write_text("")
    assert plugins.entry_points() == [("fake", "fake_module", "")]
    # ... an installed distribution makes it scan again ...
    (site / "newly_installed-1.0.dist-info").mkdir()
    assert plugins.entry_points() == found
    # ... and so does a reinstalled one whose entry points changed.
    poison("stale")
    (site / "newly_installed-1.0.dist-info" / "entry_points.txt").write_text("[other]\n")
    assert plugins.entry_points() == found


def test_entry_point_values_load_like_importlib_metadata():
    import os.path

    from eltmake.plugins import _load_entry_point

    assert _load_entry_point("os.path") is os.path
    assert _load_entry_point("os:path.join") is os.path.join
    assert _load_entry_point("os.path:join [extra]") is os.path.join


def test_the_readme_plugin_example_works_as_written(project):
    """README's "Writing a plugin" example, copied verbatim into a project: it must keep working."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Writing a plugin") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    project.write("plugins/greet.py", code)
    project.toml(toml)
    assert project.statuses() == {"hi": "built"}
    assert project.read("hi.txt") == "hello world"
    assert project.statuses() == {"hi": "skipped"}

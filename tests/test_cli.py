import subprocess
import sys


def eltmake(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "eltmake", *args], capture_output=True, text=True, cwd=cwd
    )


def test_version():
    proc = eltmake("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("eltmake ")


def test_help_lists_the_commands():
    proc = eltmake("--help")
    assert proc.returncode == 0
    for cmd in ("build", "status", "graph", "watch", "install", "state", "runs", "touch", "forget"):
        assert cmd in proc.stdout


def test_console_script_is_installed():
    from pathlib import Path

    exe = Path(sys.executable).parent / "eltmake"
    assert exe.exists(), "pip install . must put an `eltmake` command beside python"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "eltmake" in proc.stdout


def test_bad_jobs_is_a_usage_error(tmp_path):
    (tmp_path / "eltmake.toml").write_text("[targets.a]\nrun = 'true'\n")
    for bad in ("zero", "0", "-3"):
        proc = eltmake("build", "-j", bad, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "-j" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_command_is_a_usage_error(tmp_path):
    proc = eltmake("biuld", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_plugin_commands_after_dash_c(tmp_path):
    (tmp_path / "eltmake.toml").write_text(
        '[extractors.tap-x]\nexecutable = "tap-x"\nconfig = { token = "s3cret", n = 1 }\n'
    )
    proc = eltmake("-C", str(tmp_path), "config", "tap-x", "--debug")
    assert proc.returncode == 0, proc.stderr
    assert '"n": 1' in proc.stdout and "s3cret" not in proc.stdout


def test_bare_eltmake_builds_the_default_targets_as_make_does(project):
    project.toml(
        '[project]\ndefault = "a"\n[targets.a]\nrun = "echo a > a.txt"\n[targets.b]\nrun = "echo b > b.txt"\n'
    )
    proc = project.run(check=True)
    assert "built    a" in proc.stdout and (project.root / "a.txt").exists()
    assert not (project.root / "b.txt").exists()
    assert "skipped" in project.run("-j", "2", "--plain", "-v", check=True).stdout


def test_help_lists_every_command_plugins_included(project):
    for args in (["--help"], ["help"]):
        out = project.run(*args, check=True).stdout
        for command in ("build", "status", "runs", "store", "config", "select", "import"):
            assert f"\n  {command} " in out, (command, out)
    assert "usage: eltmake build" in project.run("help", "build", check=True).stdout


def test_a_mistyped_command_gets_a_did_you_mean(project):
    proc = project.run("biuld")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "eltmake: error: 'biuld' is not an eltmake command (did you mean 'build'?); "
        "`eltmake help` lists them"
    )


def test_the_nearest_enclosing_project_is_found_from_a_subfolder(project):
    project.toml('[targets.a]\nrun = "echo a > a.txt"\n')
    sub = project.root / "transform" / "models"
    sub.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "eltmake", "build"], cwd=sub, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("eltmake: using ../../eltmake.toml")
    assert (project.root / "a.txt").exists() and not (sub / "a.txt").exists()


def test_a_missing_dash_c_folder_says_so(project):
    proc = project.run("-C", "no/such/folder", "build")
    assert proc.returncode == 2
    assert "-C no/such/folder: does not exist" in proc.stderr and "init" not in proc.stderr


def test_install_progress_goes_to_stderr(project):
    project.toml('[targets.a]\nrun = "true"\n')
    proc = project.run("install", check=True)
    assert proc.stdout.strip() == "all tools are installed and up to date"


def test_a_builds_install_progress_goes_to_stderr(project, tmp_path):
    """Installing a tool during a build is progress: on stderr, so stdout holds only the build's
    lines (or --json events)."""
    pkg = tmp_path / "pkg"
    (pkg / "hello_tool").mkdir(parents=True)
    (pkg / "hello_tool" / "__init__.py").write_text("def main():\n    print('hi')\n")
    (pkg / "pyproject.toml").write_text(
        '[project]\nname = "hello-tool"\nversion = "1.0"\n'
        '[project.scripts]\nhello-tool = "hello_tool:main"\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    project.write(
        "plugins/tooly.py",
        f'''
        from eltmake.api import Recipe, StepResult, ToolSpec, hookimpl, executable_path

        class Tooly(Recipe):
            kind, marker, keys = "tooly", "tooly", {{"tooly": (str,)}}

            def tools(self, project, step):
                return ["hello-tool"]

            def run(self, ctx):
                exe = executable_path(ctx.project, ToolSpec("hello-tool", "{pkg}", "hello-tool"))
                out = ctx.popen([exe], stdout=-1).communicate()[0]  # -1: subprocess.PIPE
                ctx.log(out.decode().strip())
                return StepResult()

        @hookimpl
        def eltmake_tools(project):
            return [ToolSpec("hello-tool", "{pkg}", "hello-tool")]

        @hookimpl
        def eltmake_add_recipes():
            return [Tooly()]
        ''',
    )
    project.toml('[targets.t]\ntooly = "x"\n')
    env = {"ELTMAKE_TOOLS_DIR": str(tmp_path / "tools")}
    proc = project.run("build", "--json", check=True, env=env)
    assert "installing hello-tool" in proc.stderr
    for line in proc.stdout.splitlines():
        assert line.startswith("{"), line  # only events on stdout

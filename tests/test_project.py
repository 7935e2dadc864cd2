"""The project file: every malformed input is one clear line and exit code 2, never a traceback."""

import pytest

CASES = {
    "toml_syntax": ("[targets.a]\nrun = 'true'\ndeps = [\n", ["eltmake.toml:", "invalid TOML"]),
    "toml_syntax_line_col": ("[project]\nname = \n", ["eltmake.toml:2:", "invalid TOML"]),
    "unknown_table": (
        "[target.a]\nrun = 'true'\n",
        ["unknown table [target]", "did you mean 'targets'"],
    ),
    "unknown_project_key": (
        "[project]\nnmae = 'x'\n",
        ["project: unknown key 'nmae'", "did you mean 'name'"],
    ),
    "unknown_target_key": (
        "[targets.a]\nrun = 'true'\ninptus = []\n",
        ["targets.a: unknown key 'inptus'", "'inputs'"],
    ),
    "wrong_type_deps": (
        "[targets.a]\nrun = 'true'\ndeps = 'b'\n",
        ["targets.a.deps must be a list", "not a string"],
    ),
    "wrong_type_run": ("[targets.a]\nrun = 3\n", ["targets.a.run must be a string or a list"]),
    "wrong_item_type": (
        "[targets.a]\nrun = 'true'\ninputs = [1]\n",
        ["targets.a.inputs[0] must be a string"],
    ),
    "target_not_a_table": ("[targets]\na = 'echo'\n", ["targets.a must be a table"]),
    "unknown_dep": (
        "[targets.alpha]\nrun = 'true'\n[targets.b]\nrun = 'true'\ndeps = ['alpah']\n",
        ["targets.b.deps: unknown target 'alpah'", "did you mean 'alpha'"],
    ),
    "self_dep": (
        "[targets.a]\nrun = 'true'\ndeps = ['a']\n",
        ["targets.a.deps", "cannot depend on itself"],
    ),
    "recipe_key_on_aggregate": (
        "[targets.a]\nenv = {X = '1'}\n",
        ["targets.a.env", "belongs to command"],
    ),
    "bad_freshness": (
        "[targets.a]\nrun = 'true'\nfreshness = '6 hours'\n",
        ["targets.a.freshness", "'6 hours'", "6h"],
    ),
    "cycle": (
        "[targets.a]\nrun='true'\ndeps=['c']\n[targets.b]\nrun='true'\ndeps=['a']\n[targets.c]\nrun='true'\ndeps=['b']\n",
        ["cycle", "→"],
    ),
    "unknown_default": (
        "[project]\ndefault = 'wh'\n[targets.wh2]\nrun = 'true'\n",
        ["project.default: unknown target 'wh'"],
    ),
    "unset_variable": (
        "[targets.a]\nrun = 'echo ${ELTMAKE_TEST_SURELY_UNSET}'\n",
        ["targets.a.run", "${ELTMAKE_TEST_SURELY_UNSET} is not set"],
    ),
    "empty_run": ("[targets.a]\nrun = ''\n", ["targets.a.run", "empty"]),
    "unknown_plugin_module": (
        "[project]\nplugins = ['no_such_plugin_mod']\n",
        ["project.plugins", "no_such_plugin_mod"],
    ),
    # Outputs: files inside the project, one writer each, never read by their own step.
    "output_glob": (
        "[targets.a]\nrun = 'true'\noutputs = ['out/*.csv']\n",
        ["targets.a.outputs[0]", "is a pattern"],
    ),
    "output_outside": (
        "[targets.a]\nrun = 'true'\noutputs = ['../x.txt']\n",
        ["targets.a.outputs[0]", "outside the project folder"],
    ),
    "output_absolute": (
        "[targets.a]\nrun = 'true'\noutputs = ['/tmp/x.txt']\n",
        ["targets.a.outputs[0]", "outside the project folder"],
    ),
    "output_in_eltmake": (
        "[targets.a]\nrun = 'true'\noutputs = ['.eltmake/x']\n",
        ["targets.a.outputs[0]", "inside .eltmake/"],
    ),
    "output_empty": ("[targets.a]\nrun = 'true'\noutputs = ['']\n", ["outputs[0]", "empty"]),
    "output_dot": ("[targets.a]\nrun = 'true'\noutputs = ['.']\n", ["the project folder"]),
    "output_twice": (
        "[targets.a]\nrun = 'true'\noutputs = ['x']\n[targets.b]\nrun = 'true'\noutputs = ['./x']\n",
        ["targets.b.outputs[0]", "also an output of targets.a"],
    ),
    "output_is_input": (
        "[targets.a]\nrun = 'true'\ninputs = ['data/*.csv']\noutputs = ['data/x.csv']\n",
        ["targets.a.outputs[0]", "also an input of this target"],
    ),
    "deeply_nested": (
        "[targets.a]\nrun = 'true'\ninputs = " + "[" * 3000 + "]" * 3000 + "\n",
        ["eltmake.toml", "nested too deeply"],
    ),
}


def assert_one_line_error(proc, expected):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_project_file(project, case):
    text, expected = CASES[case]
    project.toml(text)
    assert_one_line_error(project.run("build"), expected)


def test_two_recipes(project, tmp_path):
    # A second recipe kind from a project plugin, so the test does not depend on Singer or dbt.
    project.write(
        "plugins/echo_kind.py",
        """
        from eltmake.api import Recipe, hookimpl

        class Echo(Recipe):
            kind, marker, keys = "echo", "say", {"say": (str,)}

        @hookimpl
        def eltmake_add_recipes():
            return [Echo()]
        """,
    )
    project.toml("[targets.a]\nrun = 'true'\nsay = 'hi'\n")
    assert_one_line_error(project.run("build"), ["targets.a has two recipes", "'run'", "'say'"])


def test_missing_project_file(project):
    assert_one_line_error(
        project.run("build"), ["no eltmake.toml in", "or any folder above it", "eltmake init"]
    )


def test_binary_project_file(project):
    (project.root / "eltmake.toml").write_bytes(b"\x00\x01\x02binary\xff")
    assert_one_line_error(project.run("build"), ["binary file"])


def test_non_utf8_project_file(project):
    (project.root / "eltmake.toml").write_bytes(b"[targets.a]\nrun = '\xff\xfe'\n")
    assert_one_line_error(project.run("build"), ["not UTF-8"])


def test_unknown_target_on_the_command_line(project):
    project.toml("[targets.warehouse]\nrun = 'true'\n")
    assert_one_line_error(
        project.run("build", "warehose"), ["unknown target 'warehose'", "did you mean 'warehouse'"]
    )


def test_unknown_force_target(project):
    project.toml("[targets.warehouse]\nrun = 'true'\n")
    assert_one_line_error(project.run("build", "--force", "nope"), ["unknown target 'nope'"])


def test_unknown_environment(project):
    project.toml("[targets.a]\nrun = 'true'\n[environments.prod.targets.a]\nrun = 'false'\n")
    assert_one_line_error(
        project.run("build", "--env", "prd"), ["no environment 'prd'", "did you mean 'prod'"]
    )


def test_debug_shows_the_traceback(project):
    project.toml("[targets.a]\nrun = 'true'\ndeps = ['zz']\n")
    proc = project.run("build", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_interpolation_from_env_and_dotenv(project):
    project.toml(
        """
        [targets.a]
        run = "echo ${GREETING} ${WHO} ${MISSING:-fallback} $${LITERAL} > out.txt"
        outputs = ["out.txt"]
        """
    )
    project.write(".env", "# comment\nexport WHO='world'\nGREETING=overridden\n")
    project.run("build", check=True, env={"GREETING": "hello"})
    # The real environment wins over .env; $${ is a literal ${ handed to the shell (empty there).
    assert project.read("out.txt").split() == ["hello", "world", "fallback"]


def test_environment_overrides(project):
    project.toml(
        """
        [targets.a]
        run = "echo dev > out.txt"
        outputs = ["out.txt"]

        [environments.prod.targets.a]
        run = "echo prod > out.txt"
        """
    )
    project.run("build", check=True)
    assert project.read("out.txt").strip() == "dev"
    project.run("build", "--env", "prod", check=True)
    assert project.read("out.txt").strip() == "prod"


def test_bad_dotenv_line(project):
    project.toml("[targets.a]\nrun = 'true'\n")
    project.write(".env", "GOOD=1\nthis is not an assignment\n")
    assert_one_line_error(project.run("build"), [".env:2", "KEY=value"])


@pytest.mark.parametrize("name", ["a b", "x->y", 'q"uote', "-dash"])
def test_bad_target_names(project, name):
    project.toml(f'[targets."{name}"]\nrun = "true"\n'.replace('"q"uote"', "'q\"uote'"))
    assert_one_line_error(project.run("list"), ["a target name is letters, digits"])


def test_environment_that_replaces_project_with_a_value(project):
    project.toml('[targets.a]\nrun = "true"\n[environments.prod]\nproject = "x"\n')
    assert_one_line_error(
        project.run("build", "--env", "prod"), ["environments.prod.project must be a table"]
    )


def test_init_into_a_file(project):
    project.write("afile", "x")
    assert_one_line_error(project.run("init", "afile"), ["is a file"])


def test_toml_dates_become_iso_strings(project):
    project.toml(
        """
        [targets.a]
        run = "echo $START $DAY > a.txt"
        outputs = ["a.txt"]
        env = { START = 2024-01-02T03:04:05Z, DAY = 2024-01-02 }
        """
    )
    project.run("build", check=True)
    assert project.read("a.txt").split() == ["2024-01-02T03:04:05Z", "2024-01-02"]


def test_read_only_commands_tell_plugins_so(project):
    """list, graph, status and build -n load the project read-only (plugins start no tool);
    build and watch may install and start tools."""
    project.write(
        "plugins/probe.py",
        """
        from eltmake.api import hookimpl

        @hookimpl
        def eltmake_infer_deps(project):
            with open(project.root / "seen.txt", "a") as f:
                f.write(f"{project.read_only}\\n")
            return []
        """,
    )
    project.toml('[targets.a]\nrun = "true"\n')
    seen = []
    for args in (["list"], ["graph"], ["status"], ["build", "-n"], ["build"]):
        project.run(*args)
        seen.append(project.read("seen.txt").split()[-1])
    assert seen == ["True", "True", "True", "True", "False"]

"""The dbt plugin: project file errors, the generated profile, lineage from Singer configs, and
(with real dbt) selection resolved over the cached manifest exactly as ``dbt ls`` resolves it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Project
from eltmake_dbt import config as dbt_config
from eltmake_dbt import lineage, manifest, select, transform

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shop"
PIN = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"

BASE = f"""
[loaders.duckdb]
executable = "eltmake-target-duckdb"
config = {{ path = "wh.duckdb", default_target_schema = "raw" }}

[transformers.dbt]
pip_url = "{PIN}"
project_dir = "transform"
"""


def dbt_project(project: Project) -> None:
    project.write("transform/dbt_project.yml", "name: t\nprofile: t\nconfig-version: 2\n")


# --- project file errors: one line, exit code 2, no traceback, no dbt run ------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            BASE.replace("project_dir =", "projct_dir ="),
            "transformers.dbt: unknown key 'projct_dir' (did you mean 'project_dir'?)",
        ),
        (
            BASE + '[targets.m]\ntransform = "dbtt"\n',
            "targets.m.transform: no transformer named 'dbtt' (did you mean 'dbt'?)",
        ),
        (
            BASE + '[targets.m]\ntransform = "dbt"\ncommand = "biuld"\n',
            "targets.m.command: 'biuld' is not a dbt command eltmake runs (did you mean 'build'?)",
        ),
        (
            BASE.replace('project_dir = "transform"', 'project_dir = "nowhere"'),
            "transformers.dbt.project_dir: no dbt_project.yml in 'nowhere'",
        ),
        (
            f'[transformers.dbt]\npip_url = "{PIN}"\nproject_dir = "transform"\n',
            "transformers.dbt: no dbt profile: set profiles_dir",
        ),
        (
            '[transformers.dbt]\nproject_dir = "transform"\n',
            'transformers.dbt: needs pip_url (e.g. pip_url = "dbt-core~=1.11.0',
        ),
        (
            BASE + '[targets.m]\ntransform = "dbt"\nselect = 3\n',
            "targets.m.select must be a string or a list",
        ),
    ],
)
def test_project_file_errors_are_one_line(project: Project, toml: str, expected: str) -> None:
    dbt_project(project)
    project.toml(toml)
    proc = project.run("list")
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- the generated profile -----------------------------------------------------------------------


def _load(root: Path, **kw):
    from eltmake.project import load_project

    return load_project(root, environ={"PATH": "/usr/bin:/bin", **kw.pop("environ", {})}, **kw)


def test_the_generated_profile_points_at_the_loaders_file_and_follows_env(project: Project) -> None:
    dbt_project(project)
    project.toml(
        BASE
        + '[environments.prod.loaders.duckdb.config]\npath = "/data/prod.duckdb"\n'
        + '[targets.raw]\nrun = "true"\n'
    )
    dev = _load(project.root)
    tf = dbt_config.transformer(dev, "dbt")
    assert tf.profiles_dir is None and tf.duckdb_path == "wh.duckdb"
    text = dbt_config.profile_text(dev, tf)
    profile = json.loads(text.split("\n", 1)[1])
    assert profile["t"]["outputs"]["eltmake"]["path"] == str(project.root / "wh.duckdb")
    folder = dbt_config.profiles_dir(dev, tf)
    assert (folder / "profiles.yml").read_text() == text
    assert folder == project.root / ".eltmake" / "dbt" / "dbt"
    prod = _load(project.root, env_name="prod")
    prod_text = dbt_config.profile_text(prod, dbt_config.transformer(prod, "dbt"))
    assert '"path": "/data/prod.duckdb"' in prod_text


def test_a_profiles_yml_in_the_dbt_project_is_used_as_is(project: Project) -> None:
    dbt_project(project)
    project.write("transform/profiles.yml", "t: {}\n")
    project.toml(f'[transformers.dbt]\npip_url = "{PIN}"\nproject_dir = "transform"\n')
    tf = dbt_config.transformer(_load(project.root), "dbt")
    assert tf.profiles_dir == (project.root / "transform").resolve()
    assert tf.duckdb_path is None


# --- lineage: which tables an extract-load target loads -------------------------------------------


def test_streams_come_from_the_taps_config_and_selection() -> None:
    jsonl = {"config": {"path": "o.jsonl", "stream_name": "orders"}}
    sheets = {
        "config": {
            "files": [
                {"path": "a.csv", "table_name": "Customers"},
                {"path": "b.csv", "table_name": "b"},
            ]
        }
    }
    assert lineage.extractor_streams(jsonl, None) == {"orders"}
    assert lineage.extractor_streams(sheets, None) == {"Customers", "b"}
    tap = {"config": {}, "select": ["public-users.*", "!public-users.secret", "*.id"]}
    assert lineage.extractor_streams(tap, ["line_items.*"]) == {"public-users", "line_items"}
    assert lineage.table_of_stream("public-users") == "users"
    assert lineage.table_of_stream("Customers") == "customers"


def test_loaded_tables_maps_schema_and_table_to_the_extract_target(project: Project) -> None:
    dbt_project(project)
    project.toml(
        BASE
        + '[extractors.tap-x]\npip_url = "tap-x"\nconfig = { stream_name = "Orders" }\n'
        + '[targets.raw_orders]\nextract = "tap-x"\nload = "duckdb"\n'
    )
    assert lineage.loaded_tables(_load(project.root)) == {("raw", "orders"): ["raw_orders"]}


# --- with real dbt -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory, tools_dir: str):
    """The example's dbt project, parsed once by real dbt: (project, transformer, summary)."""
    root = tmp_path_factory.mktemp("dbtsel") / "shop"
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    # A tag and a seed, so those selectors have something to find.
    stg = root / "transform/models/staging/stg_orders.sql"
    stg.write_text("{{ config(tags=['nightly']) }}\n" + stg.read_text())
    (root / "transform/seeds").mkdir()
    (root / "transform/seeds/countries.csv").write_text("code,name\nDE,Germany\n")
    import os

    proj = _load(root, environ={"ELTMAKE_TOOLS_DIR": tools_dir, "PATH": os.environ["PATH"]})
    tf = dbt_config.transformer(proj, "dbt")
    info = manifest.load(proj, tf, echo=lambda line: None)
    assert info is not None and info.error is None, info and info.error
    return proj, tf, info


SELECTORS = [
    (["staging"], []),
    (["marts"], []),
    (["+fct_orders"], []),
    (["stg_orders+"], []),
    (["1+dim_customers"], []),
    (["@stg_customers"], []),
    (["path:models/staging"], []),
    (["models/marts"], []),
    (["stg_*"], []),
    (["shop.marts.*"], []),
    (["tag:nightly+"], []),
    (["source:raw.orders+"], []),
    (["resource_type:seed", "file:fct_orders.sql"], []),
    (["config.materialized:table,marts"], []),
    (["test_type:singular"], []),
    ([], ["staging"]),
    (["staging"], ["stg_payments"]),
]


@pytest.mark.integration
def test_selection_matches_dbt_ls(parsed) -> None:
    proj, tf, info = parsed
    env = dbt_config.dbt_env(proj, tf, dict(proj.environ))
    exe = manifest.executable(proj, tf, print)
    for sel, exc in SELECTORS:
        mine = select.resolve(info, tf.project_dir, sel, exc, "build")
        argv = [exe, "--quiet", "ls", "--output", "json", "--output-keys", "unique_id"]
        argv += (["--select", *sel] if sel else []) + (["--exclude", *exc] if exc else [])
        out = subprocess.run(argv, cwd=tf.project_dir, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        theirs = sorted(
            uid
            for uid in (json.loads(line)["unique_id"] for line in out.stdout.splitlines())
            if uid.split(".")[0] in select.COMMAND_TYPES["build"]
        )
        assert mine == theirs, f"--select {sel} --exclude {exc}"
        assert mine or sel == ["resource_type:seed", "file:fct_orders.sql"], sel


@pytest.mark.integration
def test_unsupported_selectors_are_left_to_dbt(parsed) -> None:
    proj, tf, info = parsed
    assert select.resolve(info, tf.project_dir, ["state:modified"], [], "build") is None
    assert select.resolve(info, tf.project_dir, ["config.schema:marts"], [], "run") is None


@pytest.mark.integration
def test_an_unsupported_selector_is_asked_of_dbt_once_and_cached(parsed) -> None:
    proj, tf, info = parsed
    data = {"command": "run", "select": ["config.schema:marts"], "exclude": []}
    found = transform.selection(proj, tf, info, data)
    assert found == ["model.shop.dim_customers", "model.shop.fct_orders"]
    cached = manifest.read_cached(proj, tf)
    assert cached is not None and found in cached.selections.values()
    # The second time, the answer comes from the summary: no dbt.
    import eltmake_dbt.transform as t

    calls = []
    real, t._dbt_ls = t._dbt_ls, lambda *a: calls.append(a) or []
    try:
        assert transform.selection(proj, tf, info, data) == found
    finally:
        t._dbt_ls = real
    assert calls == []


@pytest.mark.integration
def test_a_selection_keys_on_its_own_files_only(parsed) -> None:
    proj, tf, info = parsed
    marts = transform.files_of(info, select.resolve(info, tf.project_dir, ["marts"], [], "build"))
    staging = transform.files_of(
        info, select.resolve(info, tf.project_dir, ["staging"], [], "build")
    )
    assert {"models/marts/fct_orders.sql", "models/marts/dim_customers.sql"} <= marts
    assert "macros/cents_to_amount.sql" in marts  # called by the models
    assert "macros/generate_schema_name.sql" in marts  # called by dbt itself
    assert "tests/lifetime_value_matches_orders.sql" in marts
    assert not any(f.startswith("models/staging/") for f in marts)
    assert "models/staging/_sources.yml" in staging and "models/staging/_staging.yml" in staging
    assert not any(f.startswith("models/marts/") for f in staging)
    assert "dbt_project.yml" in marts and "dbt_project.yml" in staging


# --- dbt's errors, in one line ------------------------------------------------------------------

COMPILE_ERROR = """\
\x1b[0m19:20:01  Running with dbt=1.11.16
\x1b[0m19:20:02  Encountered an error:
Compilation Error
  Model 'model.shop.stg_payments' (models/staging/stg_payments.sql) depends on a node named 'nope' which was not found
"""
TEST_FAILURE = """\
19:20:05  1 of 3 FAIL 1 unique_stg_orders_order_id ..... [FAIL 1 in 0.05s]
19:20:06  Completed with 1 error, 0 partial successes, and 0 warnings:
19:20:06
19:20:06  Failure in test unique_stg_orders_order_id (models/staging/_staging.yml)
19:20:06    Got 1 result, configured to fail if != 0
"""
RUNTIME_ERROR = """\
19:20:05  1 of 3 ERROR creating sql view model staging.stg_orders ..... [ERROR in 0.05s]
19:20:06  Completed with 1 error, 0 partial successes, and 0 warnings:
19:20:06    Runtime Error in model stg_orders (models/staging/stg_orders.sql)
19:20:06    Binder Error: Referenced column "idd" not found in FROM clause!
"""


@pytest.mark.parametrize(
    ("output", "headline"),
    [
        (
            COMPILE_ERROR,
            "Compilation Error: Model 'model.shop.stg_payments' (models/staging/stg_payments.sql) "
            "depends on a node named 'nope' which was not found",
        ),
        (
            TEST_FAILURE,
            "Failure in test unique_stg_orders_order_id (models/staging/_staging.yml): "
            "Got 1 result, configured to fail if != 0",
        ),
        (
            RUNTIME_ERROR,
            "Runtime Error in model stg_orders (models/staging/stg_orders.sql): "
            'Binder Error: Referenced column "idd" not found in FROM clause!',
        ),
    ],
)
def test_dbt_errors_become_one_headline(output: str, headline: str) -> None:
    got, tail = manifest.error_summary(output.splitlines())
    assert got == headline
    assert all("\x1b" not in line and not line.startswith("19:20") for line in tail)


# --- partial runs and empty selections, over a hand-made manifest summary ------------------------


def _summary() -> manifest.Info:
    def node(t, name, path, parents=(), folder="marts", **kw):
        return {
            "t": t,
            "name": name,
            "fqn": ["shop", folder, name],
            "path": path,
            "parents": list(parents),
            "macros": [],
            **kw,
        }

    return manifest.Info(
        digest="d",
        files={},
        project_name="shop",
        nodes={
            "model.shop.a": node("model", "a", "models/marts/a.sql"),
            "model.shop.b": node("model", "b", "models/marts/b.sql", ["model.shop.a"]),
            "test.shop.t": node(
                "test", "t", "models/marts/_m.yml", ["model.shop.a"], test_type="generic"
            ),
        },
    )


def test_only_edited_model_files_narrow_a_run() -> None:
    from types import SimpleNamespace

    from eltmake_dbt import run

    root = Path("/p")
    proj = SimpleNamespace(root=root)
    tf = dbt_config.Transformer("dbt", PIN, "dbt", root / "transform", None, "w.duckdb", None)
    info, uids = _summary(), ["model.shop.a", "model.shop.b", "test.shop.t"]
    assert run.changed_nodes(proj, tf, info, uids, ["transform/models/marts/b.sql"]) == [
        "models/marts/b.sql"
    ]
    # A YAML file (tests, configs) or a macro may touch any node: run everything.
    assert run.changed_nodes(proj, tf, info, uids, ["transform/models/marts/_m.yml"]) is None
    assert run.changed_nodes(proj, tf, info, uids, ["transform/macros/m.sql"]) is None
    assert run.changed_nodes(proj, tf, info, uids, None) is None
    argv = run.argv_for("dbt", tf, {"select": "marts"}, False, ["models/marts/b.sql"])
    assert argv == ["dbt", "build", "--select", "path:models/marts/b.sql+,marts"]


def test_a_selection_that_matches_nothing_fails_with_a_hint() -> None:
    from eltmake_dbt import run

    data = {"select": ["mart"], "command": "build", "transformer": "dbt", "exclude": []}
    assert select.resolve(_summary(), Path("/nowhere"), ["mart"], [], "build") == []
    message = run.nothing_selected("marts", _summary(), data)
    assert message.startswith("marts: select 'mart' matches no node that dbt build runs")
    assert "(did you mean 'marts'?)" in message


def test_plain_sql_edits_keep_the_manifests_shape(tmp_path: Path) -> None:
    model = tmp_path / "models" / "m.sql"
    model.parent.mkdir()
    model.write_text("select id from {{ ref('a') }}\n")
    before = manifest.file_digests(tmp_path, {})
    model.write_text("-- a comment\nselect id, 1 as one from {{ ref('a') }}\n")
    after = manifest.file_digests(tmp_path, before)
    assert after["models/m.sql"][3] != before["models/m.sql"][3]  # content changed
    assert manifest.same_shape(before, after)  # no parse needed
    model.write_text("select id from {{ ref('b') }}\n")
    assert not manifest.same_shape(before, manifest.file_digests(tmp_path, before))
    (tmp_path / "models" / "schema.yml").write_text("version: 2\n")
    assert not manifest.same_shape(before, manifest.file_digests(tmp_path, before))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("threads = 0", "transformers.dbt.threads: must be a whole number of at least 1"),
        ("env = { A = [1] }", "transformers.dbt.env.A: must be a string"),
        ('profiles_dir = ""', "transformers.dbt.profiles_dir: is empty"),
    ],
)
def test_transformer_values_are_checked(project, extra, expected):
    project.write("transform/dbt_project.yml", "name: t\nprofile: t\n")
    project.toml(
        f"""
        [loaders.duckdb]
        executable = "eltmake-target-duckdb"
        config = {{ path = "w.duckdb" }}
        [transformers.dbt]
        pip_url = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"
        project_dir = "transform"
        {extra}
        [targets.m]
        transform = "dbt"
        """
    )
    proc = project.run("list")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr


@pytest.mark.integration
def test_secret_vars_stay_out_of_the_process_table_and_the_output(
    project: Project, tools_dir: str
) -> None:
    """A var named like a secret reaches dbt, but never its command line (every local user can
    read that) nor eltmake's output."""
    import os
    import threading

    secret = "s3cr3t-t0ken-value"
    project.toml(
        BASE.replace(
            'project_dir = "transform"',
            'project_dir = "transform"\nvars = { api_token = "' + secret + '", region = "eu" }',
        )
        + '[targets.m]\ntransform = "dbt"\ncommand = "run"\n'
    )
    dbt_project(project)
    project.write(
        "transform/models/m.sql",
        "select '{{ var(\"api_token\") }}' as t, '{{ var(\"region\") }}' as r\n",
    )
    seen: list[str] = []
    done = threading.Event()

    def watch_ps() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    except OSError:
                        continue
                    if secret in cmd:
                        seen.append(cmd)
            done.wait(0.01)

    t = threading.Thread(target=watch_ps, daemon=True)
    t.start()
    try:
        proc = project.run("build", "-v", "--plain", env={"ELTMAKE_TOOLS_DIR": tools_dir})
    finally:
        done.set()
        t.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not seen, f"the secret was in a command line: {seen[0][:200]}"
    assert secret not in proc.stdout + proc.stderr
    import duckdb

    con = duckdb.connect(str(project.root / "wh.duckdb"), read_only=True)
    assert con.execute("select t, r from main.m").fetchone() == (secret, "eu")
    con.close()


def test_dbt_warnings_are_one_line_each() -> None:
    from eltmake_dbt.run import dbt_warnings

    lines = [
        "[WARNING]: Configuration paths exist in your dbt_project.yml file which do not apply.",
        "[WARNING][CustomKeyInConfigDeprecation]: Custom key `x` found in `config`.",
        "2 of 2 WARN 1 accepted_values_a_x__5 ............ [WARN 1 in 0.06s]",
        "Completed with 1 warning:",
        "Warning in test accepted_values_a_x__5 (models/schema.yml)",
        "Got 1 result, configured to warn if != 0",
        "[WARNING]: Configuration paths exist in your dbt_project.yml file which do not apply.",
    ]
    assert dbt_warnings(lines) == [
        "Configuration paths exist in your dbt_project.yml file which do not apply.",
        "CustomKeyInConfigDeprecation: Custom key `x` found in `config`.",
        "Warning in test accepted_values_a_x__5 (models/schema.yml): Got 1 result, configured "
        "to warn if != 0",
    ]
    many = [f"[WARNING]: w{i}" for i in range(8)]
    assert dbt_warnings(many)[-1] == "and 3 more (-v shows dbt's output)"
    assert dbt_warnings(["Done. PASS=1 WARN=0 ERROR=0"]) == []


@pytest.mark.integration
def test_dbt_warnings_show_under_a_successful_step(project: Project, tools_dir: str) -> None:
    """A test configured to warn, and dbt's own warning about an unused config path: shown under
    the `built` line without -v, and in --json, while the step succeeds."""
    project.toml(BASE + '[targets.m]\ntransform = "dbt"\n')
    project.write(
        "transform/dbt_project.yml",
        "name: t\nprofile: t\nconfig-version: 2\nmodels:\n  t:\n    nowhere:\n"
        "      +materialized: table\n",
    )
    project.write("transform/models/a.sql", "select 1 as x\n")
    project.write(
        "transform/models/schema.yml",
        "version: 2\nmodels:\n  - name: a\n    columns:\n      - name: x\n        data_tests:\n"
        "          - accepted_values:\n              arguments:\n                values: [5]\n"
        "              config:\n                severity: warn\n",
    )
    env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    proc = project.run("build", "--plain", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "built    m" in proc.stdout and "1 success, 1 warn" in proc.stdout
    assert (
        "  m | warning: Configuration paths exist in your dbt_project.yml file which do not "
        "apply to any resources." in proc.stdout
    )
    assert (
        "  m | warning: Warning in test accepted_values_a_x__5 (models/schema.yml): Got 1 "
        "result, configured to warn if != 0" in proc.stdout
    )
    events = project.events("build", "-B", env=env)
    (step,) = [e for e in events if e["event"] == "step"]
    assert step["status"] == "built" and len(step["warnings"]) == 2

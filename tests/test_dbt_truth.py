"""dbt steps are skipped only while the warehouse still holds what they built, read-only commands
start no dbt, and the reasons name the cause. Real dbt (dbt-core + dbt-duckdb) on real DuckDB
files, except for the pure functions at the top."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import eltmake_warehouse as W
import pytest
from conftest import Project
from eltmake_dbt import profiles
from eltmake_singer import destinations

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "shop"
PIN = "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"


# --- pure parts ----------------------------------------------------------------------------------


def test_profile_values_render_env_var_calls_only() -> None:
    env = {"DB": "x.duckdb", "PORT": "6543"}
    used: list[str] = []
    assert profiles.render("{{ env_var('DB') }}", env, used) == "x.duckdb"
    assert profiles.render("{{ env_var('MISSING', 'd.duckdb') }}", env, used) == "d.duckdb"
    assert profiles.render('{{ env_var("PORT") | int }}', env, used) == 6543
    assert profiles.render("data/{{ env_var('DB') }}", env, used) == "data/x.duckdb"
    assert used == ["DB", "MISSING", "PORT", "DB"]
    for bad, why in [
        ("{{ env_var('NOPE') }}", "reads env_var('NOPE'), which is not set"),
        ("{{ target.name }}", "is not an env_var() call"),
        ("{% if x %}a{% endif %}", "uses Jinja statements"),
    ]:
        with pytest.raises(
            profiles.Unknown, match=r".*" + why.replace("(", r"\(").replace(")", r"\)")
        ):
            profiles.render(bad, env, [])


def test_postgres_errors_name_the_setting() -> None:
    kw = {"host": "db.example", "port": "5432", "user": "shop", "dbname": "shop"}
    where = "loaders.postgres.config"
    refused = 'connection failed: connection to server at "10.0.0.1", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?'
    assert W.describe_pg_error(refused, kw, where, "PGPASSWORD", True) == (
        "cannot reach PostgreSQL at db.example:5432 (loaders.postgres.config.host and .port, "
        "PGHOST and PGPORT): Connection refused; is the server running there?"
    )
    assert "refused the password of user 'shop' (PGPASSWORD)" in W.describe_pg_error(
        'FATAL:  password authentication failed for user "shop"', kw, where, "PGPASSWORD", True
    )
    assert "database 'shop' does not exist on PostgreSQL at db.example:5432" in (
        W.describe_pg_error('FATAL:  database "shop" does not exist', kw, where, "x", True)
    )
    assert "asks user 'shop' for a password, and none is set: export PGPASSWORD" in (
        W.describe_pg_error("fe_sendauth: no password supplied", kw, where, "PGPASSWORD", False)
    )


def test_loaders_name_their_tables_and_servers(project: Project) -> None:
    project.toml(
        """
        [loaders.duckdb]
        executable = "eltmake-target-duckdb"
        config = { path = "w.duckdb", default_target_schema = "Raw", schema_mapping = { public = { target_schema = "pub" } } }
        [loaders.pg]
        pip_url = "meltanolabs-target-postgres==0.8.1"
        executable = "target-postgres"
        config = { sqlalchemy_url = "postgresql+psycopg://shop@db.example:6543/wh", default_target_schema = "raw" }
        [loaders.jsonl]
        pip_url = "target-jsonl==0.1.4"
        """
    )
    from eltmake.project import load_project

    p = load_project(project.root, environ={"PATH": os.environ["PATH"]})
    assert destinations.stream_table(p, "duckdb", "Orders") == ("raw", "orders")
    assert destinations.stream_table(p, "duckdb", "public-Order Lines") == ("pub", "order_lines")
    assert destinations.stream_table(p, "pg", "public-Orders") == ("raw", "Orders")
    assert destinations.stream_table(p, "jsonl", "orders") is None
    pg = destinations.loader_warehouse(p, "pg")
    assert pg is not None and pg.type == "postgres" and pg.locks == []
    assert pg.settings == {
        "host": "db.example",
        "port": 6543,
        "user": "shop",
        "database": "wh",
        "schema": "raw",
    }


# --- a tiny dbt project: a seed and two models, in a DuckDB file --------------------------------

TINY = {
    "transform/dbt_project.yml": "name: tiny\nprofile: tiny\nconfig-version: 2\n",
    "transform/seeds/people.csv": "id,name\n1,ann\n2,bob\n3,cy\n",
    "transform/models/people_upper.sql": "select id, upper(name) as name from {{ ref('people') }}\n",
    "transform/models/people_count.sql": "select count(*) as n from {{ ref('people_upper') }}\n",
}
TINY_TARGETS = """
[targets.seed]
transform = "dbt"
command = "seed"

[targets.upper]
transform = "dbt"
select = "people_upper"
deps = ["seed"]

[targets.count]
transform = "dbt"
select = "people_count"
deps = ["upper"]
"""


def tiny(project: Project, tools_dir: str, transformer_extra: str) -> Project:
    for rel, text in TINY.items():
        project.write(rel, text)
    project.toml(
        f'[transformers.dbt]\npip_url = "{PIN}"\nproject_dir = "transform"\n{transformer_extra}\n'
        + TINY_TARGETS
    )
    project.env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    return project


def steps(p: Project, *args: str, check: bool | int = True, env: dict | None = None) -> dict:
    proc = p.run("build", "--json", *args, check=check, env={**p.env, **(env or {})})
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {e["target"]: e for e in events if e["event"] == "step"}


def drop(db: Path, relation: str, kind: str = "table") -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(f"drop {kind} {relation}")
    W.forget_duckdb(db)


@pytest.mark.integration
def test_a_transformer_names_its_duckdb_file_without_a_loader(
    project: Project, tools_dir: str
) -> None:
    p = tiny(project, tools_dir, 'warehouse = "data/tiny.duckdb"')
    first = steps(p)
    assert {n: e["status"] for n, e in first.items()} == {
        "seed": "built",
        "upper": "built",
        "count": "built",
    }
    db = p.root / "data/tiny.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select n from main.people_count").fetchall() == [(3,)]
    config = json.loads(p.run("config", "dbt", check=True, env=p.env).stdout)
    assert config["output"]["path"] == str(db)
    assert config["warehouse"] == "transformers.dbt.warehouse"
    assert config["checks"].startswith("on (duckdb)")
    drop(db, "main.people_upper", "view")
    again = steps(p)
    assert again["upper"]["status"] == "built"
    assert again["upper"]["reason"] == "relation main.people_upper is missing"
    assert again["count"]["status"] == "skipped"  # same rows: the checksum cut it off
    assert {e["status"] for e in steps(p).values()} == {"skipped"}


@pytest.mark.integration
def test_a_projects_own_duckdb_profile_gets_checks_checksums_and_keyed_env_vars(
    project: Project, tools_dir: str
) -> None:
    p = tiny(project, tools_dir, "")
    p.write(
        "transform/profiles.yml",
        """
        tiny:
          target: "{{ env_var('TINY_TARGET', 'dev') }}"
          outputs:
            dev:
              type: duckdb
              path: "{{ env_var('TINY_DB', 'tiny.duckdb') }}"
              threads: 2
        """,
    )
    first = steps(p)
    assert first["count"]["status"] == "built"
    db = p.root / "transform/tiny.duckdb"  # relative to the dbt project, where dbt runs
    assert db.exists()
    config = json.loads(p.run("config", "dbt", check=True, env=p.env).stdout)
    assert config["target"] == "dev" and config["output"]["path"] == "tiny.duckdb"
    assert config["checks"].startswith("on (duckdb)")
    # The check applies: a dropped relation re-runs its step.
    drop(db, "main.people_count", "view")
    assert "relation main.people_count is missing" in p.run("status", env=p.env).stdout
    assert steps(p)["count"]["status"] == "built"
    # The checksums apply: a comment changes the file, not the rows; count is cut off.
    model = p.root / "transform/models/people_upper.sql"
    model.write_text("-- a comment\n" + model.read_text())
    got = steps(p)
    assert got["upper"]["status"] == "built" and got["count"]["status"] == "skipped"
    # The profile's env_var() values are in the key: another file is another warehouse.
    other = steps(p, env={"TINY_DB": "other.duckdb"})
    assert other["seed"]["status"] == "built"
    assert "definition changed: dbt_env_vars" in other["seed"]["reason"]
    assert (p.root / "transform/other.duckdb").exists()


@pytest.mark.integration
def test_env_var_values_read_by_models_are_in_the_key_secrets_as_a_digest(
    project: Project, tools_dir: str
) -> None:
    p = tiny(project, tools_dir, 'warehouse = "tiny.duckdb"')
    p.write(
        "transform/models/people_upper.sql",
        "select id, upper(name) as name, '{{ env_var('TINY_REGION', 'eu') }}' as region,\n"
        "  length('{{ env_var('TINY_API_TOKEN', '') }}') as token_length\n"
        "from {{ ref('people') }}\n",
    )
    token = "tok-very-secret-123"
    steps(p, env={"TINY_API_TOKEN": token})
    assert steps(p, env={"TINY_API_TOKEN": token})["upper"]["status"] == "skipped"
    got = steps(p, env={"TINY_REGION": "us", "TINY_API_TOKEN": token})
    assert got["upper"]["status"] == "built"
    assert got["upper"]["reason"] == "definition changed: dbt_env_vars"
    assert got["seed"]["status"] == "skipped"  # the seed reads no variable
    with duckdb.connect(str(p.root / "tiny.duckdb"), read_only=True) as con:
        assert con.execute("select distinct region from people_upper").fetchall() == [("us",)]
    for f in (p.root / ".eltmake").rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f


# --- the example: read-only commands, a dropped relation, reasons -------------------------------


def _copy_shop(dest: Path) -> Path:
    root = dest / "shop"
    shutil.copytree(
        EXAMPLE,
        root,
        ignore=shutil.ignore_patterns(".eltmake", "warehouse.duckdb*", "target", "logs", "out"),
    )
    return root


@pytest.mark.integration
def test_read_only_commands_install_nothing_and_start_no_dbt(
    tmp_path: Path, tools_dir: str
) -> None:
    shop = Project(_copy_shop(tmp_path))
    empty = tmp_path / "tools"
    env = {"ELTMAKE_TOOLS_DIR": str(empty)}
    note = "dbt: no lineage yet for transform/ (dbt has not parsed it)"
    for args, rc in [
        (["list"], 0),
        (["graph", "--format", "json"], 0),
        (["status"], 1),
        (["build", "-n"], 0),
        (["config", "dbt"], 0),
    ]:
        proc = shop.run(*args, env=env)
        assert proc.returncode == rc, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count(note) == 1, (args, proc.stderr)  # said once
        assert "Traceback" not in proc.stderr
        if args[0] == "graph":
            assert not any(e["inferred"] for e in json.loads(proc.stdout)["edges"])
    assert not empty.exists() or not any(empty.iterdir())  # nothing installed
    assert not (shop.root / "transform/target").exists()  # dbt never ran
    # eltmake install installs dbt and lets it parse: lineage is known from then on.
    shop.run("install", "dbt", check=True, env={"ELTMAKE_TOOLS_DIR": tools_dir})
    proc = shop.run("graph", "--format", "json", check=True, env={"ELTMAKE_TOOLS_DIR": tools_dir})
    edges = {(e["from"], e["to"]) for e in json.loads(proc.stdout)["edges"] if e["inferred"]}
    assert ("raw", "staging") in edges and ("staging", "marts") in edges
    assert "no lineage yet" not in proc.stderr


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, tools_dir: str) -> Project:
    p = Project(_copy_shop(tmp_path_factory.mktemp("truth")))
    p.env = {"ELTMAKE_TOOLS_DIR": tools_dir}
    steps(p)
    return p


def _edit(p: Project, rel: str, old: str, new: str) -> str:
    path = p.root / rel
    text = path.read_text()
    assert old in text, f"{rel} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))
    return text


def _dry(p: Project) -> dict[str, str]:
    proc = p.run("build", "-n", "--json", check=True, env=p.env)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {e["target"]: e["reason"] for e in events if e["event"] == "step"}


@pytest.mark.integration
def test_a_dropped_relation_reruns_its_dbt_step_and_cuts_off_below(shop: Project) -> None:
    drop(shop.root / "warehouse.duckdb", "marts.fct_orders")
    status = shop.run("status", env=shop.env)
    assert "out of date  marts      relation marts.fct_orders is missing" in status.stdout
    got = steps(shop)
    assert got["marts"]["status"] == "built"
    assert got["staging"]["status"] == "skipped" and got["report"]["status"] == "skipped"
    assert {e["status"] for e in steps(shop).values()} == {"skipped"}


@pytest.mark.integration
def test_reasons_name_the_edited_file_and_dbts_error(shop: Project) -> None:
    rel = "transform/models/staging/stg_payments.sql"
    manifest_json = shop.root / "transform/target/manifest.json"
    old = _edit(shop, rel, "{{ source('raw', 'payments') }}", "{{ ref('no_such_model') }}")
    try:
        before = manifest_json.stat().st_mtime_ns
        # A read-only command does not parse: it names the edited file.
        assert _dry(shop)["staging"] == f"input changed: {rel}"
        assert manifest_json.stat().st_mtime_ns == before
        failed = steps(shop, check=1)
        assert failed["staging"]["status"] == "failed"
        reason = _dry(shop)["staging"]
        assert reason.startswith(f"input changed: {rel}; new definition: dbt parse failed: ")
        assert "depends on a node named 'no_such_model' which was not found" in reason
        assert "new input" not in reason
    finally:
        (shop.root / rel).write_text(old)
    assert {e["status"] for e in steps(shop).values()} == {"skipped"}

    old = _edit(shop, "eltmake.toml", 'select = "staging"', 'select = "stagin"')
    try:
        reason = _dry(shop)["staging"]
        assert reason.startswith(
            "definition changed: select; new definition: select 'stagin' matches no node "
            "that dbt build runs (did you mean 'staging'?)"
        ), reason
    finally:
        (shop.root / "eltmake.toml").write_text(old)
    assert {e["status"] for e in steps(shop).values()} == {"skipped"}


@pytest.mark.integration
def test_config_of_a_projects_own_postgres_profile_is_redacted(project: Project) -> None:
    project.write("transform/dbt_project.yml", "name: t\nprofile: t\nconfig-version: 2\n")
    project.write(
        "transform/profiles.yml",
        """
        t:
          target: prod
          outputs:
            prod:
              type: postgres
              host: db.example
              port: "{{ env_var('DB_PORT', '5432') | int }}"
              user: shop
              password: "{{ env_var('DB_PASSWORD') }}"
              dbname: shop
              schema: marts
        """,
    )
    project.toml(
        '[transformers.dbt]\npip_url = "dbt-core~=1.11.0 dbt-postgres~=1.11.0"\n'
        'project_dir = "transform"\n[targets.m]\ntransform = "dbt"\n'
    )
    proc = project.run("config", "dbt", check=True, env={"DB_PASSWORD": "hunter2-xyz"})
    shown = json.loads(proc.stdout)
    assert "hunter2-xyz" not in proc.stdout + proc.stderr
    assert shown["output"]["password"] == "****" and shown["output"]["port"] == 5432
    assert shown["target"] == "prod" and shown["checks"].startswith("on (postgres)")
    # Without the variable, dbt-postgres would send the template as the password: said first.
    unset = json.loads(project.run("config", "dbt", check=True).stdout)
    assert unset["not rendered"] == {"password": "reads env_var('DB_PASSWORD'), which is not set"}
    assert not (project.root / ".eltmake/tools").exists()


def test_several_warehouses_need_the_transformer_to_choose(project: Project) -> None:
    project.write("transform/dbt_project.yml", "name: t\nprofile: t\nconfig-version: 2\n")
    project.toml(
        f"""
        [loaders.a]
        executable = "eltmake-target-duckdb"
        config = {{ path = "a.duckdb" }}
        [loaders.b]
        executable = "eltmake-target-duckdb"
        config = {{ path = "b.duckdb" }}
        [transformers.dbt]
        pip_url = "{PIN}"
        project_dir = "transform"
        [targets.m]
        transform = "dbt"
        """
    )
    proc = project.run("list")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "transformers.dbt: which warehouse does dbt write? The loaders write several (a, b)" in (
        proc.stderr
    )
    text = project.read("eltmake.toml").replace(
        'project_dir = "transform"', 'project_dir = "transform"\nwarehouse = "b"'
    )
    project.toml(text)
    assert project.run("list").returncode == 0
    project.toml(text.replace('warehouse = "b"', 'warehouse = "c"'))
    proc = project.run("list")
    assert proc.returncode == 2
    assert "transformers.dbt.warehouse: 'c' is neither a loader" in proc.stderr


def test_subprocess_imports_are_lazy() -> None:
    """The warehouse modules import neither duckdb nor psycopg at import time."""
    code = (
        "import sys; import eltmake_warehouse, eltmake_singer.outputs, "
        "eltmake_dbt.profiles, eltmake_dbt.transform; "
        "print(sorted(m for m in ('duckdb', 'psycopg', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

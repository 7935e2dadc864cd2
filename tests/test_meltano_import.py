"""``eltmake import meltano``: translation of small Meltano projects written here, checked by
parsing the result and by loading it with eltmake, and bad input.

Meltano itself is not needed (the lock files a real ``meltano add`` writes are written by hand);
tests/test_meltano_e2e.py runs a real Meltano.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import tomllib

import pytest
from eltmake_meltano import tomlw, yamlfile
from eltmake_meltano.meltano import read_project
from eltmake_meltano.translate import translate

from eltmake.state import StateStore

MELTANO_YML = """
version: 1
default_environment: dev
env:
  START: '2024-01-01'
plugins:
  extractors:
  - name: tap-shop
    namespace: tap_shop
    pip_url: tap-shop==1.0
    executable: tap-shop
    capabilities: [catalog, discover, state, not-a-capability]
    settings:
    - name: api_token
      kind: password
    - name: country
    config:
      country: NO
      start_date: $START
      base_url: ${API_URL}
      files: $MELTANO_PROJECT_ROOT/data/orders.json
      literal: \\$HOME and ${ not a var
      api_token: hunter2-secret-value
    select: [orders.*, '!orders.note']
    metadata:
      orders:
        replication-method: INCREMENTAL
  - name: tap-shop-eu
    inherit_from: tap-shop
    config:
      country: DE
  loaders:
  - name: target-jsonl
    variant: andyh1203
    config:
      destination_path: out
  - name: target-pg
    namespace: target_pg
    pip_url: target-pg==2.0
    config:
      password: ${PG_PASSWORD}
      schema: $MELTANO_EXTRACT__LOAD_SCHEMA
  mappers:
  - name: meltano-map-transformer
    pip_url: meltano-map-transform==0.5
    executable: meltano-map-transform
    mappings:
    - name: hash-email
      config:
        stream_maps:
          orders:
            email: md5(email)
            note: null
  utilities:
  - name: dbt-duckdb
    variant: jwills
    pip_url: dbt-core~=1.11.0 dbt-duckdb~=1.11.0 git+https://github.com/meltano/dbt-ext.git@main
    commands:
      run_marts: run --select marts --exclude marts.legacy --full-refresh
      docs: docs generate
    config:
      path: warehouse.duckdb
  - name: sqlfluff
    pip_url: sqlfluff
environments:
- name: dev
- name: prod
  config:
    plugins:
      extractors:
      - name: tap-shop
        config:
          start_date: $START
        select: [orders.*]
      loaders:
      - name: target-pg
        config:
          host: db.prod
  env:
    START: '2020-01-01'
jobs:
- name: daily
  tasks:
  - tap-shop hash-email target-jsonl
  - tap-shop-eu target-jsonl
  - dbt-duckdb:run_marts
  - dbt-duckdb:docs sqlfluff:lint
- name: pg
  tasks: tap-shop target-pg
schedules:
- name: daily-at-six
  interval: 0 6 * * *
  job: daily
- name: hourly-eu
  interval: '@hourly'
  extractor: tap-shop-eu
  loader: target-pg
  transform: skip
"""

LOCK = {
    "plugin_type": "loaders",
    "name": "target-jsonl",
    "namespace": "target_jsonl",
    "variant": "andyh1203",
    "pip_url": "target-jsonl==0.1.4",
    "executable": "target-jsonl",
    "capabilities": ["about", "stream-maps"],
    "settings": [
        {"name": "destination_path", "kind": "string", "value": "output"},
        {"name": "access_key", "kind": "string", "sensitive": True},
    ],
}


@pytest.fixture
def shop(project):
    """The project above, with its lock file and dbt project, ready to import."""
    project.write("meltano.yml", MELTANO_YML)
    project.write("plugins/loaders/target-jsonl--andyh1203.lock", json.dumps(LOCK))
    project.write("transform/dbt_project.yml", "name: shop\nprofile: shop\n")
    project.write("transform/profiles/duckdb/profiles.yml", "shop: {target: dev, outputs: {}}\n")
    return project


def imported(project, *args, check=0):
    proc = project.run("import", "meltano", *args, check=check)
    return proc, tomllib.loads(project.read("eltmake.toml"))


def test_plugins_translate_with_config_select_capabilities_and_inheritance(shop):
    proc, doc = imported(shop)
    tap = doc["extractors"]["tap-shop"]
    assert tap["pip_url"] == "tap-shop==1.0"
    assert "executable" not in tap  # the table's name is the default
    assert tap["select"] == ["orders.*", "!orders.note"]
    assert tap["capabilities"] == ["catalog", "discover", "state"]
    assert "not-a-capability" in proc.stderr  # left out, and said so
    cfg = tap["config"]
    assert cfg["country"] == "NO"  # YAML 1.2: not the boolean false
    assert cfg["start_date"] == "${START:-2024-01-01}"  # meltano.yml's env as the default
    assert cfg["base_url"] == "${API_URL}"
    assert cfg["files"] == "data/orders.json"  # eltmake runs tools in the project folder
    assert cfg["literal"] == "$HOME and $${ not a var"
    eu = doc["extractors"]["tap-shop-eu"]
    assert eu["pip_url"] == "tap-shop==1.0" and eu["executable"] == "tap-shop"
    assert eu["config"]["country"] == "DE" and eu["config"]["start_date"] == "${START:-2024-01-01}"
    assert eu["select"] == tap["select"]
    # The lock file stands in for the Hub: pip_url, capabilities, the sensitive setting.
    jsonl = doc["loaders"]["target-jsonl"]
    assert jsonl["pip_url"] == "target-jsonl==0.1.4"
    assert jsonl["capabilities"] == ["about", "stream-maps"]
    assert jsonl["secrets"] == ["access_key"]
    mapper = doc["mappers"]["hash-email"]
    assert mapper["executable"] == "meltano-map-transform"
    assert mapper["config"]["stream_maps"]["orders"] == {"email": "md5(email)", "note": "__NULL__"}
    assert "metadata" in proc.stderr and "INCREMENTAL" in proc.stderr


def test_secrets_become_references_and_are_never_copied(shop):
    proc, doc = imported(shop)
    text = shop.read("eltmake.toml")
    assert "hunter2" not in text and "hunter2" not in proc.stderr + proc.stdout
    tap = doc["extractors"]["tap-shop"]
    assert tap["config"]["api_token"] == "${TAP_SHOP_API_TOKEN}"
    assert tap["secrets"] == ["api_token"]
    pg = doc["loaders"]["target-pg--tap-shop"]
    assert pg["config"]["password"] == "${PG_PASSWORD}" and pg["secrets"] == ["password"]
    assert "TAP_SHOP_API_TOKEN" in proc.stderr  # told what to set


def test_jobs_become_targets_in_task_order_and_dbt_tasks_dbt_targets(shop):
    proc, doc = imported(shop)
    t = doc["targets"]
    first = t["tap-shop-to-target-jsonl-via-hash-email"]
    assert (first["extract"], first["map"], first["load"]) == (
        "tap-shop",
        ["hash-email"],
        "target-jsonl",
    )
    # Meltano keeps one state per tap-target pair, whatever the mappers.
    assert first["state_id"] == "tap-shop-to-target-jsonl"
    assert t["tap-shop-eu-to-target-jsonl"]["deps"] == ["tap-shop-to-target-jsonl-via-hash-email"]
    marts = t["dbt-run_marts"]
    assert (marts["transform"], marts["command"], marts["select"], marts["exclude"]) == (
        "dbt", "run", "marts", "marts.legacy",
    )  # fmt: skip
    assert marts["full_refresh"] is True
    assert marts["deps"] == ["tap-shop-eu-to-target-jsonl"]
    assert t["daily"]["deps"] == [
        "tap-shop-to-target-jsonl-via-hash-email",
        "tap-shop-eu-to-target-jsonl",
        "dbt-run_marts",
    ]
    assert t["pg"]["deps"] == ["tap-shop-to-target-pg"]
    assert "docs generate" in proc.stderr and "sqlfluff:lint" in proc.stderr
    tf = doc["transformers"]["dbt"]
    assert tf["pip_url"] == "dbt-core~=1.11.0 dbt-duckdb~=1.11.0"  # dbt-ext left out
    assert tf["project_dir"] == "transform"
    assert tf["profiles_dir"] == "transform/profiles/duckdb"
    assert tf["env"]["DBT_DUCKDB_PATH"] == "warehouse.duckdb"


def test_pipeline_variables_and_elt_schedules(shop):
    _, doc = imported(shop)
    # target-pg's schema is the extractor's namespace, per pipeline: two extractors, two copies.
    assert doc["loaders"]["target-pg--tap-shop"]["config"]["schema"] == "tap_shop"
    assert doc["loaders"]["target-pg--tap-shop-eu"]["config"]["schema"] == "tap_shop"  # inherited
    assert doc["targets"]["pg"]["deps"] == ["tap-shop-to-target-pg"]
    assert doc["targets"]["tap-shop-to-target-pg"]["load"] == "target-pg--tap-shop"
    # An extractor/loader schedule runs with --state-id=NAME: a target of that name.
    hourly = doc["targets"]["hourly-eu"]
    assert (hourly["extract"], hourly["load"]) == ("tap-shop-eu", "target-pg--tap-shop-eu")
    text = shop.read("eltmake.toml")
    assert "#   0 6 * * *  eltmake -C PROJECT build daily --env dev" in text
    assert "#   0 * * * *  eltmake -C PROJECT build hourly-eu --env dev" in text


def test_environments_become_overlays(shop):
    _, doc = imported(shop)
    prod = doc["environments"]["prod"]
    tap = prod["extractors"]["tap-shop"]
    assert tap["select"] == ["orders.*"]
    assert tap["config"] == {"start_date": "${START:-2020-01-01}"}  # the environment's env
    # The inheriting extractor reads $START too: its value changes with the environment.
    assert prod["extractors"]["tap-shop-eu"]["config"] == {"start_date": "${START:-2020-01-01}"}
    assert prod["loaders"]["target-pg--tap-shop"]["config"] == {"host": "db.prod"}
    assert doc["environments"]["dev"] == {}


@pytest.mark.integration  # eltmake list parses the dbt project: dbt is installed from PyPI
def test_the_result_loads_with_eltmake_in_every_environment(shop, tools_dir):
    proc, _ = imported(shop)
    assert "the result loads" in proc.stderr
    env = {"API_URL": "http://x", "TAP_SHOP_API_TOKEN": "t", "PG_PASSWORD": "p"}
    env["ELTMAKE_TOOLS_DIR"] = tools_dir
    for extra in ([], ["--env", "prod"]):
        listed = shop.run("list", *extra, check=True, env=env)
        assert "tap-shop-to-target-jsonl-via-hash-email" in listed.stdout
        assert "dbt-run_marts" in listed.stdout


def test_refuses_to_overwrite_without_force_and_dry_run_writes_nothing(shop):
    shop.write("eltmake.toml", "# mine\n")
    proc = shop.run("import", "meltano", check=2)
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    assert shop.read("eltmake.toml") == "# mine\n"
    proc = shop.run("import", "meltano", "--dry-run", check=0)
    assert tomllib.loads(proc.stdout)["extractors"]["tap-shop"]
    assert shop.read("eltmake.toml") == "# mine\n"
    shop.run("import", "meltano", "--force", check=0)
    assert "[extractors.tap-shop]" in shop.read("eltmake.toml")


def test_include_paths_merge_as_meltano_merges_them(project):
    project.write(
        "meltano.yml",
        """
        include_paths: ['extract/*.meltano.yml']
        plugins:
          loaders:
          - name: target-jsonl
            pip_url: target-jsonl
        jobs:
        - name: a
          tasks: [tap-a target-jsonl]
        """,
    )
    project.write(
        "extract/a.meltano.yml",
        "plugins:\n  extractors:\n  - name: tap-a\n    pip_url: tap-a\n"
        "jobs:\n- name: b\n  tasks: [tap-a target-jsonl]\n",
    )
    _, doc = imported(project)
    assert set(doc["extractors"]) == {"tap-a"}
    assert doc["targets"]["a"]["deps"] == doc["targets"]["b"]["deps"] == ["tap-a-to-target-jsonl"]


def test_a_plugin_that_needs_the_hub_is_listed_not_guessed(project):
    project.write(
        "meltano.yml",
        """
        plugins:
          extractors:
          - name: tap-github
            variant: meltanolabs
          loaders:
          - name: target-jsonl
            pip_url: target-jsonl
        jobs:
        - name: gh
          tasks: [tap-github target-jsonl]
        """,
    )
    proc, doc = imported(project)
    assert "extractors" not in doc
    assert "plugins.extractors.tap-github: no pip_url and no lock file" in proc.stderr
    assert "jobs.gh: tap-github target-jsonl: not translated" in project.read("eltmake.toml")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"meltano.yml": "plugins:\n  extractors: [\n"}, "meltano.yml:3:1: invalid YAML"),
        (
            {"meltano.yml": "plugins:\n  widgets: []\n"},
            "meltano.yml: plugins.widgets: unknown plugin type",
        ),
        (
            {"meltano.yml": "include_paths: [extra/*.meltano.yml]\n"},
            "meltano.yml: include_paths[0]: 'extra/*.meltano.yml' matches no file",
        ),
        (
            {
                "meltano.yml": "include_paths: [jobs.meltano.yml]\nplugins:\n  loaders:\n"
                "  - {name: target-x, pip_url: x}\n",
                "jobs.meltano.yml": "jobs:\n- name: j\n  tasks: [tap-missing target-x]\n",
            },
            "jobs.meltano.yml: jobs[0] (j).tasks[0]: no plugin named 'tap-missing'",
        ),
        ({"meltano.yml": "a: 1\na: 2\n"}, "meltano.yml:2:1: invalid YAML: duplicate key 'a'"),
        (
            {
                "meltano.yml": "plugins:\n  extractors:\n  - {name: t, pip_url: t}\njobs:\n- {name: j, tasks: t}\n"
            },
            "meltano.yml: jobs[0] (j).tasks[0]: extractor 't' is followed by the end of the task",
        ),
        ({"meltano.yml": "- just\n- a list\n"}, "meltano.yml: must be a YAML mapping"),
        (
            {"meltano.yml": "schedules:\n- {name: s, interval: '@daily', job: nightly}\n"},
            "meltano.yml: schedules[0] (s).job: no job named 'nightly'",
        ),
        (
            {"meltano.yml": "environments:\n- name: e\n  config:\n    plugins:\n      taps: []\n"},
            "meltano.yml: environments[0] (e).config.plugins.taps: unknown plugin type",
        ),
        ({}, "meltano.yml: not found"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_key_exit_2(project, files, expected):
    for name, text in files.items():
        project.write(name, text)
    proc = project.run("import", "meltano", check=2)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project.root / "eltmake.toml").exists()


# --- state ------------------------------------------------------------------------------------


def meltano_db(path, rows):
    """A system database with Meltano's ``state`` table (meltano/core/job_state.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE state (state_id VARCHAR NOT NULL PRIMARY KEY, updated_at DATETIME, "
        "partial_state VARCHAR, completed_state VARCHAR)"
    )
    for sid, partial, completed in rows:
        db.execute(
            "INSERT INTO state VALUES (?, NULL, ?, ?)",
            (sid, json.dumps(partial), json.dumps(completed)),
        )
    db.commit()
    db.close()


def bookmarks(**streams):
    return {"singer_state": {"bookmarks": streams}}


def test_state_is_copied_to_the_targets_of_its_pair(shop):
    meltano_db(
        shop.root / ".meltano" / "meltano.db",
        [
            # A partial state (a run that failed after a commit) wins over the completed one.
            ("dev:tap-shop-to-target-jsonl", bookmarks(orders={"id": 9}), bookmarks(orders={"id": 5}, users={"id": 2})),
            ("prod:tap-shop-to-target-jsonl", {}, bookmarks(orders={"id": 1000})),
            ("hourly-eu", {}, bookmarks(orders={"id": 7})),
            ("dev:tap-gone-to-target-jsonl", {}, bookmarks(orders={"id": 1})),
        ],
    )  # fmt: skip
    imported(shop)
    proc = shop.run("import", "meltano", "--state", check=0)
    store = StateStore(shop.root / ".eltmake" / "state.db")
    # An explicit state_id (Meltano's pair) is used as written; a default one is scoped by the
    # environment, as the Singer recipe scopes it.
    sid = "tap-shop-to-target-jsonl"
    assert store.get(sid) == {"bookmarks": {"orders": {"id": 9}, "users": {"id": 2}}}
    assert store.get("dev:hourly-eu") == {"bookmarks": {"orders": {"id": 7}}}
    assert "prod:tap-shop-to-target-jsonl: environment 'prod'" in proc.stderr
    assert "dev:tap-gone-to-target-jsonl" in proc.stderr
    store.close()
    # eltmake's own bookmarks are not replaced without --force.
    again = shop.run("import", "meltano", "--state", check=2)
    assert "already has state" in again.stderr
    shop.run("import", "meltano", "--state", "--force", "--env", "prod", check=0)
    store = StateStore(shop.root / ".eltmake" / "state.db")
    assert store.get(sid) == {"bookmarks": {"orders": {"id": 1000}}}


def test_state_from_a_meltano_state_get_file(shop):
    imported(shop)
    shop.write("pg.json", json.dumps(bookmarks(orders={"id": 3})))
    shop.run(
        "import", "meltano", "--state-file", "pg.json", "--state-id", "dev:tap-shop-to-target-pg",
        check=0,
    )  # fmt: skip
    store = StateStore(shop.root / ".eltmake" / "state.db")
    assert store.get("dev:tap-shop-to-target-pg") == {"bookmarks": {"orders": {"id": 3}}}
    missing = shop.run("import", "meltano", "--state-file", "pg.json", check=2)
    assert "--state-id" in missing.stderr


def test_state_ids_meltano_ran_outside_jobs_get_targets(project):
    project.write(
        "meltano.yml",
        "plugins:\n  extractors:\n  - {name: tap-a, pip_url: tap-a}\n"
        "  loaders:\n  - {name: target-b, pip_url: target-b}\n",
    )
    meltano_db(
        project.root / ".meltano" / "meltano.db",
        [("dev:tap-a-to-target-b", {}, bookmarks(s={"x": 1}))],
    )
    _, doc = imported(project)
    assert doc["targets"]["tap-a-to-target-b"] == {
        "extract": "tap-a",
        "load": "target-b",
        "description": "Meltano ran this pipeline (state dev:tap-a-to-target-b)",
    }


# --- the pieces -------------------------------------------------------------------------------


NASTY = {
    "plain": "abc",
    'quote"s': 'say "hi" \\ back',
    "control": "tab\there\nnew\x00nul\x7fdel\x85nel",
    "unicode": "é ☃ 𝄞",
    "dotted.key": 1,
    "": "empty key",
    "numbers": [0, -1, 1.5, 1e300, float("inf"), float("-inf")],
    "bools": [True, False],
    "nested": {"a": {"b": [{"c": "d", "e": []}, {}]}, "empty": {}},
    "mixed": [[1, 2], ["x"], {"k": "v"}],
}


def test_toml_writer_round_trips():
    text = tomlw.table(["t", "a.b", "x y"], NASTY)
    assert tomllib.loads(text)["t"]["a.b"]["x y"] == NASTY


def test_yaml_reads_as_meltano_reads():
    doc = yamlfile.loads("a: NO\nb: yes\nc: 2024-01-01\nd: true\ne: 0.5\nf: ~\n", "x.yml")
    assert doc == {"a": "NO", "b": "yes", "c": "2024-01-01", "d": True, "e": 0.5, "f": None}


def test_translate_is_a_pure_function(shop):
    project = read_project(shop.root / "meltano.yml")
    a, b = translate(project), translate(project)
    assert a.text == b.text and not (shop.root / "eltmake.toml").exists()
    assert textwrap.dedent(a.text).startswith("# Imported from meltano.yml")

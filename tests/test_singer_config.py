"""Singer tables and target keys: validation, resolved config, secrets, state merge, selection."""

from __future__ import annotations

import os
import stat
import textwrap

import pytest
from eltmake_singer import catalog
from eltmake_singer.bookmarks import merge_state, unwrap_state_line
from eltmake_singer.config import (
    key_facts,
    redact,
    resolve_config,
    secret_values,
    tool,
    write_config,
)

from eltmake.errors import ConfigError
from eltmake.project import load_project
from eltmake.redact import Redactor

BASE = """
[extractors.tap-jsnl]
pip_url = "tap-jsonl==0.3.1"
config = { path = "data/orders.jsonl", stream_name = "orders", limit = 5, password = "pw-secret-1" }
secrets = ["api_seed"]
select = ["orders.*"]

[loaders.target-jsonl]
pip_url = "target-jsonl==0.1.4"
config = { destination_path = "out", auth = { token = "tok-nested-2" } }
"""


def load(tmp_path, text: str, environ: dict | None = None):
    (tmp_path / "eltmake.toml").write_text(textwrap.dedent(BASE + text))
    return load_project(tmp_path, environ={"PATH": os.environ["PATH"], **(environ or {})})


def error(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_a_valid_target_loads(tmp_path):
    project = load(tmp_path, '[targets.raw]\nextract = "tap-jsnl"\nload = "target-jsonl"\n')
    assert project.targets["raw"].kind == "singer"


def test_unknown_extractor_gets_did_you_mean(tmp_path):
    msg = error(tmp_path, '[targets.raw]\nextract = "tap-jsonl"\nload = "target-jsonl"\n')
    assert msg.startswith("eltmake.toml: targets.raw.extract: no extractor named 'tap-jsonl'")
    assert "did you mean 'tap-jsnl'" in msg


def test_a_loader_named_as_extractor_says_where_it_is(tmp_path):
    msg = error(tmp_path, '[targets.raw]\nextract = "target-jsonl"\nload = "target-jsonl"\n')
    assert "is defined in [loaders], not [extractors]" in msg


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[targets.raw]\nextract = "tap-jsnl"\n', "targets.raw: an extract step needs `load"),
        (
            '[targets.raw]\nextract = "tap-jsnl"\nload = "target-jsonl"\nmap = ["nope"]\n',
            "targets.raw.map: no mapper named 'nope'",
        ),
        (
            '[targets.raw]\nextract = "tap-jsnl"\nload = "target-jsonl"\ntimeout = "soon"\n',
            "targets.raw.timeout: 'soon' is not",
        ),
        (
            '[targets.raw]\nextract = "tap-jsnl"\nload = "target-jsonl"\nselect = ["!"]\n',
            "targets.raw.select: '!' is not a selection pattern",
        ),
        (
            '[targets.raw]\nextract = "tap-jsnl"\nload = "target-jsonl"\nmax_line_bytes = 0\n',
            "max_line_bytes: must be a positive",
        ),
        (
            '[extractors.tap-x]\nexecutabel = "x"\n',
            "extractors.tap-x: unknown key 'executabel' (did you mean 'executable'?)",
        ),
        ('[loaders.t]\nselect = ["a.*"]\n', "only extractors have select"),
        (
            '[extractors.tap-x]\ncapabilities = ["discovr"]\n',
            "unknown capability 'discovr' (did you mean 'discover'?)",
        ),
        (
            '[extractors.tap-x]\nconfig = "path=x"\n',
            "extractors.tap-x.config: must be a dict, not str",
        ),
        (
            "[extractors.target-jsonl]\n",
            "the name 'target-jsonl' is already used by [extractors.target-jsonl]",
        ),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path, text, expected):
    assert expected in error(tmp_path, text)


def test_environment_overrides_follow_meltano_names(tmp_path):
    project = load(
        tmp_path,
        "",
        environ={
            "TAP_JSNL_PATH": "other.jsonl",
            "TAP_JSNL_LIMIT": "7",
            "TAP_JSNL_API_SEED": "seed-secret-3",
            "TAP_JSNL_UNRELATED": "x",
        },
    )
    config = resolve_config(project, tool(project, "extractors", "tap-jsnl"))
    assert config["path"] == "other.jsonl"
    assert config["limit"] == 7  # a number stays a number
    assert config["api_seed"] == "seed-secret-3"  # listed in secrets: may come from the env alone
    assert "unrelated" not in config


def test_a_bad_override_is_a_config_error_without_the_secret(tmp_path):
    project = load(tmp_path, "", environ={"TAP_JSNL_LIMIT": "many"})
    with pytest.raises(ConfigError, match="TAP_JSNL_LIMIT"):
        resolve_config(project, tool(project, "extractors", "tap-jsnl"))


def test_secrets_are_masked_everywhere_and_enter_the_key_as_a_digest(tmp_path):
    project = load(tmp_path, "", environ={"TAP_JSNL_API_SEED": "seed-secret-3"})
    tap = tool(project, "extractors", "tap-jsnl")
    loader = tool(project, "loaders", "target-jsonl")
    tap_cfg, loader_cfg = resolve_config(project, tap), resolve_config(project, loader)
    shown = redact(tap, tap_cfg)
    assert shown["password"] == shown["api_seed"] == "****"
    assert shown["path"] == "data/orders.jsonl"
    assert redact(loader, loader_cfg)["auth"]["token"] == "****"
    facts = key_facts(project, tap, tap_cfg)
    text = repr(facts) + repr(key_facts(project, loader, loader_cfg))
    for secret in ("pw-secret-1", "seed-secret-3", "tok-nested-2"):
        assert secret not in text
    assert facts["secrets_digest"]
    other = key_facts(project, tap, {**tap_cfg, "password": "changed"})
    assert other["secrets_digest"] != facts["secrets_digest"]
    scrub = Redactor(secret_values(tap, tap_cfg) + secret_values(loader, loader_cfg))
    assert scrub("login pw-secret-1 with tok-nested-2 ok") == "login **** with **** ok"


def test_config_files_are_readable_by_the_owner_only(tmp_path):
    path = write_config(tmp_path, "c.json", {"password": "x"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- state merge --------------------------------------------------------------------------------


def test_bookmarks_merge_per_stream_and_other_keys_are_replaced():
    stored = {"bookmarks": {"a": {"v": 1}, "b": {"v": 1}}, "currently_syncing": "a", "x": 1}
    emitted = {"bookmarks": {"b": {"v": 2}, "c": {"v": 1}}, "currently_syncing": None}
    merged = merge_state(stored, emitted)
    assert merged == {
        "bookmarks": {"a": {"v": 1}, "b": {"v": 2}, "c": {"v": 1}},
        "currently_syncing": None,
        "x": 1,
    }
    assert stored["bookmarks"] == {"a": {"v": 1}, "b": {"v": 1}}  # not changed in place
    assert merge_state(None, emitted) == emitted
    assert unwrap_state_line({"type": "STATE", "value": {"k": 1}}) == {"k": 1}
    assert unwrap_state_line({"bookmarks": {}}) == {"bookmarks": {}}


# --- selection ----------------------------------------------------------------------------------


def _catalog():
    def meta(crumb, **m):
        return {"breadcrumb": crumb, "metadata": m}

    return {
        "streams": [
            {
                "tap_stream_id": "orders",
                "schema": {
                    "properties": {
                        "id": {},
                        "note": {},
                        "total": {},
                        "addr": {"properties": {"zip": {}, "city": {}}},
                    }
                },
                "metadata": [meta([]), meta(["properties", "id"], inclusion="automatic")],
            },
            {
                "tap_stream_id": "customers",
                "schema": {"properties": {"id": {}, "email": {}}},
                "metadata": [],
            },
            {"tap_stream_id": "logs", "schema": {"properties": {"line": {}}}, "metadata": []},
        ]
    }


def _selected(patterns):
    rows = catalog.selection_rows(catalog.apply_selection(_catalog(), patterns))
    return {f"{s}.{p}" if p else s for s, p, status in rows if status in ("selected", "automatic")}


def test_default_selection_is_everything():
    assert _selected(None) >= {"orders", "orders.note", "customers.email", "logs.line"}


def test_exclusion_beats_inclusion_whatever_the_order():
    chosen = _selected(["!orders.note", "orders.*"])
    assert "orders.note" not in chosen
    assert {"orders", "orders.id", "orders.total", "orders.addr"} <= chosen
    assert "customers" not in chosen


def test_wildcards_nested_properties_and_stream_exclusion():
    chosen = _selected(["*.*", "!logs", "!orders.addr.zip"])
    assert "logs" not in chosen
    assert "orders.addr.city" in chosen and "orders.addr.zip" not in chosen
    assert {"customers", "customers.email"} <= chosen
    assert "orders" not in _selected(["orders.*", "!orders.*"])


def test_a_stream_pattern_alone_selects_only_automatic_properties_as_in_meltano():
    chosen = _selected(["orders"])
    assert {"orders", "orders.id"} <= chosen
    assert "orders.note" not in chosen

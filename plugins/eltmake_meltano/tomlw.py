"""A small TOML writer for the files the importer produces.

Why not ``tomli_w``: the importer's output is meant to be read and edited by people, so it needs
comments (what was not translated and why, schedules, Meltano's default environment) placed
beside the tables they concern, which no TOML library writes. What we emit is a small subset of
TOML: tables with scalar, array and inline-table values. Every value goes through
:func:`value`, whose output ``tomllib`` reads back as the same Python value (tested).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    """A key as written in TOML: bare when it can be, else a quoted string."""
    return name if _BARE_KEY.match(name) else string(name)


def header(path: list[str]) -> str:
    """``[extractors."tap.x".config]`` for ``["extractors", "tap.x", "config"]``."""
    return "[" + ".".join(key(p) for p in path) + "]"


def string(text: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except that TOML also wants DEL and the
    C1 controls escaped, which ``json.dumps`` leaves as they are."""
    out = json.dumps(text, ensure_ascii=False)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04X}", out)


def value(v: Any) -> str:
    """One value: string, integer, float, boolean, array or inline table (no None: TOML has no
    null, so the caller must drop or replace it first)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise TypeError("TOML has no null value")
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def table(
    path: list[str], body: dict[str, Any], comments: dict[str, list[str]] | None = None
) -> str:
    """``[path]`` with ``body``'s values. Nested dicts become sub-tables (``[path.key]``) after the
    table's own values, so that a big ``config`` reads as a table of its own; dicts inside arrays
    stay inline. ``comments`` puts ``# lines`` above a key."""
    comments = comments or {}
    lines = [header(path)]
    subs: list[tuple[str, dict[str, Any]]] = []
    for k, v in body.items():
        if isinstance(v, dict) and v and not _inline_better(v):
            subs.append((k, v))
            continue
        lines += [f"# {c}" if c else "#" for c in comments.get(k, [])]
        lines.append(f"{key(k)} = {value(v)}")
    # A table holding only sub-tables needs no header of its own (TOML defines it implicitly).
    text = "\n".join(lines) + "\n" if len(lines) > 1 or not subs else ""
    for k, v in subs:
        pre = "".join(f"# {c}\n" for c in comments.get(k, []))
        text += ("\n" if text else "") + pre + table([*path, k], v)
    return text


def _inline_better(v: dict[str, Any]) -> bool:
    """A small flat dict reads better inline (``env = { A = "1" }``)."""
    return (
        len(v) <= 3
        and all(not isinstance(x, dict | list) for x in v.values())
        and (len(value(v)) <= 60)
    )

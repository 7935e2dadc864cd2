"""dbt's node selection syntax, resolved over the cached manifest summary.

Why not ask dbt (``dbt ls --select``)? It costs 2-4 s per selection per change of the dbt project,
and eltmake needs the answer before deciding whether anything runs. This module implements the
common part of the syntax exactly as dbt does (checked against ``dbt ls`` in the tests):

* unions (``a b``), intersections (``a,b``), ``--exclude``;
* graph operators ``+x``, ``x+``, ``2+x``, ``x+1``, ``@x``;
* methods ``fqn`` (the default: a name, a folder, ``pkg.folder.*``), ``path``, ``file``, ``tag``,
  ``resource_type``, ``package``, ``source``, ``test_type``, ``config.materialized``;
* eager indirect selection: a test is selected when any node it tests is.

Anything else (``state:``, ``result:``, ``exposure:``, other ``config.`` keys ...) returns
``None``, and the caller asks ``dbt ls`` once and caches that answer by the project digest.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eltmake_dbt.manifest import Info

# dbt's own pattern (dbt/graph/selector_spec.py).
RAW_SELECTOR = re.compile(
    r"\A(?P<childrens_parents>@)?"
    r"(?P<parents>(?P<parents_depth>\d*)\+)?"
    r"((?P<method>[\w.]+):)?(?P<value>.*?)"
    r"(?P<children>\+(?P<children_depth>\d*))?\Z"
)
COMMAND_TYPES = {
    "build": {"model", "seed", "snapshot", "test", "unit_test"},
    "run": {"model"},
    "test": {"test", "unit_test"},
    "seed": {"seed"},
    "snapshot": {"snapshot"},
}
TESTS = {"test", "unit_test"}
_WILD = ("*", "?", "[", "]")


class Unsupported(Exception):
    """A selector this module does not resolve; ask dbt."""


def resolve(
    info: Info, project_dir: Path, select: list[str], exclude: list[str], command: str
) -> list[str] | None:
    """The unique ids ``dbt COMMAND --select ... --exclude ...`` would run, or None (ask dbt)."""
    try:
        universe = {uid for uid, n in info.nodes.items() if n.get("enabled", True)}
        chosen = _union(info, project_dir, select) if select else set(universe)
        if exclude:
            chosen -= _union(info, project_dir, exclude)
    except Unsupported:
        return None
    types = COMMAND_TYPES[command]
    return sorted(uid for uid in chosen if uid in universe and info.nodes[uid]["t"] in types)


def _union(info: Info, project_dir: Path, words: list[str]) -> set[str]:
    out: set[str] = set()
    for word in words:
        parts = [p for p in word.split(",") if p]
        sets = [_leaf(info, project_dir, p) for p in parts]
        if sets:
            out |= set.intersection(*sets)
    return out


def _leaf(info: Info, project_dir: Path, raw: str) -> set[str]:
    m = RAW_SELECTOR.match(raw)
    if not m:
        raise Unsupported(raw)
    method = m.group("method")
    value = m.group("value")
    if not method:
        if os.sep in value or "/" in value:
            method = "path"
        elif value.lower().endswith((".sql", ".py", ".csv")):
            method = "file"
        else:
            method = "fqn"
    found = _match(info, project_dir, method, value)
    if m.group("childrens_parents"):
        kids = _walk(info.child_map(), found, None)
        found = found | kids
        found |= _walk(_parent_map(info), found, None)
    else:
        if m.group("parents"):
            depth = m.group("parents_depth")
            found |= _walk(_parent_map(info), found, int(depth) if depth else None)
        if m.group("children"):
            depth = m.group("children_depth")
            found |= _walk(info.child_map(), found, int(depth) if depth else None)
    # Eager indirect selection: tests of any selected node come along.
    kids = info.child_map()
    tests = {k for uid in found for k in kids.get(uid, []) if info.nodes[k]["t"] in TESTS}
    return found | tests


def _parent_map(info: Info) -> dict[str, list[str]]:
    return {uid: n.get("parents", []) for uid, n in info.nodes.items()}


def _walk(edges: dict[str, list[str]], start: set[str], depth: int | None) -> set[str]:
    seen: set[str] = set()
    frontier = set(start)
    level = 0
    while frontier and (depth is None or level < depth):
        nxt = {v for u in frontier for v in edges.get(u, []) if v not in seen}
        seen |= nxt
        frontier = nxt
        level += 1
    return seen


def _everything(info: Info):
    for uid, n in info.nodes.items():
        yield uid, n
    for uid, s in info.sources.items():
        yield uid, {**s, "t": "source", "path": s.get("path")}


def _match(info: Info, project_dir: Path, method: str, value: str) -> set[str]:
    if method == "fqn":
        if any(n.get("version") is not None for n in info.nodes.values()):
            raise Unsupported("versioned models")  # their own matching rules: ask dbt
        return {uid for uid, n in info.nodes.items() if _fqn_match(n.get("fqn") or [], value)}
    if method == "path":
        paths = {os.path.normpath(os.path.relpath(p, project_dir)) for p in project_dir.glob(value)}
        out = set()
        for uid, n in _everything(info):
            for f in (n.get("path"), n.get("patch")):
                if not f:
                    continue
                f = os.path.normpath(f)
                if f in paths or any(str(p) in paths for p in Path(f).parents):
                    out.add(uid)
        return out
    if method == "file":
        return {
            uid
            for uid, n in _everything(info)
            if n.get("path")
            and (fnmatch(Path(n["path"]).name, value) or fnmatch(Path(n["path"]).stem, value))
        }
    if method == "tag":
        return {
            uid for uid, n in _everything(info) if any(fnmatch(t, value) for t in n.get("tags", []))
        }
    if method == "resource_type":
        return {uid for uid, n in _everything(info) if n["t"] == value}
    if method == "package":
        name = info.project_name if value == "this" else value
        return {uid for uid, n in _everything(info) if fnmatch(n.get("package") or "", name)}
    if method == "source":
        parts = value.split(".")
        if len(parts) > 3:
            raise Unsupported(value)
        out = set()
        for uid, s in info.sources.items():
            have = [s.get("package") or "", s["source"], s["name"]][-len(parts) :]
            if all(fnmatch(h, p) for h, p in zip(have, parts, strict=True)):
                out.add(uid)
        return out
    if method == "test_type":
        kinds = {"generic": "generic", "singular": "singular", "data": "singular"}
        if value == "unit":
            return {uid for uid, n in info.nodes.items() if n["t"] == "unit_test"}
        if value not in kinds:
            raise Unsupported(value)
        return {
            uid
            for uid, n in info.nodes.items()
            if n["t"] == "test" and n.get("test_type") == kinds[value]
        }
    if method == "config.materialized":
        return {uid for uid, n in info.nodes.items() if fnmatch(n.get("materialized") or "", value)}
    raise Unsupported(method)


def _fqn_match(fqn: list[str], selector: str) -> bool:
    """dbt's FQN match: the node's name, or a dotted prefix of its fqn (with or without package)."""
    return bool(fqn) and (_is_selected(fqn, selector) or _is_selected(fqn[1:], selector))


def _is_selected(fqn: list[str], selector: str) -> bool:
    if not fqn:
        return False
    if fqn[-1] == selector:
        return True
    flat = [item for segment in fqn for item in segment.split(".")]
    parts = selector.split(".")
    if len(flat) < len(parts):
        return False
    for i, part in enumerate(parts):
        if any(w in part for w in _WILD):
            if fnmatch(".".join(flat[i:]), ".".join(parts[i:])):
                return True
            # A bare wildcard ("stg_*") also matches the leaf, however deep the node sits.
            return "." not in selector and fnmatch(fqn[-1], selector)
        if flat[i] != part:
            return False
    return True

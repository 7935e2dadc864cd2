"""``eltmake_infer_deps``: edges from extract-load targets (and other dbt targets) to dbt targets.

Runs on every load, so it uses the cached manifest summary. In a build, dbt runs only when the
dbt project's files changed since the last parse (and then it would have to run for the build
anyway). Read-only commands (``list``, ``graph``, ``status``, ``build -n``) never install or start
dbt: they use the last summary as it is, and without one they show the declared edges and say,
once, when dbt lineage appears.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from eltmake_dbt import config as _config
from eltmake_dbt import lineage as _lineage
from eltmake_dbt import manifest as _manifest
from eltmake_dbt import transform as _transform

if TYPE_CHECKING:
    from eltmake.api import Project


_said: set[str] = set()


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(text, file=sys.stderr, flush=True)


def infer(project: Project) -> list[tuple[str, str, str]]:
    dbt_targets = [t for t in project.targets.values() if t.kind == _config.KIND]
    if not dbt_targets:
        return []
    loaded = _lineage.loaded_tables(project)
    edges: list[tuple[str, str, str]] = []
    by_tf: dict[str, list] = {}
    for t in dbt_targets:
        by_tf.setdefault(t.config["transform"], []).append(t)
    for tf_name, targets in by_tf.items():
        tf = _config.transformer(project, tf_name)
        info = _manifest.load(project, tf)
        if info is None:
            _say_once(
                f"dbt: no lineage yet for {os.path.relpath(tf.project_dir, project.root)}/ (dbt "
                "has not parsed it): edges from dbt sources appear after `eltmake install` or the "
                "first build; until then only declared deps are shown"
            )
            continue
        if not info.nodes:
            continue  # never parsed: the dbt step will show dbt's error
        selected: dict[str, list[str]] = {}
        for t in targets:
            step = _transform.make_step(project, t)
            if info.stale is not None or info.error:  # no dbt ls in a read-only command
                from eltmake_dbt import select as _select

                p = step.params
                found = _select.resolve(
                    info, tf.project_dir, p["select"], p["exclude"], p["command"]
                )
                if found is None:
                    found = info.selections.get(
                        json.dumps([p["command"], p["select"], p["exclude"]])
                    )
                selected[t.name] = found or []
            else:
                selected[t.name] = _transform.selection(project, tf, info, step.params) or []
        builders: dict[str, str] = {}  # node → the target that builds it
        for name, uids in selected.items():
            for uid in uids:
                if info.nodes[uid]["t"] in _manifest.BUILDS_RELATION:
                    builders.setdefault(uid, name)
        for name, uids in selected.items():
            mine = set(uids)
            seen: set[tuple[str, str]] = set()
            for uid in uids:
                node = info.nodes[uid]
                for parent in node.get("parents", []):
                    src = info.sources.get(parent)
                    if src is not None:
                        key = (_lineage.norm(src["schema"]), _lineage.norm(src["identifier"]))
                        for up in loaded.get(key, []):
                            if (up, name) not in seen:
                                seen.add((up, name))
                                edges.append(
                                    (
                                        up,
                                        name,
                                        f"dbt source {src['source']}.{src['name']} "
                                        f"is {key[0]}.{key[1]}, loaded by {up}",
                                    )
                                )
                        continue
                    up = builders.get(parent)
                    # Tests do not order targets (a test may span two targets' models).
                    if (
                        up is None
                        or up == name
                        or parent in mine
                        or node["t"] not in _manifest.BUILDS_RELATION
                        or (up, name) in seen
                    ):
                        continue
                    seen.add((up, name))
                    edges.append(
                        (
                            up,
                            name,
                            f"{node['name']} reads {info.nodes[parent]['name']}, built by {up}",
                        )
                    )
    return edges

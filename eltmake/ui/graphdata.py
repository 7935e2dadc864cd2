"""The graph page's data: targets and edges (inferred ones marked), and each target's status as
``eltmake status`` decides it, with what the history and a running build add.

Statuses: ``up_to_date``, ``out_of_date`` (with the reason ``status`` gives), ``never_built``,
``failed`` (out of date, and its last run failed), ``running`` (in a build started here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eltmake.project import Project
    from eltmake.ui.history import History
    from eltmake.ui.runner import UIBuild

# rich's colour names (Recipe.color) as colours readable on a white page
KIND_COLORS = {
    "green": "#3f6212",
    "cyan": "#0e7490",
    "magenta": "#a21caf",
    "blue": "#1d4ed8",
    "yellow": "#a16207",
    "red": "#b91c1c",
    "white": "#475569",
    "black": "#1f2937",
}
AGGREGATE_COLOR = "#57534e"


def graph_data(project: Project) -> dict[str, Any]:
    """Nodes (name, kind, its colour, description, deps) and edges, in build order."""
    from eltmake.graph import build_graph, default_targets

    g = build_graph(project)
    colors = {k: KIND_COLORS.get(r.color, r.color) for k, r in project.recipes.items()}
    nodes = [
        {
            "name": n,
            "kind": project.targets[n].kind or "aggregate",
            "color": colors.get(project.targets[n].kind or "", AGGREGATE_COLOR),
            "description": project.targets[n].description,
        }
        for n in g.order
    ]
    edges = []
    for n in g.order:
        declared = set(project.targets[n].deps)
        for p in g.predecessors(n):
            edge: dict[str, Any] = {"from": p, "to": n, "inferred": p not in declared}
            if edge["inferred"]:
                edge["why"] = g.inferred.get((p, n), "")
            edges.append(edge)
    return {
        "project": project.name,
        "env": project.env_name,
        "nodes": nodes,
        "edges": edges,
        "default": default_targets(project, g),
    }


def statuses(
    project_dir: str,
    env_name: str | None,
    kinds: dict[str, str | None],
    history: History,
    live: UIBuild | None,
) -> dict[str, dict[str, Any]]:
    """{target: {"status", "reason", "last"}} for every target of ``kinds`` (name → kind, None
    for an aggregate). A step without a record was never built, whatever its upstream says."""
    from eltmake.build import BuildRequest, status_outcomes

    names = list(kinds)
    _, outcomes = status_outcomes(
        BuildRequest(project_dir=project_dir, env_name=env_name, targets=names, command="status")
    )
    latest = history.latest_steps()
    recorded = history.recorded(env_name or "")
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        o = outcomes.get(n)
        reason = o.reason if o else ""
        if o is None or o.status != "would_run":
            status, reason = "up_to_date", ""
        elif reason == "never built" or (kinds.get(n) and n not in recorded):
            status = "never_built"
        else:
            status = "out_of_date"
        last = latest.get(n)
        if last is not None and last["status"] == "failed" and status != "up_to_date":
            status = "failed"
            reason = f"failed in build #{last['run_id']}" + (
                f": {last['error']}" if last.get("error") else ""
            )
        out[n] = {"status": status, "reason": reason, "last": _last(last)}
    if live is not None and live.active and not live.dry_run:
        for n, s in live.steps.items():
            if s.get("status") == "running" and n in out:
                out[n] = {**out[n], "status": "running", "reason": s.get("reason", "")}
    return out


def _last(step: dict[str, Any] | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "run_id": step["run_id"],
        "status": step["status"],
        "ended": step["ended"],
        "duration_s": round((step["ended"] or 0) - (step["started"] or 0), 3),
    }

"""The dependency graph of targets (networkx), selection, and its pictures.

Edges point from a dependency to the target that needs it. Edges a plugin inferred (a dbt source
loaded by a Singer step) carry ``inferred=True`` and the reason, so pictures can mark them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import networkx as nx

from eltmake.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from eltmake.project import Project


def build_graph(project: Project) -> nx.DiGraph:
    g = nx.DiGraph()
    for name, t in project.targets.items():
        g.add_node(name, kind=t.kind)
    for name, t in project.targets.items():
        for dep in t.deps:
            g.add_edge(dep, name, inferred=False, why="")
    for up, down, why in project.inferred:
        if not g.has_edge(up, down):
            g.add_edge(up, down, inferred=True, why=why)
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return g
    path = [cycle[0][0]] + [v for _, v in cycle]
    inferred = [
        f"{u} → {v} ({g.edges[u, v]['why']})" for u, v in cycle if g.edges[u, v]["inferred"]
    ]
    extra = f"; inferred edges in it: {', '.join(inferred)}" if inferred else ""
    raise ConfigError(
        f"{project.file.name}: targets form a cycle: {' → '.join(path)}{extra}; remove one of these deps"
    )


def check_names(project: Project, names: list[str]) -> None:
    for name in names:
        if name not in project.targets:
            hint = did_you_mean(name, project.targets) or "; `eltmake list` shows the targets"
            raise ConfigError(f"unknown target {name!r}{hint}")


def select(g: nx.DiGraph, names: list[str], only: bool = False) -> list[str]:
    """The targets to build for ``names``, in a topological order (ties by name, for stable runs)."""
    wanted = set(names)
    if not only:
        for name in names:
            wanted |= nx.ancestors(g, name)
    sub = g.subgraph(wanted)
    return list(nx.lexicographical_topological_sort(sub))


def default_targets(project: Project, g: nx.DiGraph) -> list[str]:
    """``[project].default``, or else every target nothing depends on (like ``make all``)."""
    if project.default:
        return list(project.default)
    return sorted(n for n in g.nodes if g.out_degree(n) == 0)


# --- pictures ----------------------------------------------------------------------------------


def to_json(g: nx.DiGraph, nodes: list[str]) -> str:
    keep = set(nodes)
    return json.dumps(
        {
            "nodes": [{"name": n, "kind": g.nodes[n].get("kind")} for n in nodes],
            "edges": [
                {
                    "from": u,
                    "to": v,
                    "inferred": d["inferred"],
                    **({"why": d["why"]} if d["why"] else {}),
                }
                for u, v, d in g.edges(data=True)
                if u in keep and v in keep
            ],
        },
        indent=2,
    )


def to_dot(g: nx.DiGraph, nodes: list[str]) -> str:
    keep = set(nodes)
    lines = ["digraph eltmake {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for n in nodes:
        kind = g.nodes[n].get("kind") or "aggregate"
        lines.append(f'  "{n}" [label="{n}\\n({kind})"];')
    for u, v, d in g.edges(data=True):
        if u in keep and v in keep:
            style = ' [style=dashed, label="inferred"]' if d["inferred"] else ""
            lines.append(f'  "{u}" -> "{v}"{style};')
    lines.append("}")
    return "\n".join(lines)


def to_mermaid(g: nx.DiGraph, nodes: list[str]) -> str:
    keep = set(nodes)
    ids = {n: f"n{i}" for i, n in enumerate(nodes)}
    lines = ["flowchart LR"]
    for n in nodes:
        kind = g.nodes[n].get("kind") or "aggregate"
        lines.append(f'  {ids[n]}["{n}<br/><small>{kind}</small>"]')
    for u, v, d in g.edges(data=True):
        if u in keep and v in keep:
            arrow = " -. inferred .-> " if d["inferred"] else " --> "
            lines.append(f"  {ids[u]}{arrow}{ids[v]}")
    return "\n".join(lines)


def tree_lines(g: nx.DiGraph, roots: list[str]) -> list[tuple[int, str, str, bool]]:
    """(depth, name, kind, inferred edge, seen before) rows: each root with what it depends on."""
    rows: list = []

    def walk(node: str, depth: int, inferred: bool, seen: set[str]) -> None:
        again = node in seen
        rows.append((depth, node, g.nodes[node].get("kind") or "aggregate", inferred, again))
        if again:
            return
        seen.add(node)
        for dep in sorted(g.predecessors(node)):
            walk(dep, depth + 1, g.edges[dep, node]["inferred"], seen)

    seen: set[str] = set()
    for r in roots:
        walk(r, 0, False, seen)
    return rows


def selection(
    project: Project, names: list[str], only: bool = False
) -> tuple[nx.DiGraph, list[str], list[str]]:
    """The graph, the requested targets (the defaults when none) and what to build, in order."""
    g = build_graph(project)
    check_names(project, names)
    if not names:
        names = default_targets(project, g)
    return g, names, select(g, names, only=only)

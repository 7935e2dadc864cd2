"""The dependency graph of targets (networkx), selection, and its pictures.

Edges point from a dependency to the target that needs it. Edges a plugin inferred (a dbt source
loaded by a Singer step) carry ``inferred=True`` and the reason, so pictures can mark them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from eltmake.errors import ConfigError, did_you_mean
from eltmake.files import write_atomic

if TYPE_CHECKING:
    import networkx as nx

    from eltmake.project import Project


class Graph:
    """The targets' dependency graph as the scheduler walks it: predecessors, successors, order.

    networkx builds and checks the graph (cycles, topological order); the result is cached per
    graph shape under ``.eltmake/``, so a no-op build of an unchanged project does not pay the
    0.2 s it takes to import networkx. :attr:`nx` gives the full networkx graph for pictures and
    analysis.
    """

    def __init__(self, project: Project, order: list[str], inferred: dict[tuple[str, str], str]):
        self.project = project
        self.order = order
        self.inferred = inferred
        self.preds: dict[str, list[str]] = {n: list(project.targets[n].deps) for n in order}
        self.succs: dict[str, list[str]] = {n: [] for n in order}
        for up, down in inferred:
            if up not in self.preds[down]:
                self.preds[down].append(up)
        for n in order:
            for p in self.preds[n]:
                self.succs[p].append(n)
        self._nx = None

    def predecessors(self, n: str) -> list[str]:
        return self.preds[n]

    def successors(self, n: str) -> list[str]:
        return self.succs[n]

    def ancestors(self, n: str) -> set[str]:
        return _reach(self.preds, n)

    @property
    def nx(self) -> nx.DiGraph:
        if self._nx is None:
            self._nx = _to_nx(self.project)
        return self._nx


def _reach(adjacency: dict[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(adjacency[start])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(adjacency[n])
    return seen


def _to_nx(project: Project) -> nx.DiGraph:
    import networkx as nx

    g = nx.DiGraph()
    for name, t in project.targets.items():
        g.add_node(name, kind=t.kind)
    for name, t in project.targets.items():
        for dep in t.deps:
            g.add_edge(dep, name, inferred=False, why="")
    for up, down, why in project.inferred:
        if not g.has_edge(up, down):
            g.add_edge(up, down, inferred=True, why=why)
    return g


def build_graph(project: Project) -> Graph:
    """Check the graph for cycles and order it, with networkx, once per graph shape (the order
    is kept as JSON in ``.eltmake/graph.json``: reading it can never run code)."""
    from eltmake.digest import digest

    inferred = {(u, v): why for u, v, why in project.inferred}
    shape = [[n, t.deps] for n, t in project.targets.items()], sorted(inferred)
    tag = digest(shape)
    cache = project.state_dir / "graph.json"
    try:
        cached = json.loads(cache.read_bytes())
        order = cached.get("order") if isinstance(cached, dict) else None
        if (
            cached.get("tag") == tag
            and isinstance(order, list)
            and set(order) == set(project.targets)
        ):
            return Graph(project, order, inferred)
    except (OSError, ValueError, AttributeError):
        pass
    import networkx as nx

    g = _to_nx(project)
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        path = [cycle[0][0]] + [v for _, v in cycle]
        inf = [f"{u} → {v} ({g.edges[u, v]['why']})" for u, v in cycle if g.edges[u, v]["inferred"]]
        extra = f"; inferred edges in it: {', '.join(inf)}" if inf else ""
        raise ConfigError(
            f"{project.file.name}: targets form a cycle: {' → '.join(path)}{extra}; "
            "remove one of these deps"
        )
    order = list(nx.topological_sort(g))
    graph = Graph(project, order, inferred)
    graph._nx = g
    write_atomic(cache, json.dumps({"tag": tag, "order": order}), best_effort=True)
    return graph


def check_names(project: Project, names: list[str]) -> None:
    for name in names:
        if name not in project.targets:
            hint = did_you_mean(name, project.targets) or "; `eltmake list` shows the targets"
            raise ConfigError(f"unknown target {name!r}{hint}")


def select(g: Graph, names: list[str], only: bool = False) -> list[str]:
    """The targets to build for ``names``, in a topological order."""
    wanted = set(names)
    if not only:
        for name in names:
            wanted |= g.ancestors(name)
    return [n for n in g.order if n in wanted]


def default_targets(project: Project, g: Graph) -> list[str]:
    """``[project].default``, or else every target nothing depends on (like ``make all``)."""
    if project.default:
        return list(project.default)
    return [n for n in g.order if not g.successors(n)]


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
) -> tuple[Graph, list[str], list[str]]:
    """The graph, the requested targets (the defaults when none) and what to build, in order."""
    g = build_graph(project)
    check_names(project, names)
    if not names:
        names = default_targets(project, g)
    return g, names, select(g, names, only=only)

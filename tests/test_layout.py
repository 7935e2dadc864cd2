"""The shape of the code, as the architecture promises it: a core that imports without cycles,
knows no plugin, and stays in small modules."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "eltmake"


def _top_level_imports(path: Path) -> set[str]:
    """The eltmake modules a module imports when it is imported (not under TYPE_CHECKING, not
    inside functions)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("eltmake."):
                    out.add(node.module)
                elif node.module == "eltmake":
                    out.update(f"eltmake.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("eltmake."))

    visit(tree.body)
    return out


def _module(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_among_core_modules():
    # The core and its optional rooms (eltmake/ui): a package counts as its __init__ module.
    modules = {_module(p): p for p in CORE.rglob("*.py") if _module(p) != "eltmake"}
    edges = {m: _top_level_imports(p) & set(modules) for m, p in modules.items()}
    state: dict[str, int] = {}

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges[m]):
            assert state.get(n) != 1, f"import cycle: {' → '.join([*path, m, n])}"
            if n not in state:
                walk(n, [*path, m])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            walk(m, [])


def test_no_core_module_over_500_lines():
    for path in CORE.rglob("*.py"):
        n = len(path.read_text().splitlines())
        name = path.relative_to(CORE.parent)
        assert n <= 500, f"{name} has {n} lines; split it by what it holds"


def test_core_code_names_no_plugin():
    """Names in the core's code (help prose and docstrings aside) never mention the built-in
    plugins' kinds, tables or tools: they reach the core only through recipes and hooks."""
    words = ("dbt", "singer", "duckdb", "extractor", "meltano")  # ("loader": importlib's too)
    for path in CORE.rglob("*.py"):
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NAME:
                low = tok.string.lower()
                hit = next((w for w in words if w in low), None)
                name = path.relative_to(CORE.parent)
                assert hit is None, f"{name}:{tok.start[0]} names {tok.string!r}"

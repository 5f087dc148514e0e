"""The import graph of cyclegan_culture points one way (docs/architecture.md): cli -> engine -> the rest; models,
data, eval, viz, accel and runs never import engine or cli; models import neither options nor accel; no cycles
between packages; no import of our own code hidden inside a function (except cli's, which keep --help fast)."""

from __future__ import annotations

import ast
from collections import defaultdict

from tests.conftest import ROOT

PACKAGE = ROOT / "cyclegan_culture"
LOWER = ("models", "data", "eval", "viz", "accel", "runs", "video")


def unit(module: str) -> str:
    """The part of the package a module belongs to: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> list[tuple[str, str, bool]]:
    """(importing module, imported module, outside any function) for every import of our own code."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(inner) for outer in functions for inner in ast.walk(outer)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cyclegan_culture"):
                names = [node.module] if node.module != "cyclegan_culture" else \
                    [f"cyclegan_culture.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("cyclegan_culture")]
            else:
                continue
            found += [(module, name, id(node) not in in_function) for name in names]
    return found


def edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target, _ in imports():
        a, b = unit(source), unit(target)
        if a != b and b != "cyclegan_culture":
            graph[a].add(b)
    return graph


def test_lower_layers_never_import_engine_or_cli():
    bad = [(s, t) for s, t, _ in imports() if unit(s) in LOWER and unit(t) in ("engine", "cli")]
    assert not bad, bad


def test_models_know_nothing_of_flags_or_speed():
    bad = [(s, t) for s, t, _ in imports() if unit(s) == "models" and unit(t) not in ("models", "errors")]
    assert not bad, bad


def test_no_cycles_between_packages():
    graph = edges()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "cycle: " + " -> ".join(path[path.index(nxt):] + [nxt])
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_imports_hidden_in_functions():
    hidden = [(s, t) for s, t, top in imports() if not top and s != "cyclegan_culture.cli"]
    assert not hidden, hidden

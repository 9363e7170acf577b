"""The import rule of docs/design.md, checked on the source: no import cycle between allsearch
modules (counting imports inside functions and under TYPE_CHECKING too), and no `_private`
name imported from another module. No model is trained here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "allsearch"


def imports_of(path: Path) -> list[tuple[str, str | None]]:
    """(allsearch module, imported name or None) for every import in a source file."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("allsearch.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "allsearch":  # from allsearch import data, lifecycle
                found += [(f"allsearch.{a.name}", None) for a in node.names]
            elif node.module.startswith("allsearch."):
                found += [(node.module, a.name) for a in node.names]
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {f"allsearch.{p.stem}": p for p in package.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m, _ in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (a -> b -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_detector_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_detector_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("from allsearch.two import f\n")
    (tmp_path / "two.py").write_text("def f():\n    from allsearch import one\n")
    assert find_cycle(graph(tmp_path)) == ["allsearch.one", "allsearch.two", "allsearch.one"]


def test_allsearch_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [f"{path.name}: from {module} import {name}"
                 for path in PACKAGE.glob("*.py") for module, name in imports_of(path)
                 if (name or module.rsplit(".", 1)[-1]).startswith("_")]
    assert not offenders, offenders

"""The import rules of docs/design.md, checked on the source: the layers (core < data <
training < tracking < readers < engines < commands) import only down or sideways, no import
cycle between allsearch modules (counting imports inside functions and under TYPE_CHECKING
too), and no `_private` name imported from another module. No model is trained here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "allsearch"
# Bottom first. A module of a layer may import its own layer and the layers below it. The
# commands are the modules directly in allsearch/ and every subpackage's __main__.
LAYERS = ("core", "data", "training", "tracking", "readers", "engines", "commands")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in package.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")  # allsearch.engines.lifecycle
    if parts[-1] == "__main__" or len(parts) < 2 or parts[1] not in LAYERS:
        return "commands"  # allsearch, allsearch.study, allsearch.data.__main__
    return parts[1]


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(allsearch module, imported name or None) for every import in a source file; `from
    allsearch.core import config` is an import of the module allsearch.core.config."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("allsearch.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "allsearch" or node.module.startswith("allsearch."):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.append((sub, None) if sub in modules else (node.module, a.name))
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = modules_of(package)
    return {name: {m for m, _ in imports_of(path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer from a lower one, as 'a (layer) -> b (layer)'."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, targets in sorted(edges.items())
            for b in sorted(targets)
            if b != "allsearch" and rank[layer(b)] > rank[layer(a)]]


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
    (tmp_path / "allsearch" / "core").mkdir(parents=True)
    (tmp_path / "allsearch" / "core" / "one.py").write_text("from allsearch.core.two import f\n")
    (tmp_path / "allsearch" / "core" / "two.py").write_text(
        "def f():\n    from allsearch.core import one\n")
    assert find_cycle(graph(tmp_path / "allsearch")) == [
        "allsearch.core.one", "allsearch.core.two", "allsearch.core.one"]


def test_the_layer_check_finds_an_import_upwards(tmp_path: Path) -> None:
    root = tmp_path / "allsearch"
    for folder in ("core", "data", "engines"):
        (root / folder).mkdir(parents=True)
    (root / "core" / "config.py").write_text("def f():\n    from allsearch.engines import lifecycle\n")
    (root / "data" / "dataset.py").write_text("from allsearch.core.config import f\n")
    (root / "data" / "__main__.py").write_text("import allsearch.engines.lifecycle\n")
    (root / "engines" / "lifecycle.py").write_text("from allsearch.data import dataset\n")
    (root / "study.py").write_text("from allsearch.engines.lifecycle import x\n")
    assert wrong_way(graph(root)) == [
        "allsearch.core.config (core) -> allsearch.engines.lifecycle (engines)"]


def test_every_module_sits_in_a_layer() -> None:
    assert {layer(m) for m in modules_of()} <= set(LAYERS)
    assert layer("allsearch.data.dataset") == "data" and layer("allsearch.data") == "data"
    assert layer("allsearch.data.__main__") == "commands" and layer("allsearch.study") == "commands"


def test_layers_import_only_down() -> None:
    assert wrong_way(graph()) == []


def test_allsearch_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_is_imported_from_another_module() -> None:
    modules = modules_of()
    offenders = [f"{path.name}: from {module} import {name}"
                 for path in PACKAGE.rglob("*.py") for module, name in imports_of(path, modules)
                 if (name or module.rsplit(".", 1)[-1]).startswith("_")
                 and module.rsplit(".", 1)[-1] != "__main__"]
    assert not offenders, offenders

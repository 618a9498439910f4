"""The package's import structure: no import cycle between modules, no private name imported from
another package, and no module imports a command (``resnet_switch.train``).

Read statically (``ast``) from the source, so an import inside a function counts as much as one at
the top: a lazy import that hides a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "src" / "resnet_switch"
ROOT = PKG_DIR.parent
COMMANDS = ("resnet_switch.train", "resnet_switch.evaluate", "resnet_switch.costs", "resnet_switch.export")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG_DIR.rglob("*.py")}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def package_of(name: str) -> str:
    return name if is_package(name) else name.rsplit(".", 1)[0]


def imports_of(name: str) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` for every import of ``resnet_switch`` code."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(name).split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("resnet_switch"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None) if sub in MODULES else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("resnet_switch")]
    return [(t, n) for t, n in found if t in MODULES and t != name]


GRAPH = {name: {target for target, _ in imports_of(name)} for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_of_the_package_has_no_cycle():
    assert len(MODULES) > 50  # the walk saw the package
    assert cycles(GRAPH) == []


def test_no_private_name_is_imported_from_another_package():
    bad = [f"{name} imports {target}.{imported}" for name in MODULES for target, imported in imports_of(name)
           if imported and imported.startswith("_") and not imported.startswith("__")
           and package_of(target) != package_of(name)]
    assert bad == []


def test_no_module_imports_a_command():
    bad = [f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
           if target in COMMANDS and name != target]
    assert bad == []

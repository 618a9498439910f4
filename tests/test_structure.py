"""The package's import structure: no import cycle between modules, no private name imported from
another package, and no module imports a command (``resnet_switch.train``: every module run with
``python -m``, found from the package itself).

Read statically (``ast``) from the source, so an import inside a function counts as much as one at
the top: a lazy import that hides a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "src" / "resnet_switch"
ROOT = PKG_DIR.parent


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


def runs_as_main(source: str) -> bool:
    """The module has a top-level ``if __name__ == "__main__":`` block (it is run with ``python -m``)."""
    for node in ast.parse(source).body:
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)):
            return True
    return False


def commands(modules: dict[str, Path]) -> set[str]:
    """Every command of the package: a module with a ``__main__`` block, or a package with a
    ``__main__.py`` (the package and everything in it make the command)."""
    found = {name.removesuffix(".__main__") for name in modules if name.endswith(".__main__")}
    found |= {name for name, path in modules.items() if not name.endswith(".__main__") and runs_as_main(path.read_text())}
    return found


def command_of(module: str, found: set[str]) -> str | None:
    """The command ``module`` belongs to (itself, or the command package it lies in), if any."""
    return next((c for c in found if module == c or module.startswith(c + ".")), None)


def imports_of_commands(graph: dict[str, set[str]], found: set[str]) -> list[str]:
    """``A imports B`` for every module ``A`` that imports a module ``B`` of another command."""
    return sorted(f"{name} imports {target}" for name, targets in graph.items() for target in targets
                  if command_of(target, found) not in (None, command_of(name, found)))


def test_the_command_finder_sees_main_blocks_and_command_packages(tmp_path):
    assert runs_as_main('import sys\n\nif __name__ == "__main__":\n    main()\n')
    assert not runs_as_main('def f():\n    if __name__ == "__main__":\n        pass\n')  # not at the top
    (tmp_path / "tool.py").write_text('if __name__ == "__main__":\n    pass\n')
    (tmp_path / "lib.py").write_text("x = 1\n")
    modules = {"p.tool": tmp_path / "tool.py", "p.lib": tmp_path / "lib.py", "p.cmd": tmp_path / "lib.py",
               "p.cmd.__main__": tmp_path / "lib.py", "p.cmd.part": tmp_path / "lib.py"}
    found = commands(modules)
    assert found == {"p.tool", "p.cmd"}
    graph = {"p.lib": {"p.cmd.part"}, "p.cmd.__main__": {"p.cmd.part", "p.lib"}, "p.tool": {"p.cmd"},
             "p.cmd.part": set(), "p.cmd": set()}
    assert imports_of_commands(graph, found) == ["p.lib imports p.cmd.part", "p.tool imports p.cmd"]


def test_every_documented_command_is_found():
    """Each ``python -m resnet_switch.X`` of the Makefile, README, docs and tools is a command the
    finder sees (so the import rule below covers it)."""
    repo = ROOT.parent
    texts = [repo / "Makefile", repo / "README.md", *sorted((repo / "docs").rglob("*.md")),
             *sorted((repo / "tools").glob("*.sh"))]
    documented = set()
    for path in texts:
        documented |= set(re.findall(r"-m (resnet_switch(?:\.\w+)*)", path.read_text()))
    assert {"resnet_switch.train", "resnet_switch.evaluate", "resnet_switch.report", "resnet_switch.gpu_check",
            "resnet_switch.bench", "resnet_switch.convert"} <= documented  # the scan reads those files
    assert documented <= commands(MODULES), documented - commands(MODULES)


def test_no_module_imports_a_command():
    assert imports_of_commands(GRAPH, commands(MODULES)) == []

"""Imports point down: no import cycle among the project's modules, and no library module imports a command line.

The graph is read from the source with `ast` (imports inside functions included, as they run sooner or later), not
from what Python happens to have imported, so a cycle hidden behind a function-level import is found too.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpnas_zoo", "search", "hub")

# The command-line modules (`python -m ...`): they may import libraries and each other, no library imports them.
COMMAND_LINES = {
    "fpnas_zoo.__main__",
    "search.run",
    "search.train",
    "search.latency",
    "search.demo",
    "search.imagenet_subset",
    "hub.export",
    "hub.push",
    "hub.convert",
}


def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of `PACKAGES` (a package by its __init__.py)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(name: str, path: Path) -> set[str]:
    """The absolute names `name`'s module imports, anywhere in it; `from P import m` gives P.m and P."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the most specific module each import names)."""
    modules = module_files()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) for each strongly connected group of more than one module (Tarjan)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_in(graph, group) for group in groups]


def cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the first module of `group` (breadth first inside the group)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_graph_reads_the_packages():
    """The walk sees the modules and the imports it must judge (a walk that found nothing would pass anything)."""
    graph = import_graph()
    assert COMMAND_LINES <= set(graph), sorted(COMMAND_LINES - set(graph))
    assert "search.runner" in graph["search.run"]
    assert "fpnas_zoo.spec" in graph["search.runner"]


def test_find_cycles_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_function_level_imports_are_read(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\nfrom ..up import thing\n\ndef f():\n    import other.deep\n")
    assert imported_names("pkg.sub.mod", source) == {"pkg.sub", "pkg.sub.sibling", "pkg.up", "pkg.up.thing",
                                                     "other.deep"}


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(set(module_files()) - COMMAND_LINES))
def test_library_imports_no_command_line(module):
    bad = sorted(import_graph()[module] & COMMAND_LINES)
    assert not bad, f"{module} is a library module and imports the command line(s) {', '.join(bad)}"


def private_imports(name: str, path: Path, modules: set[str]) -> list[str]:
    """`module._name` for each private name `name`'s module imports from another module of the project."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            source = (".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            if source.split(".")[0] in PACKAGES and source != name:
                found += [f"{source}.{a.name}" for a in node.names if a.name.startswith("_") and
                          f"{source}.{a.name}" not in modules]
    return found


def test_private_imports_are_found(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from .other import _hidden, shown\nfrom torch.nn.modules.batchnorm import _BatchNorm\n")
    assert private_imports("search.mod", source, set()) == ["search.other._hidden"]


def test_no_private_name_is_imported_across_modules():
    modules = module_files()
    bad = [f"{name} imports {imported}" for name, path in modules.items()
           for imported in private_imports(name, path, set(modules))]
    assert not bad, "; ".join(bad)

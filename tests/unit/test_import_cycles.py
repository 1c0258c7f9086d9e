"""No import cycle inside the engine, deferred imports included.

import-linter (``lint-imports`` in ``make test``) checks the layers between packages; this test
checks every module against every other, from the source alone: an import inside a function
counts (it is a cycle that only a call site's timing hides), an import under
``if TYPE_CHECKING:`` does not (it never runs). A failure names the cycle, module by module,
with the line of each import.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import taskd

ENGINE = Path(taskd.__file__).resolve().parent

# (importer, imported) -> the line of the first import that makes the edge
Edges = dict[tuple[str, str], int]


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that can run: at module level, in functions and classes, in try and if
    blocks; not the body of ``if TYPE_CHECKING:`` (its ``else`` runs)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> Edges:
    """The module-level import graph of the package at ``root``: an edge to the module an
    import names (``from a import b`` names ``a.b`` when that is a module, else ``a``)."""
    modules = module_names(root)
    edges: Edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in targets:
                # `import a.b.c` binds and runs a.b.c: the nearest module the name holds
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.setdefault((name, target), node.lineno)
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """One cycle (a closed path of modules) per strongly connected component of the graph."""
    successors: dict[str, list[str]] = {}
    for importer, imported in sorted(edges):
        successors.setdefault(importer, []).append(imported)
        successors.setdefault(imported, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the engine's depth is far below the recursion limit
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in successors[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(successors):
        if node not in index:
            connect(node)
    return [_closed_path(sorted(c), successors, c) for c in components]


def _closed_path(start: list[str], successors: dict[str, list[str]], inside: set[str]) -> list[str]:
    """The shortest path from the component's first module back to itself."""
    first = start[0]
    paths = {first: [first]}
    queue = [first]
    while queue:
        node = queue.pop(0)
        for nxt in successors[node]:
            if nxt == first:
                return [*paths[node], first]
            if nxt in inside and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {first}")  # a component of two or more has one


def describe(cycle: list[str], edges: Edges) -> str:
    steps = [f"{a} (line {edges[(a, b)]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def test_the_engine_has_no_import_cycle() -> None:
    edges = import_graph(ENGINE)
    found = [describe(cycle, edges) for cycle in cycles(edges)]
    assert not found, "import cycles in taskd:\n" + "\n".join(found)


def test_no_engine_module_imports_the_public_package() -> None:
    # `taskd/__init__.py` imports the client and the SDK: an engine module importing names from
    # `taskd` would depend on everything above it (and be one step from a cycle)
    edges = import_graph(ENGINE)
    importers = sorted(a for a, b in edges if b == "taskd")
    assert importers == [], f"import from the submodule instead of `taskd`: {importers}"


def test_the_graph_sees_deferred_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg import a\n"
        "def later():\n"
        "    from .. import c\n"
    )
    (package / "c.py").write_text("import pkg.a\n")
    edges = import_graph(package)
    assert set(edges) == {("pkg.a", "pkg.sub.b"), ("pkg.sub.b", "pkg.c"), ("pkg.c", "pkg.a")}
    assert [describe(c, edges) for c in cycles(edges)] == [
        "pkg.a (line 1) -> pkg.sub.b (line 5) -> pkg.c (line 1) -> pkg.a"
    ]

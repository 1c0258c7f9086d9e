"""`taskd.__all__` is what `import taskd` offers: nothing bound there is left out of it, nothing
in it is missing, and every name in it is documented in the README.

Every other engine module that declares ``__all__`` gets the first checks too.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import taskd
from tests.support.paths import ROOT

ENGINE = Path(taskd.__file__).resolve().parent


def _modules_declaring_all() -> list[str]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        if any(
            isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign)
            and "__all__" in {t.id for t in _targets(node) if isinstance(t, ast.Name)}
            for node in tree.body
        ):
            parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append(".".join(parts))
    return found


def _targets(node: ast.stmt) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, ast.AnnAssign | ast.AugAssign):
        return [node.target]
    return []


def _isort_key(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 keeps ``__all__`` in: CONSTANTS, then Classes, then the rest,
    each in natural order (digits compared as numbers), so that this test and the linter agree."""
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return kind, [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _bound_at_module_level(path: Path) -> set[str]:
    """The names a module's own statements bind (imports, assignments, defs, classes)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        else:
            for target in _targets(node):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _code_in_readme() -> list[str]:
    """The README's code: fenced blocks and inline code spans."""
    text = (ROOT / "README.md").read_text()
    fence = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
    blocks = [m.group(0) for m in fence.finditer(text)]
    spans = [m.group(2) for m in re.finditer(r"(`+)(.+?)\1", fence.sub("", text), re.S)]
    return blocks + spans


@pytest.mark.parametrize("module_name", _modules_declaring_all())
def test_all_is_defined_unique_and_sorted(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert [n for n in names if not hasattr(module, n)] == [], f"{module_name}.__all__"
    assert sorted({n for n in names if names.count(n) > 1}) == [], f"{module_name}.__all__"
    assert names == sorted(names, key=_isort_key), f"{module_name}.__all__ is not sorted"


def test_the_engine_declares_the_public_all() -> None:
    assert "taskd" in _modules_declaring_all()


def test_every_public_name_of_taskd_is_in_all_and_nothing_else() -> None:
    bound = _bound_at_module_level(ENGINE / "__init__.py")
    public = {name for name in bound if not name.startswith("_")}
    assert sorted(public - set(taskd.__all__)) == [], "bound in taskd/__init__.py, not in __all__"
    assert sorted(set(taskd.__all__) - public) == [], "in __all__, not bound in taskd/__init__.py"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from taskd import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(taskd.__all__)


def test_every_public_name_is_documented_in_the_readme() -> None:
    code = _code_in_readme()
    undocumented = [
        name
        for name in taskd.__all__
        if not any(re.search(rf"\b{re.escape(name)}\b", piece) for piece in code)
    ]
    assert undocumented == [], f"in taskd.__all__, in no code span of README.md: {undocumented}"

"""The test suite's own layout: every test module in one tier, and helpers shared only through
tests/support (a test module imported by another runs its module-level code twice, and a fixture
module imported by name escapes pytest's fixture scoping)."""

from __future__ import annotations

import ast

from tests.support.paths import ROOT

TESTS = ROOT / "tests"
TIERS = ("unit", "store", "daemon", "process", "browser")


def _is_test_module(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last == "conftest" or last.startswith("test_")


def _is_module_file(name: str) -> bool:
    return (ROOT / name.replace(".", "/")).with_suffix(".py").is_file()


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules and conftests that a module of ``package`` imports (absolute names)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] if node.level else [])
            module = ".".join(filter(None, [base, node.module or ""]))
            if _is_test_module(module):
                found.append(module)
            # ``from package import name``: a test module only if that names its file
            found += [
                f"{module}.{alias.name}"
                for alias in node.names
                if _is_test_module(alias.name) and _is_module_file(f"{module}.{alias.name}")
            ]
    return found


def test_no_module_of_the_suite_imports_a_test_module_or_a_conftest() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        if imports := imported_test_modules(path.read_text(), package):
            offenders[str(path.relative_to(ROOT))] = imports
    assert offenders == {}, "move what they share into tests/support"


def test_the_check_sees_every_form_of_such_an_import() -> None:
    source = (
        "import tests.daemon.test_engine\n"
        "from tests.conftest import wait_for\n"
        "from tests.process import test_cli\n"
        "from .. import conftest\n"
        "from .test_test_layout import TIERS\n"
        "from tests.support.in_process import test_settings\n"
        "from tests.support.waiting import wait_for_run\n"
    )
    assert imported_test_modules(source, "tests.unit") == [
        "tests.daemon.test_engine",
        "tests.conftest",
        "tests.process.test_cli",
        "tests.conftest",
        "tests.unit.test_test_layout",
    ]


def test_every_test_module_is_in_a_tier() -> None:
    misplaced = [
        str(path.relative_to(ROOT))
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.relative_to(TESTS).parts[0] not in TIERS or len(path.relative_to(TESTS).parts) != 2
    ]
    assert misplaced == [], f"put each in tests/<tier>/, one of {TIERS} (see the README's layout)"

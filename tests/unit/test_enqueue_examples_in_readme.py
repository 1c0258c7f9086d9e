"""README's examples of enqueuing from psycopg, SQLAlchemy and Django are the tested code.

Each module of tests/support/enqueue_examples is one code block of README's section "From
your web app's transaction: psycopg, SQLAlchemy, Django", whole and character for character;
tests/daemon/test_enqueue_from_other_drivers.py runs those modules against a daemon. Editing
one side without the other fails here.
"""

from __future__ import annotations

import pytest

from tests.support.paths import ROOT

EXAMPLES = ROOT / "tests" / "support" / "enqueue_examples"
MODULES = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "__init__.py")


def test_there_are_examples() -> None:
    assert MODULES == [
        "django_atomic.py",
        "psycopg_async.py",
        "psycopg_errors.py",
        "psycopg_sync.py",
        "sqlalchemy_async.py",
        "sqlalchemy_sync.py",
    ]


@pytest.mark.parametrize("name", MODULES)
def test_the_readme_shows_the_example_verbatim(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    block = "```python\n" + (EXAMPLES / name).read_text() + "```\n"
    assert block in readme, f"README's code block for {name} differs from the tested module"

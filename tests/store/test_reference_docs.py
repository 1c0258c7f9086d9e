"""docs/reference/ is what docs/build_reference.py generates from the code (issue 14 item 7).

The pages are generated again (the SQL page from this test's migrated database) and compared
with the committed ones, so that a changed signature, docstring, option, config key, route or
column without regenerated docs fails `make test`; and every public name, every public method
of Client, Context and TaskDefinition, every field of a public model, every config key and
every CLI command and argument must carry a description.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from types import ModuleType

from tests.support.paths import ROOT


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_reference", ROOT / "docs" / "build_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _committed(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in folder.glob("*.md")}


async def test_the_committed_reference_is_what_the_code_generates(database: str) -> None:
    generator = _generator()
    pages: dict[str, str] = await generator.pages(database)
    written_pages = _committed(generator.REFERENCE)
    committed = sorted(written_pages)
    assert committed == sorted(pages), (
        f"docs/reference/ holds {committed}, the generator writes {sorted(pages)}: "
        f"regenerate with `{generator.REGENERATE}`"
    )
    stale = []
    for name, text in sorted(pages.items()):
        written = written_pages[name]
        if written != text:
            diff = "".join(
                difflib.unified_diff(
                    written.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"docs/reference/{name}",
                    "generated from the code",
                    n=1,
                )
            )
            stale.append(diff[:3000])
    assert not stale, (
        f"docs/reference/ is out of date: regenerate it with `{generator.REGENERATE}` and "
        "commit it:\n" + "\n".join(stale)
    )


async def test_the_reference_is_deterministic_and_answers_what_users_asked(
    database: str,
) -> None:
    generator = _generator()
    pages: dict[str, str] = await generator.pages(database)
    assert pages == await generator.pages(database)
    for name, text in pages.items():
        assert " at 0x" not in text, f"{name} shows a memory address"
        assert str(ROOT) not in text, f"{name} shows an absolute path"
    python, api, sql = pages["python.md"], pages["api.md"], pages["sql.md"]
    # where the errors and current_client come from, and what a task's ctx holds
    for name in ("RunFailed", "WaitTimeout", "current_client"):
        assert f"`from taskd import {name}`" in python
    assert "| `run_id` | `uuid.UUID` |" in python
    assert "on_cancel: CancelHook | None = None" in python
    assert "#### `Client.send_event`" in python
    # the fields of Run and Step, and the shape of an error
    assert '"traceback"' in python and "| `run_attempt` | `int` |" in python
    # GET /api/runs/{id} answers the run nested under `run`
    assert "## GET /api/runs/{id}" in api
    assert "| `run` | [Run](#run) | yes |" in api
    # the columns of taskd.runs and taskd.attempts, described
    assert "### taskd.runs" in sql and "### taskd.attempts" in sql
    assert "| `outcome` | `text` |" in sql
    assert "### taskd.trigger\n" in sql


def test_every_public_name_field_config_key_and_cli_argument_is_described() -> None:
    missing = _generator().missing_descriptions()
    assert not missing, (
        "these have no docstring or description (docs/reference is built from them): "
        + ", ".join(missing)
    )

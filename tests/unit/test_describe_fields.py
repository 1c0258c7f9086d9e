"""Attribute docstrings become field descriptions. describe_fields (taskd.models): once, and
only a success counts; an install without sources gives no descriptions instead of failing
(the admin endpoint builds on it); a model used before it is described shows them too. The
admin API's models (taskd.field_docs): described as their modules load, none built by the
load, so the daemon's import thread neither spends that CPU nor races the event loop."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from taskd import models
from taskd.models import _attribute_docstrings, describe_fields


def test_without_sources_there_are_no_docstrings_rather_than_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _attribute_docstrings()["RunSummary"]  # with sources: found

    def no_source(obj: object) -> str:
        raise OSError("could not get source code")  # what a bytecode-only install raises

    monkeypatch.setattr(inspect, "getsource", no_source)
    assert _attribute_docstrings() == {}


def test_a_failed_description_leaves_the_models_to_describe_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> dict[str, dict[str, str]]:
        raise RuntimeError("parse failed")

    monkeypatch.setattr(models, "_described", False)
    monkeypatch.setattr(models, "_attribute_docstrings", broken)
    with pytest.raises(RuntimeError):
        describe_fields()
    assert models._described is False  # the next caller tries again, not a half-done state
    assert not models._describing.locked()


def _fresh_python(code: str) -> None:
    """Run ``code`` in a new interpreter: what is described and built is per process."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_a_model_used_before_it_is_described_shows_its_descriptions_and_others_stay_unbuilt() -> (
    None
):
    _fresh_python(
        """
        from taskd.models import LLMCallRecord, Run, RunSummary, describe_fields

        Run.model_json_schema()  # built (a client validating a row does this), no descriptions
        assert not RunSummary.__pydantic_complete__
        describe_fields()
        assert not RunSummary.__pydantic_complete__  # not built on the daemon's loop
        assert Run.model_json_schema()["properties"]["status"]["description"]
        assert RunSummary.model_json_schema()["properties"]["task_id"]["description"]
        assert LLMCallRecord.model_json_schema()["properties"]["model"]["description"]
        """
    )


def test_every_admin_field_with_a_docstring_is_described_and_no_model_is_built_by_the_import() -> (
    None
):
    _fresh_python(
        """
        import sys

        import taskd.admin.server  # every admin module, as the daemon's import thread loads them
        from taskd.admin.schemas import _Model
        from taskd.field_docs import attribute_docstrings

        def subclasses(cls):
            for sub in cls.__subclasses__():
                yield sub
                yield from subclasses(sub)

        models = list(subclasses(_Model))
        modules = {m.__module__ for m in models}
        assert len(models) > 50 and len(modules) >= 5, (len(models), modules)
        # built by the import: only the model whose instance is a default (BulkRequest.filter)
        assert [m.__name__ for m in models if m.__pydantic_complete__] == ["BulkFilter"]
        described = 0
        for model in models:
            own = attribute_docstrings(model.__module__).get(model.__name__, {})
            for name, doc in own.items():
                field = model.model_fields[name]
                assert field.description == doc, (model.__name__, name)
                described += 1
            # an inherited field keeps its base's description
            for base in model.__mro__[1:]:
                if not issubclass(base, _Model) or base is _Model:
                    continue
                for name in attribute_docstrings(base.__module__).get(base.__name__, {}):
                    if name not in own and name in model.model_fields:
                        assert model.model_fields[name].description, (model.__name__, name)
        assert described > 100, described
        """
    )

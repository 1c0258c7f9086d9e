"""describe_fields (taskd.models): the models' attribute docstrings become field descriptions
once, and only a success counts; an install without sources gives no descriptions instead of
failing (the admin endpoint builds on it)."""

from __future__ import annotations

import inspect

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

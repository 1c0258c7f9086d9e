"""``[database] direct_url``: checked as ``url`` is, never echoed, and only beside a ``url``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskd.app import resolve_direct_dsn
from taskd.config import Settings, describe_validation_error


def refused(database: dict[str, str]) -> str:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate({"database": database})
    return describe_validation_error(raised.value)


def test_direct_url_is_checked_like_url_and_its_password_stays_out() -> None:
    line = refused({"url": "postgresql://a@b/c", "direct_url": "postgresql://app:hunter2@db:x/a"})
    assert line.startswith("config error: database.direct_url (TASKD_DATABASE__DIRECT_URL): ")
    assert "is not a number" in line and "hunter2" not in line
    line = refused({"url": "postgresql://a@b/c", "direct_url": "mysql://db/app"})
    assert "expected postgresql://" in line


def test_direct_url_needs_a_url_and_defaults_to_it() -> None:
    line = refused({"direct_url": "postgresql://taskd@db:5432/app"})
    assert "database.direct_url is set but database.url is empty" in line
    pooled = Settings.model_validate(
        {
            "database": {
                "url": "postgresql://taskd@bouncer:6432/app",
                "direct_url": "postgresql://taskd@db:5432/app",
            }
        }
    )
    assert resolve_direct_dsn(pooled) == "postgresql://taskd@db:5432/app"
    alone = Settings.model_validate({"database": {"url": "postgresql://taskd@db:5432/app"}})
    assert resolve_direct_dsn(alone) == "postgresql://taskd@db:5432/app"

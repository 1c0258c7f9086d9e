"""Signing secrets of status webhooks and inbound hook sources never appear in a config error
line (it goes to stderr and the journal), whichever check refuses the config."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskd.config import Settings, describe_validation_error

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK = {"name": "jobs", "url": "https://example.com/hook", "events": ["run.completed"]}
SOURCE = {"name": "github", "verify": "standard-webhooks"}


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            {"webhooks": [{**WEBHOOK, "secret": SECRET}, {**WEBHOOK, "secret": SECRET}]},
            "webhook name(s) given twice: jobs",
        ),
        (
            {
                "hooks": {
                    "listen": "127.0.0.1:8081",
                    "sources": [{**SOURCE, "secret": SECRET}, {**SOURCE, "secret": SECRET}],
                }
            },
            "two sources named 'github'",
        ),
    ],
    ids=["two webhooks of one name", "two hook sources of one name"],
)
def test_a_config_error_never_shows_a_signing_secret(config: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate(config)
    line = describe_validation_error(refused.value)
    assert said in line
    assert SECRET not in line and "MfKQ" not in line

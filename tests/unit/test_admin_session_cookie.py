"""The console's session cookie and the read-only token's settings, without a server."""

from __future__ import annotations

import pytest

from taskd.admin.session import SESSION_SECONDS, cookie_value, role_of_cookie, role_of_token
from taskd.config import AdminSettings, ConfigError, load_settings

SETTINGS = AdminSettings(token="full-token", read_token="look-token")


def test_a_cookie_names_its_role_and_never_holds_a_token() -> None:
    admin = cookie_value(SETTINGS, "admin", now=1000.0)
    read = cookie_value(SETTINGS, "read", now=1000.0)
    assert "full-token" not in admin and "look-token" not in read
    assert role_of_cookie(SETTINGS, admin, now=1001.0) == "admin"
    assert role_of_cookie(SETTINGS, read, now=1001.0) == "read"


def test_a_tampered_expired_or_orphaned_cookie_grants_nothing() -> None:
    read = cookie_value(SETTINGS, "read", now=1000.0)
    assert role_of_cookie(SETTINGS, read.replace(".read.", ".admin."), now=1001.0) is None
    version, role, expires, mac = read.split(".")
    later = f"{version}.{role}.{int(expires) + 3600}.{mac}"
    assert role_of_cookie(SETTINGS, later, now=1001.0) is None
    assert role_of_cookie(SETTINGS, read, now=1000.0 + SESSION_SECONDS + 1) is None
    rotated = AdminSettings(token="full-token", read_token="new-look-token")
    assert role_of_cookie(rotated, read, now=1001.0) is None
    for junk in ("", "v1", "v1.admin.x.y", "v2.admin.1.ab", "v1.root.99999999999.ab", "\udcff"):
        assert role_of_cookie(SETTINGS, junk, now=1001.0) is None


def test_each_token_grants_its_role() -> None:
    assert role_of_token(SETTINGS, "full-token") == "admin"
    assert role_of_token(SETTINGS, "look-token") == "read"
    assert role_of_token(SETTINGS, "full-token ") is None
    assert role_of_token(AdminSettings(token="full-token"), "") is None


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"TASKD_ADMIN__READ_TOKEN": "look"},
            "admin.read_token (TASKD_ADMIN__READ_TOKEN): needs admin.token",
        ),
        (
            {"TASKD_ADMIN__TOKEN": "same", "TASKD_ADMIN__READ_TOKEN": "same"},
            "admin.read_token (TASKD_ADMIN__READ_TOKEN): must differ from admin.token",
        ),
    ],
)
def test_the_read_only_token_needs_a_different_full_token(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(None)
    assert message in str(raised.value)
    assert "same" not in str(raised.value).replace("must differ", "")

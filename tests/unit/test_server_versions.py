"""taskd refuses, in one line, a PostgreSQL older than the oldest version it is tested on."""

from __future__ import annotations

import pytest
from asyncpg.types import ServerVersion

from taskd import MigrationError
from taskd.store.migrations import OLDEST_SERVER, refuse_old_server


def test_a_server_older_than_15_is_refused_with_its_version() -> None:
    with pytest.raises(MigrationError) as refused:
        refuse_old_server(ServerVersion(14, 13, 0, "final", 0))
    message = str(refused.value)
    assert "\n" not in message
    assert "PostgreSQL 15 or newer" in message and "14.13" in message


@pytest.mark.parametrize("major", [15, 16, 17, 18])
def test_the_supported_servers_pass(major: int) -> None:
    assert OLDEST_SERVER == 15
    refuse_old_server(ServerVersion(major, 0, 0, "final", 0))

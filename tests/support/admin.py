"""An in-process daemon whose admin API has the token and payload limit a test chooses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskd.config import Settings
from taskd.sdk.task import TaskDefinition
from tests.support.in_process import running_daemon

TOKEN = "s3cret-token"


def admin_daemon(
    database: str,
    tasks: Sequence[TaskDefinition[Any, Any]] = (),
    *,
    token: str = "",
    max_payload_bytes: int | None = None,
    **worker: Any,
) -> Any:
    """running_daemon with a token and a payload limit of the test's choosing."""

    def configure(settings: Settings) -> None:
        settings.admin.token = token
        if max_payload_bytes is not None:
            settings.tasks.max_payload_bytes = max_payload_bytes

    return running_daemon(database, tasks, configure, **worker)

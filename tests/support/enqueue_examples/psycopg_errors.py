import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


class EnqueueRefused(Exception):
    """taskd.trigger refused the run: nothing was enqueued."""


def enqueue(
    conn: psycopg.Connection, task_id: str, payload: Any, options: dict[str, Any]
) -> uuid.UUID:
    try:
        with conn.transaction():
            return conn.execute(
                "SELECT taskd.trigger(%s, %s, %s)", (task_id, Jsonb(payload), Jsonb(options))
            ).fetchone()[0]
    except psycopg.errors.ProgramLimitExceeded as error:  # 54000: payload over the limit
        raise EnqueueRefused(error.diag.message_primary) from error
    except psycopg.errors.InvalidParameterValue as error:  # 22023: bad task id or options
        raise EnqueueRefused(error.diag.message_primary) from error

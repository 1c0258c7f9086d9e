"""`taskd run` pointed at PgBouncer in transaction mode for everything (issue 18 item 5).

A real `taskd run` subprocess with ``database.url`` on a transaction pooler and no
``database.direct_url``: it must stop at start with exit code 2 and one line on stderr that
names ``database.direct_url`` (its LISTEN and worker lock would silently not hold otherwise).
The lifecycle through the pooler is tests/daemon/test_pgbouncer.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cli import one_line_failure, taskd
from tests.support.pgbouncer import Bouncer, pgbouncer_missing, running_pgbouncer

pytestmark = pytest.mark.skipif(pgbouncer_missing() is not None, reason=str(pgbouncer_missing()))


@pytest.fixture
def bouncer(server_dsn: str) -> Iterator[Bouncer]:
    with running_pgbouncer(server_dsn) as started:
        yield started


async def test_taskd_run_through_a_transaction_pooler_alone_names_direct_url(
    bouncer: Bouncer, database: str
) -> None:
    result = await taskd(
        bouncer.through(database),
        "run",
        timeout=60,
        TASKD_TASKS__MODULES="[]",
        TASKD_DATABASE__STATEMENT_CACHE_SIZE="0",
    )
    problem = one_line_failure(
        result,
        "database.url",
        "is a transaction pooler",
        "database.direct_url (TASKD_DATABASE__DIRECT_URL)",
        code=2,
    )
    assert problem is None, problem
    # and with direct_url given, the same command starts and serves (READY): its run drains
    # and exits 0 in burst mode, nothing left to do
    started = await taskd(
        bouncer.through(database),
        "run",
        "--until-empty",
        timeout=60,
        TASKD_TASKS__MODULES="[]",
        TASKD_DATABASE__STATEMENT_CACHE_SIZE="0",
        TASKD_DATABASE__DIRECT_URL=database,
    )
    assert started.code == 0, started

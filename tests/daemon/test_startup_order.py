"""Start-up order: queued runs start without waiting for the reconciliation, READY still follows
it (it may wait 1.5 s for a second look at a gone worker whose exit it cannot prove: one of
another machine, or a row without a recorded process)."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest

from taskd import Client, Context, RunStatus, task
from taskd.app import Daemon
from taskd.sdk.registry import Registry
from taskd.worker.reconciler import Reconciler
from tests.support.in_process import test_settings
from tests.support.waiting import wait_for, wait_for_run


@task(id="order.echo")
async def echo(payload: Any, ctx: Context) -> Any:
    return payload


async def test_queued_runs_start_while_the_reconciliation_is_under_way(
    database: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reconciliation is held until the test lets it go: no timing involved.
    release = anyio.Event()
    reconcile = Reconciler.run_once

    async def held(self: Reconciler) -> Any:
        await release.wait()
        return await reconcile(self)

    monkeypatch.setattr(Reconciler, "run_once", held)
    run_id = await client.trigger(echo, "queued before the start")
    daemon = Daemon(test_settings(database), Registry([echo]), database)

    async def reconciled() -> bool:
        return daemon.reconciled

    async with anyio.create_task_group() as group:
        group.start_soon(functools.partial(daemon.run, handle_signals=False))
        try:
            run = await wait_for_run(client, run_id, timeout=20)
            assert run.status is RunStatus.COMPLETED
            assert not daemon.reconciled, "the run should not have waited for it"
        finally:
            release.set()
        await wait_for(reconciled)
        await daemon.stop()  # the daemon's run returns once drained, and the group with it

"""Child runs: trigger_and_wait and batch_trigger_and_wait suspend the parent until the
children end, create each child once per call site, and link parent and children."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel

from taskd import Client, Context, Retry, RunFailed, RunStatus, task
from tests.support.waiting import wait_for, wait_for_run

GATES: dict[str, anyio.Event] = {}
PARENT_EXECUTIONS: dict[str, int] = {}


@task(id="kids.square", retry=Retry(max_attempts=1))
async def square(payload: dict[str, Any], ctx: Context) -> int:
    gate = GATES.get(payload.get("gate", ""))
    if gate is not None:
        await gate.wait()
    if payload.get("fail"):
        raise ValueError(f"no square for {payload['n']}")
    return int(payload["n"]) ** 2


@task(id="kids.parent")
async def parent(payload: dict[str, Any], ctx: Context) -> Any:
    PARENT_EXECUTIONS[str(ctx.run_id)] = PARENT_EXECUTIONS.get(str(ctx.run_id), 0) + 1
    if payload.get("single") is not None:
        try:
            return {"single": await square.trigger_and_wait(payload["single"])}
        except RunFailed as failed:
            return {"failed": failed.status, "error": failed.error["type"]}
    results = await square.batch_trigger_and_wait(payload["batch"])
    return [
        r if not isinstance(r, RunFailed) else f"{r.status}: {r.error['type']}" for r in results
    ]


async def children_of(client: Client, run_id: Any) -> list[Any]:
    return [run for run in await client.list_runs(task="kids.square") if run.parent_id == run_id]


async def test_batch_trigger_and_wait_returns_outputs_and_failures_in_order(
    client: Client, start_daemon
) -> None:
    async with start_daemon([parent, square], concurrency=2):
        run_id = await client.trigger(
            "kids.parent",
            {"batch": [{"n": 2}, {"n": 3, "fail": True}, {"n": 4}, {"n": 5}]},
        )
        done = await wait_for_run(client, run_id, timeout=15)
    assert done.status is RunStatus.COMPLETED
    assert done.output == [4, "failed: ValueError", 16, 25]
    children = await children_of(client, run_id)
    # once, although the parent executed at least twice: when it created them, and when the
    # last one woke it; on a busy machine its backstop recheck (0.5 s after suspending) may
    # come first and add executions, each of which finds the children already created
    assert len(children) == 4
    assert PARENT_EXECUTIONS[str(run_id)] >= 2
    assert [s.name for s in done.steps] == ["children:1"]


async def test_the_parent_waits_without_its_slot_and_resumes_when_the_child_ends(
    client: Client, start_daemon
) -> None:
    GATES["slow"] = gate = anyio.Event()
    async with start_daemon([parent, square], concurrency=1):
        run_id = await client.trigger("kids.parent", {"single": {"n": 7, "gate": "slow"}})

        async def parent_waiting() -> bool:
            return (await client.get_run(run_id)).status is RunStatus.WAITING

        await wait_for(parent_waiting)
        # concurrency 1: the child can only be executing because the parent freed the slot
        [child] = await wait_for(lambda: children_of(client, run_id))
        await wait_for(lambda: _status(client, child.id, RunStatus.EXECUTING))
        gate.set()
        done = await wait_for_run(client, run_id, timeout=15)
    assert done.output == {"single": 49}
    assert child.parent_id == run_id


async def _status(client: Client, run_id: Any, status: RunStatus) -> bool:
    return (await client.get_run(run_id)).status is status


async def test_a_failed_child_raises_run_failed_in_the_parent(client: Client, start_daemon) -> None:
    async with start_daemon([parent, square]):
        run_id = await client.trigger("kids.parent", {"single": {"n": 1, "fail": True}})
        done = await wait_for_run(client, run_id, timeout=15)
    assert done.output == {"failed": "failed", "error": "ValueError"}


async def test_canceling_a_child_or_the_parent(client: Client, start_daemon) -> None:
    GATES["held"] = anyio.Event()  # never set: the children would wait forever
    async with start_daemon([parent, square], concurrency=4):
        one = await client.trigger("kids.parent", {"single": {"n": 1, "gate": "held"}})
        [child] = await wait_for(lambda: children_of(client, one))
        await wait_for(lambda: _status(client, one, RunStatus.WAITING))
        await client.cancel(child.id)  # the child's cancel resumes the parent at once
        done = await wait_for_run(client, one, timeout=10)
        assert done.output == {"failed": "canceled", "error": "Canceled"}

        two = await client.trigger("kids.parent", {"batch": [{"n": 1, "gate": "held"}] * 2})
        await wait_for(lambda: _status(client, two, RunStatus.WAITING))
        assert await client.cancel(two) is RunStatus.CANCELED
        kids = await children_of(client, two)

        async def all_canceled() -> bool:
            runs = [await client.get_run(kid.id) for kid in kids]
            return all(run.status is RunStatus.CANCELED for run in runs)

        await wait_for(all_canceled)  # executing children were cancelled in their tasks
    assert len(kids) == 2


@task(id="kids.grand")
async def grand(payload: dict[str, Any], ctx: Context) -> Any:
    return await parent.trigger_and_wait(payload)


@task(id="kids.keyed")
async def keyed(payload: dict[str, Any], ctx: Context) -> Any:
    return await square.trigger_and_wait(payload, idempotency_key=payload["key"])


async def test_a_cancel_reaches_grandchildren_but_not_a_run_the_parent_only_waits_on(
    client: Client, start_daemon
) -> None:
    GATES["never"] = anyio.Event()  # never set: the squares wait until canceled
    # a producer's run holding the key a parent asks its child for: the parent waits on it,
    # but it is not the parent's child
    shared = await client.trigger(
        "kids.square", {"n": 9, "gate": "never"}, idempotency_key="shared-9"
    )
    async with start_daemon([grand, parent, square, keyed], concurrency=6):
        top = await client.trigger("kids.grand", {"single": {"n": 2, "gate": "never"}})
        [mid] = await wait_for(lambda: runs_under(client, "kids.parent", top))
        [leaf] = await wait_for(lambda: runs_under(client, "kids.square", mid.id))
        waiter = await client.trigger("kids.keyed", {"n": 9, "gate": "never", "key": "shared-9"})
        for run_id in (top, mid.id, waiter):
            await wait_for(lambda run_id=run_id: _status(client, run_id, RunStatus.WAITING))
        await wait_for(lambda: _status(client, leaf.id, RunStatus.EXECUTING))
        await wait_for(lambda: _status(client, shared, RunStatus.EXECUTING))

        assert await client.cancel(top) is RunStatus.CANCELED
        for run_id in (mid.id, leaf.id):  # recursively, the executing grandchild in its task
            await wait_for(lambda run_id=run_id: _status(client, run_id, RunStatus.CANCELED))
        assert await client.cancel(waiter) is RunStatus.CANCELED
        assert (await client.get_run(shared)).status is RunStatus.EXECUTING
        assert await runs_under(client, "kids.square", waiter) == []
        assert await client.cancel(shared) is RunStatus.EXECUTING
        await wait_for(lambda: _status(client, shared, RunStatus.CANCELED))


async def runs_under(client: Client, task_id: str, parent_id: Any) -> list[Any]:
    return [run for run in await client.list_runs(task=task_id) if run.parent_id == parent_id]


class Letter(BaseModel):
    activity: str
    words: int


@task(id="kids.letter")
async def letter(payload: dict[str, Any], ctx: Context) -> Letter:
    return Letter(activity=payload["activity"], words=120)


@task(id="kids.reader")
async def reader(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    one = await letter.trigger_and_wait({"activity": "a1"})
    many = await letter.batch_trigger_and_wait([{"activity": "a2"}, {"activity": "a3"}])
    # the parent gets the child's model back, not the JSON it was stored as
    return {
        "types": [type(value).__name__ for value in (one, *many)],
        "activities": [one.activity, *(m.activity for m in many if isinstance(m, Letter))],
    }


async def test_a_child_returning_a_model_gives_the_parent_that_model(
    client: Client, start_daemon
) -> None:
    async with start_daemon([reader, letter], concurrency=4):
        run = await wait_for_run(client, await client.trigger(reader, {}), timeout=20)
    assert run.status is RunStatus.COMPLETED, run
    assert run.output == {"types": ["Letter"] * 3, "activities": ["a1", "a2", "a3"]}

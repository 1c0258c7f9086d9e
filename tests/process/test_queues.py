"""Queues: concurrency, per-key concurrency, rates, fairness between keys, pause and resume,
limits changed at run time (client, CLI, admin API). In-process daemons; the fleet-wide
version (two daemon processes) is test_limits_fleet.py.

The daemons here poll every 30 s: a run that starts at all started because a claim was woken
(a NOTIFY, a freed slot, a rate window opening), never because a poll came by.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import anyio
import asyncpg
import pytest

from taskd import Client, Context, Queue, QueueNotFound, Rate, Retry, RunStatus, task, wait
from taskd.sdk.registry import Registry
from tests.support.cli import taskd
from tests.support.in_process import StartDaemon, admin_url
from tests.support.spans import max_overlap
from tests.support.waiting import wait_for, wait_for_run

NO_POLL = 30.0

Span = tuple[str, float, float]  # (concurrency key, start, end), monotonic clock
spans: list[Span] = []


async def _record(payload: dict[str, Any], seconds: float) -> None:
    started = time.monotonic()
    await anyio.sleep(seconds)
    spans.append((payload.get("key", ""), started, time.monotonic()))


@pytest.fixture(autouse=True)
def _fresh_spans() -> None:
    spans.clear()


TWO_AT_ONCE = Queue("two-at-once", concurrency=2)
PER_USER = Queue("per-user", concurrency_limit_per_key=1)
ONE_AT_ONCE = Queue("one-at-once", concurrency=1)
ADJUSTABLE = Queue("adjustable", concurrency=3)
FIVE_PER_SECOND = Queue("five-per-second", rate_limit=Rate(5, per="1s"))


@task(id="q.two", queue=TWO_AT_ONCE)
async def two(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.02)


@task(id="q.per-user", queue=PER_USER)
async def per_user(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.03)


@task(id="q.one", queue=ONE_AT_ONCE)
async def one(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.005)


@task(id="q.adjustable", queue=ADJUSTABLE)
async def adjustable(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.05)


@task(id="q.rated", queue=FIVE_PER_SECOND)
async def rated(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.001)


@task(id="q.plain", queue="pausable")
async def plain(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.001)


@task(id="q.elsewhere")
async def elsewhere(payload: dict[str, Any], ctx: Context) -> None:
    await _record(payload, 0.001)


TWO_PER_SECOND = Queue("two-per-second", rate_limit=Rate(2, per="1s"))
entries: list[float] = []


@task(id="q.retried", queue=TWO_PER_SECOND, retry=Retry(max_attempts=2, min_delay=0))
async def retried(payload: dict[str, Any], ctx: Context) -> int:
    entries.append(time.monotonic())
    if ctx.attempt == 1:
        raise ConnectionError("at once again, if the rate allows")
    return ctx.attempt


@task(id="q.resumed", queue=TWO_PER_SECOND)
async def resumed(payload: dict[str, Any], ctx: Context) -> str:
    entries.append(time.monotonic())
    await wait.for_(seconds=0.3)
    return "resumed"


@task(id="q.sleeper", queue=ONE_AT_ONCE)
async def sleeper(payload: dict[str, Any], ctx: Context) -> str:
    await wait.for_(seconds=payload["seconds"])
    return "woke"


async def all_done(client: Client, ids: Sequence[Any], timeout: float = 10.0) -> None:
    for run_id in ids:
        run = await wait_for_run(client, run_id, timeout=timeout)
        assert run.status is RunStatus.COMPLETED, run


def overlap(key: str | None = None) -> int:
    return max_overlap([(s, e) for k, s, e in spans if key is None or k == key])


async def test_a_queue_runs_at_most_its_concurrency_at_once(
    client: Client, start_daemon: StartDaemon
) -> None:
    async with start_daemon([two], concurrency=10, poll_interval=NO_POLL):
        ids = await client.batch_trigger(two, [{}] * 12)
        # a freed slot starts the next run at once (no poll comes by in this test)
        await all_done(client, ids)
    assert len(spans) == 12
    assert overlap() == 2


async def test_one_run_at_a_time_per_key_and_a_busy_key_does_not_starve_the_others(
    client: Client, start_daemon: StartDaemon
) -> None:
    hog = await client.batch_trigger(per_user, [{"key": "hog"}] * 20, concurrency_key="hog")
    others = []
    for key in ("a", "b", "c"):
        others += await client.batch_trigger(per_user, [{"key": key}] * 2, concurrency_key=key)
    async with start_daemon([per_user], concurrency=4, poll_interval=NO_POLL):
        await all_done(client, hog + others)
    for key in ("hog", "a", "b", "c"):
        assert overlap(key) == 1, key
    hog_starts = sorted(s for k, s, _ in spans if k == "hog")
    other_starts = sorted(s for k, s, _ in spans if k != "hog")
    # the six runs of a, b and c, enqueued after the hog's twenty, ran alongside its first ones
    assert max(other_starts) < hog_starts[4]
    run = await client.get_run(hog[0])
    assert run.concurrency_key == "hog"


async def test_keys_take_turns_in_a_busy_queue_without_a_per_key_limit(
    client: Client, start_daemon: StartDaemon
) -> None:
    hog = await client.batch_trigger(one, [{"key": "hog"}] * 30, concurrency_key="hog")
    small = await client.batch_trigger(one, [{"key": "small"}] * 3, concurrency_key="small")
    async with start_daemon([one], concurrency=5, poll_interval=NO_POLL):
        await all_done(client, hog + small)
    assert overlap() == 1
    order = [k for k, _, _ in sorted(spans, key=lambda span: span[1])]
    # one start each in turn: the three small runs are among the first six, not the last three
    assert order[:6].count("small") == 3, order


async def test_keys_with_nothing_to_claim_now_take_no_turn(
    client: Client, start_daemon: StartDaemon
) -> None:
    # the keys above "aaa" hold only a delayed run and a run of a task this daemon does not
    # serve: neither may keep the queue's one slot from the run that is due
    await client.trigger(one, {"key": "zzz"}, concurrency_key="zzz", delay="1h")
    await client.trigger("q.unserved", {}, queue="one-at-once", concurrency_key="yyy")
    due = await client.trigger(one, {"key": "aaa"}, concurrency_key="aaa")
    async with start_daemon([one], concurrency=5, poll_interval=NO_POLL):
        await all_done(client, [due])


async def test_a_paused_queue_starts_nothing_until_resumed_and_loses_nothing(
    client: Client, start_daemon: StartDaemon, db: asyncpg.Connection
) -> None:
    await client.pause_queue("pausable")
    async with (
        start_daemon([plain, elsewhere], concurrency=5, poll_interval=NO_POLL) as first,
        start_daemon([plain, elsewhere], concurrency=5, poll_interval=NO_POLL) as second,
    ):
        paused_ids = await client.batch_trigger(plain, [{}] * 3)
        # runs of another queue, triggered after them, are claimed and complete on both
        # daemons: the claims that took them passed over the paused queue, on every daemon
        others: list[Any] = []

        async def both_claimed() -> bool:
            others.append(await client.trigger(elsewhere, {}))
            await all_done(client, others[-1:])
            workers = {(await client.get_run(o)).attempts[-1].worker_id for o in others}
            return workers == {first.worker_id, second.worker_id}

        await wait_for(both_claimed, timeout=20)
        statuses = {(await client.get_run(i)).status for i in paused_ids}
        assert statuses == {RunStatus.QUEUED}
        [listed] = [q for q in await client.list_queues() if q.queue == "pausable"]
        assert listed.paused and listed.due == 3
        await client.resume_queue("pausable")  # wakes the daemons: no poll needed
        await all_done(client, paused_ids)
    [listed] = [q for q in await client.list_queues() if q.queue == "pausable"]
    assert not listed.paused


async def test_limits_changed_at_run_time_apply_to_the_next_claims_and_survive_restarts(
    client: Client, start_daemon: StartDaemon
) -> None:
    async with start_daemon([adjustable], concurrency=10, poll_interval=NO_POLL):
        [declared] = [q for q in await client.list_queues() if q.queue == "adjustable"]
        assert (declared.concurrency, declared.overridden) == (3, False)
        await client.set_queue_limits("adjustable", concurrency=1)
        await all_done(client, await client.batch_trigger(adjustable, [{"key": "one"}] * 4))
    assert overlap("one") == 1
    # a daemon that starts again registers the code's Queue(concurrency=3): the operator's
    # limit stays until reset
    async with start_daemon([adjustable], concurrency=10, poll_interval=NO_POLL):
        [listed] = [q for q in await client.list_queues() if q.queue == "adjustable"]
        assert (listed.concurrency, listed.overridden) == (1, True)
        await client.reset_queue("adjustable")  # while the daemon runs
        await all_done(client, await client.batch_trigger(adjustable, [{"key": "three"}] * 9))
    assert overlap("three") == 3
    [listed] = [q for q in await client.list_queues() if q.queue == "adjustable"]
    assert (listed.concurrency, listed.overridden) == (3, False)
    with pytest.raises(QueueNotFound):
        await client.reset_queue("no-such-queue")
    with pytest.raises(ValueError, match="at least one limit"):
        await client.set_queue_limits("adjustable")
    for bad in (0, 2**31, True):
        with pytest.raises(ValueError, match="from 1 to"):
            await client.set_queue_limits("adjustable", concurrency=bad)


async def test_a_waiting_run_holds_no_slot_of_its_queue(
    client: Client, start_daemon: StartDaemon, db: asyncpg.Connection
) -> None:
    async with start_daemon(
        [sleeper, one], concurrency=5, wait_threshold=0.2, poll_interval=NO_POLL
    ):
        waiting = await client.trigger(sleeper, {"seconds": 60})

        async def suspended() -> bool:
            return (await client.get_run(waiting)).status is RunStatus.WAITING

        await wait_for(suspended)
        # the queue allows one run at once: this one starts while the other waits
        other = await client.trigger(one, {})
        await all_done(client, [other])
        assert (await client.get_run(waiting)).status is RunStatus.WAITING
        # the rest of the minute is skipped: the wake-up time (the run's and its wait's) is now
        await db.execute("UPDATE taskd.runs SET run_at = now() WHERE id = $1", waiting)
        await db.execute(
            "UPDATE taskd.steps SET result = to_jsonb((now() - interval '1 second')::text)"
            " WHERE run_id = $1 AND name = 'wait:1'",
            waiting,
        )
        run = await wait_for_run(client, waiting, timeout=10)
    assert run.status is RunStatus.COMPLETED and run.output == "woke"


@pytest.mark.parametrize("kind", ["retries", "resumes"])
async def test_retries_and_resumes_after_a_wait_are_starts_for_the_rate(
    client: Client, start_daemon: StartDaemon, db: asyncpg.Connection, kind: str
) -> None:
    entries.clear()
    definition = retried if kind == "retries" else resumed
    async with start_daemon(
        [definition], concurrency=10, poll_interval=NO_POLL, wait_threshold=0.1
    ):
        ids = await client.batch_trigger(definition, [{}, {}])
        await all_done(client, ids)
    # four starts at two per second: the two second starts (the retries, or the resumes, due
    # at once or 0.3 s later) waited for the next window (the slack: the entries are the
    # functions' own clock, a little after their claims)
    assert len(entries) == 4
    assert entries[2] - entries[0] >= 0.8, [round(e - entries[0], 3) for e in entries]


async def test_a_rate_limit_caps_starts_in_every_window(
    client: Client, start_daemon: StartDaemon, db: asyncpg.Connection
) -> None:
    async with start_daemon([rated], concurrency=10, poll_interval=NO_POLL):
        ids = await client.batch_trigger(rated, [{}] * 12)
        # the claim says when the window opens again: no poll is needed to go on
        await all_done(client, ids, timeout=10)
    starts = [
        row[0]
        for row in await db.fetch(
            "SELECT extract(epoch FROM started_at)::float8 FROM taskd.attempts ORDER BY 1"
        )
    ]
    assert len(starts) == 12
    for i, start in enumerate(starts):
        assert sum(1 for later in starts[i:] if later < start + 1.0) <= 5
    assert starts[-1] - starts[0] >= 2.0  # 12 starts at 5 per second: three windows


async def test_concurrency_keys_from_sql_and_the_cli_and_queues_from_the_cli_and_api(
    database: str, client: Client, start_daemon: StartDaemon, db: asyncpg.Connection
) -> None:
    async with start_daemon([per_user, plain], concurrency=4) as daemon:
        sql_id = await db.fetchval(
            """SELECT taskd.trigger('q.per-user', '{"key": "u1"}', '{"concurrency_key": "u1"}')"""
        )
        cli = await taskd(
            database, "trigger", "q.per-user", "--payload", '{"key": "u2"}',
            "--concurrency-key", "u2",
        )  # fmt: skip
        assert cli.code == 0, cli
        cli_id = cli.out.strip()
        await all_done(client, [sql_id, cli_id])
        assert (await client.get_run(sql_id)).concurrency_key == "u1"
        assert (await client.get_run(cli_id)).concurrency_key == "u2"

        paused = await taskd(database, "queues", "pause", "pausable")
        assert paused.code == 0, paused
        limited = await taskd(database, "queues", "set", "per-user", "--concurrency", "2",
                              "--rate", "100/1m")  # fmt: skip
        assert limited.code == 0, limited
        listing = await taskd(database, "queues", "list")
        assert listing.code == 0, listing
        rows = {line.split()[0]: line.split() for line in listing.out.splitlines()[1:] if line}
        assert rows["pausable"][1] == "paused"
        status = await taskd(database, "status")
        assert status.code == 0, status
        assert any(line.split()[:2] == ["pausable", "paused"] for line in status.out.splitlines())
        assert rows["per-user"][5:8] == ["2*", "1", "100/60s"]
        for value in ("0", "3000000000", "x"):
            bad = await taskd(database, "queues", "set", "per-user", "--concurrency", value)
            assert bad.code == 2 and "--concurrency" in bad.err, bad
        bad_rate = await taskd(database, "queues", "set", "per-user", "--rate", "fast")
        assert bad_rate.code == 1 and "not a rate" in bad_rate.err, bad_rate

        async with aiohttp.ClientSession() as http:
            url = admin_url(daemon)
            async with http.get(f"{url}/metrics") as response:
                exposition = await response.text()
            assert 'taskd_queue_paused{queue="pausable"} 1.0' in exposition
            assert 'taskd_queue_concurrency_limit{queue="per-user"} 2.0' in exposition
            async with http.post(f"{url}/api/queues/pausable/resume", json={}) as response:
                assert response.status == 200
                assert await response.json() == {"queue": "pausable", "paused": False}
            async with http.get(f"{url}/api/queues") as response:
                queues = {q["queue"]: q for q in (await response.json())["queues"]}
            assert queues["pausable"]["paused"] is False
            assert queues["per-user"]["concurrency"] == 2
            assert queues["per-user"]["concurrency_limit_per_key"] == 1
            assert queues["per-user"]["rate_limit"] == 100
            body = {"payload": {"key": "u3"}, "concurrency_key": "u3"}
            async with http.post(f"{url}/api/tasks/q.per-user/trigger", json=body) as response:
                assert response.status == 201
                api_id = (await response.json())["id"]
        run = await wait_for_run(client, api_id)
        assert run.concurrency_key == "u3"
    reset = await taskd(database, "queues", "reset", "per-user")
    assert reset.code == 0, reset
    [listed] = [q for q in await client.list_queues() if q.queue == "per-user"]
    assert (listed.concurrency, listed.rate_limit, listed.overridden) == (None, None, False)


def test_two_tasks_declaring_one_queue_with_different_limits_is_an_error() -> None:
    @task(id="q.conflict", queue=Queue("two-at-once", concurrency=3))
    async def conflicting(payload: Any, ctx: Context) -> None: ...

    with pytest.raises(Exception, match="different limits"):
        Registry([two, conflicting]).queues()

    # a bare name defers to the declared limits
    @task(id="q.bare", queue="two-at-once")
    async def bare(payload: Any, ctx: Context) -> None: ...

    assert Registry([bare, two]).queues() == [TWO_AT_ONCE]


def test_queue_and_rate_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Queue("x", concurrency=0)
    with pytest.raises(ValueError, match="from 1 to"):
        Queue("x", concurrency=2**40)
    with pytest.raises(ValueError, match="at most 200 characters"):
        Queue("q" * 201)
    with pytest.raises(ValueError, match="at most 200 characters"):
        task(id="q.long-queue", queue="q" * 250)
    with pytest.raises(ValueError, match="from 1 to"):
        Rate(2**31)
    with pytest.raises(ValueError, match="rate period"):
        Rate(5, per="2d")
    with pytest.raises(ValueError, match="not a rate"):
        Rate.parse("5 per second")
    assert Rate.parse("50/1m") == Rate(50, per=60)
    assert Rate.parse("20/s").seconds == 1.0

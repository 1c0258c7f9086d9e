"""The store: every read and write taskd makes, as verbs named noun-first.

The worker, the client and the CLI call these; none of them holds SQL. Each verb takes an
optional ``connection`` so a producer can enqueue inside its own transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from taskd.ids import uuid_at
from taskd.models import (
    Attempt,
    Claim,
    ClaimedRun,
    Event,
    LogLine,
    Outcome,
    QueueSettings,
    Run,
    RunStatus,
    RunSummary,
    Step,
)
from taskd.store.database import DB_ERRORS
from taskd.store.queries import QUERIES

log = logging.getLogger("taskd.store")


class _NotRecorded(Exception):
    """Rolls back a transaction whose compare-and-set found the run no longer ours."""


class Store:
    def __init__(self, pool: asyncpg.Pool, *, claim_pool: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        # Claims may go through a pool of their own (asynchronous commit; see create_pool).
        self.claim_pool = claim_pool or pool

    def _on(self, connection: asyncpg.Connection | None) -> asyncpg.Pool | asyncpg.Connection:
        return connection if connection is not None else self.pool

    @asynccontextmanager
    async def _transaction(
        self, connection: asyncpg.Connection | None
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction on the caller's connection (a savepoint inside theirs), else on a
        pooled one."""
        if connection is not None:
            async with connection.transaction():
                yield connection
            return
        async with self.pool.acquire() as pooled, pooled.transaction():
            yield pooled

    # settings -----------------------------------------------------------------------------

    async def setting_get(self, key: str) -> Any:
        return await self.pool.fetchval(QUERIES["setting_get"], key)

    async def setting_put(self, key: str, value: Any) -> None:
        await self.pool.execute(QUERIES["setting_put"], key, value)

    # tasks and workers --------------------------------------------------------------------

    async def task_sync(self, tasks: Sequence[tuple[str, str, int, dict[str, Any]]]) -> None:
        """Upsert (id, queue, max_attempts, settings) for the tasks this daemon registers."""
        if not tasks:
            return
        ids, queues, max_attempts, settings = zip(*tasks, strict=True)
        await self.pool.execute(
            QUERIES["task_sync"], list(ids), list(queues), list(max_attempts), list(settings)
        )

    async def task_list(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(QUERIES["task_list"])]

    async def worker_register(
        self,
        worker_id: uuid.UUID,
        *,
        host: str,
        pid: int,
        version: str,
        concurrency: int,
        queues: Sequence[str],
        tasks: Sequence[str],
        lock_key: int,
        process: dict[str, Any] | None = None,
    ) -> None:
        """``process``: the process identity (daemon/taskd/worker/process_identity.py), if known."""
        await self.pool.execute(
            QUERIES["worker_register"],
            worker_id,
            host,
            pid,
            version,
            concurrency,
            list(queues),
            list(tasks),
            lock_key,
            process,
        )

    async def worker_lock(self, connection: asyncpg.Connection, lock_key: int) -> bool:
        """Try to take the worker's session lock on ``connection`` (a dedicated one, never
        pooled); False when another session holds the key."""
        return bool(await connection.fetchval(QUERIES["worker_lock"], lock_key))

    async def worker_lock_free_orphans(
        self, connection: asyncpg.Connection, lock_key: int
    ) -> list[int]:
        """Terminate this daemon's own orphaned sessions that still hold ``lock_key``."""
        return [
            row[0] for row in await connection.fetch(QUERIES["worker_lock_free_orphans"], lock_key)
        ]

    async def worker_list_unlocked(self, worker_id: uuid.UUID) -> list[dict[str, Any]]:
        """Other workers, not known to be stopped, whose lock nobody holds (id, host, pid,
        process identity or None)."""
        return [
            dict(row) for row in await self.pool.fetch(QUERIES["worker_list_unlocked"], worker_id)
        ]

    async def worker_mark_gone(self, worker_ids: Sequence[uuid.UUID]) -> None:
        await self.pool.execute(QUERIES["worker_mark_gone"], list(worker_ids))

    async def worker_list(self) -> list[dict[str, Any]]:
        """Workers not known to be stopped, with how many runs each executes."""
        return [dict(row) for row in await self.pool.fetch(QUERIES["worker_list"])]

    async def worker_heartbeat(
        self,
        worker_id: uuid.UUID,
        lease_seconds: float,
        leases: Sequence[tuple[uuid.UUID, int]],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg cancels the statement itself)
    ) -> bool:
        """Mark the worker alive and extend its leases ((run id, attempt) pairs).

        Returns False when the worker was declared gone by another daemon meanwhile, or when
        its row no longer exists (pruned or deleted: nobody can see or reconcile it).
        """
        ids = [run_id for run_id, _ in leases]
        attempts = [attempt for _, attempt in leases]
        gone = await self.pool.fetchval(
            QUERIES["worker_heartbeat"], worker_id, lease_seconds, ids, attempts, timeout=timeout
        )
        return gone is False

    async def worker_stop(self, worker_id: uuid.UUID) -> None:
        await self.pool.execute(QUERIES["worker_stop"], worker_id)

    # runs ---------------------------------------------------------------------------------

    async def run_insert_many(
        self,
        task_id: str,
        ids: Sequence[uuid.UUID],
        payloads: Sequence[bytes],
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: float = 0.0,
        max_attempts: int | None = None,
        tags: Sequence[str] = (),
        ttl: float | None = None,
        concurrency_key: str | None = None,
        keys: Sequence[str | None] | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> None:
        """Insert runs of one task; ``payloads`` are JSON already encoded (size-checked);
        ``keys``: their idempotency keys, already held (see run_insert_many_keyed)."""
        await self._on(connection).execute(
            QUERIES["run_insert_many"],
            task_id,
            queue,
            priority,
            run_at,
            delay,
            max_attempts,
            list(tags),
            ids,
            [payload.decode() for payload in payloads],
            ttl,
            concurrency_key or "",
            list(keys) if keys is not None else [None] * len(ids),
        )

    async def run_insert_many_keyed(
        self,
        task_id: str,
        ids: Sequence[uuid.UUID],
        payloads: Sequence[bytes],
        keys: Sequence[str | None],
        key_ttl: float,
        *,
        connection: asyncpg.Connection | None = None,
        **options: Any,
    ) -> list[uuid.UUID]:
        """Insert the runs whose idempotency key is free (or that have none), in one
        transaction; the ids in order, a key already held giving its run's id."""
        async with self._transaction(connection) as tx:
            final, new = await self._hold_keys(tx, task_id, ids, keys, key_ttl)
            if new:
                await self.run_insert_many(
                    task_id,
                    [ids[i] for i in new],
                    [payloads[i] for i in new],
                    keys=[keys[i] for i in new],
                    connection=tx,
                    **options,
                )
        return final

    async def _hold_keys(
        self,
        connection: asyncpg.Connection,
        task_id: str,
        ids: Sequence[uuid.UUID],
        keys: Sequence[str | None],
        key_ttl: float,
    ) -> tuple[list[uuid.UUID], list[int]]:
        """Take the free keys for their runs; (every run's id, with a held key's run id in
        its place; the indexes of the runs to create). A key repeated in the batch gives the
        id of its first run."""
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key is not None:
                first.setdefault(key, index)
        held: dict[str, uuid.UUID] = {}
        if first:
            names = sorted(first)
            owned = {
                row[0]
                for row in await connection.fetch(
                    QUERIES["idempotency_claim_many"],
                    task_id,
                    names,
                    [ids[first[name]] for name in names],
                    key_ttl,
                )
            }
            held = {name: ids[first[name]] for name in owned}
            others = [name for name in names if name not in owned]
            if others:
                rows = await connection.fetch(QUERIES["idempotency_lookup"], task_id, others)
                held.update({row[0]: row[1] for row in rows})
        final = [ids[i] if key is None else held[key] for i, key in enumerate(keys)]
        new = [
            i
            for i, key in enumerate(keys)
            if key is None or (first[key] == i and held[key] == ids[i])
        ]
        return final, new

    async def run_trigger(
        self,
        task_id: str,
        payload: str,
        options: str,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> uuid.UUID:
        """taskd.trigger: ``payload`` and ``options`` as JSON text; the run's id (with an
        idempotency key held by an earlier run: that run's id)."""
        run_id: uuid.UUID = await self._on(connection).fetchval(
            QUERIES["run_trigger"], task_id, payload, options
        )
        return run_id

    async def run_claim(
        self,
        task_ids: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        worker_id: uuid.UUID,
        lease_seconds: float,
        *,
        queue_after: str | None = None,
        key_after: dict[str, str] | None = None,
    ) -> Claim:
        """Claim up to ``limit`` due runs of these tasks (in these queues; None: all), queue
        by queue after ``queue_after`` and key by key after ``key_after[queue]``; with what
        the queues' limits held back."""
        rows = await self.claim_pool.fetch(
            QUERIES["run_claim"],
            task_ids,
            queues,
            limit,
            worker_id,
            lease_seconds,
            queue_after,
            orjson.dumps(key_after or {}).decode(),
        )
        claim = Claim()
        for row in rows:
            if row[0] is None:
                claim.held_back = bool(row[10])
                claim.retry_in = row[11]
                claim.cursors = row[12] or {}
            else:
                claim.runs.append(ClaimedRun(*row[:10]))
        return claim

    async def run_complete_many(
        self,
        worker_id: uuid.UUID,
        outcomes: Sequence[Outcome],
        locked: set[uuid.UUID] | None = None,
    ) -> dict[uuid.UUID, str]:
        """Write outcomes; return {id: new status} for the writes that won (the rest lost a
        race, or are added to ``locked``: runs still this worker's whose row another
        transaction holds, to be written later). Then wake the waiting parents whose last
        child this batch finished."""
        rows = await self.pool.fetch(
            QUERIES["run_complete_many"],
            worker_id,
            [o.run_id for o in outcomes],
            [o.attempt for o in outcomes],
            [o.status.value for o in outcomes],
            [o.attempt_outcome.value for o in outcomes],
            [o.output.decode() if o.output is not None else None for o in outcomes],
            [o.error.decode() if o.error is not None else None for o in outcomes],
            [o.retry_delay for o in outcomes],
            [o.owes_failure_hook for o in outcomes],
        )
        if locked is not None:
            locked.update(row[0] for row in rows if row[1] is None)
        rows = [row for row in rows if row[1] is not None]
        finished_children = [
            row[0] for row in rows if row[2] is not None and RunStatus(row[1]).terminal
        ]
        if finished_children:
            try:
                await self.parents_wake(finished_children)
            except DB_ERRORS as exc:
                # The outcomes are committed: a failure here must not have them written again.
                # The parents' own recheck (CHILDREN_RECHECK) wakes them.
                log.warning(
                    "waking the parents of %d run(s) failed: %s", len(finished_children), exc
                )
        return {row[0]: row[1] for row in rows}

    async def parents_wake(self, child_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
        rows = await self.pool.fetch(QUERIES["parents_wake"], list(child_ids))
        return [(row[0], row[1]) for row in rows]

    async def children_create(
        self,
        parent_id: uuid.UUID,
        worker_id: uuid.UUID,
        attempt: int,
        step_name: str,
        task_id: str,
        queue: str | None,
        ids: Sequence[uuid.UUID],
        payloads: Sequence[bytes],
        tags: Sequence[str],
        max_attempts: int | None,
        concurrency_key: str | None = None,
        keys: Sequence[str | None] | None = None,
        key_ttl: float = 0.0,
    ) -> list[uuid.UUID] | None:
        """Create child runs and record them as the parent's step, atomically: the ids the
        step records (a child whose idempotency key another run holds is that run), or None
        when the parent is no longer this attempt's (nothing was created).

        A retry with the same ids, after a first try whose commit went unknown (the
        connection lost), returns them: this attempt's step already records them."""
        keys = list(keys) if keys is not None else [None] * len(ids)
        mine = False
        try:
            async with self._transaction(None) as tx:
                final, new = await self._hold_keys(tx, task_id, ids, keys, key_ttl)
                row = await tx.fetchrow(
                    QUERIES["children_create"],
                    parent_id,
                    worker_id,
                    attempt,
                    step_name,
                    task_id,
                    queue,
                    [ids[i] for i in new],
                    [payloads[i].decode() for i in new],
                    list(tags),
                    max_attempts,
                    concurrency_key or "",
                    final,
                    [keys[i] for i in new],
                )
                if row is None or not row["recorded"]:
                    # A statement of its own: it sees a first try that committed while this
                    # one waited on the step's row (the statement above does not).
                    earlier = await tx.fetchval(
                        QUERIES["children_recorded"], parent_id, step_name, attempt
                    )
                    mine = earlier == [str(i) for i in final]
                    raise _NotRecorded  # roll the keys back with the rest
        except _NotRecorded:
            return final if mine else None
        return final

    async def children_results(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["children_results"], list(ids))
        return {row["id"]: dict(row) for row in rows}

    async def run_release_many(
        self, worker_id: uuid.UUID, runs: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]:
        """Hand (run id, attempt) back to the queue without spending the attempt."""
        if not runs:
            return set()
        ids, attempts = zip(*runs, strict=True)
        rows = await self.pool.fetch(QUERIES["run_release_many"], worker_id, ids, attempts)
        return {row[0] for row in rows}

    async def run_rescue(
        self, gone_workers: Sequence[uuid.UUID], limit: int = 1000
    ) -> list[tuple[uuid.UUID, str, uuid.UUID, str, int]]:
        """Hand back runs with an expired lease or a gone worker:
        (run id, new status, lost worker, task id, attempt)."""
        rows = await self.pool.fetch(QUERIES["run_rescue"], list(gone_workers), limit)
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def run_expire(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        """Queued runs past their ttl end expired: (run id, task id)."""
        return [(row[0], row[1]) for row in await self.pool.fetch(QUERIES["run_expire"], limit)]

    async def run_wake_due(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        """Waiting runs whose time has come go back to the queue: (run id, task id)."""
        rows = await self.pool.fetch(QUERIES["run_wake_due"], limit)
        return [(row[0], row[1]) for row in rows]

    async def run_wake_completed_tokens(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        rows = await self.pool.fetch(QUERIES["run_wake_completed_tokens"], limit)
        return [(row[0], row[1]) for row in rows]

    # wait tokens ------------------------------------------------------------------------

    async def token_create(
        self, token_id: uuid.UUID, run_id: uuid.UUID, lifetime: float
    ) -> datetime:
        """The token's expiry. A retry with the same id, after a first try whose commit went
        unknown (the connection lost), finds the first try's token."""
        expires_at: datetime | None = await self.pool.fetchval(
            QUERIES["token_create"], token_id, run_id, lifetime
        )
        if expires_at is None:
            expires_at = await self.pool.fetchval(QUERIES["token_expiry"], token_id, run_id)
            if expires_at is None:
                raise RuntimeError(f"wait token {token_id} exists for another run")
        return expires_at

    async def token_await(self, token_id: uuid.UUID, run_id: uuid.UUID) -> dict[str, Any] | None:
        """The token as ``run_id`` waits on it (marked awaited by its own run): status, data,
        expires_at, held (another transaction is completing it), now (the database's)."""
        row = await self.pool.fetchrow(QUERIES["token_await"], token_id, run_id)
        return dict(row) if row is not None else None

    async def token_time_out(self, token_id: uuid.UUID) -> bool:
        return await self.pool.fetchval(QUERIES["token_time_out"], token_id) is not None

    async def token_complete(
        self, token_id: uuid.UUID, data: str, *, connection: asyncpg.Connection | None = None
    ) -> None:
        """taskd.complete_token (raises its TD404 / TD409)."""
        await self._on(connection).fetchval(QUERIES["token_complete"], token_id, data)

    async def run_fail_unknown(
        self, waited_seconds: float, limit: int = 1000
    ) -> list[tuple[uuid.UUID, str]]:
        """Fail due runs of tasks unserved for ``waited_seconds``: (run id, task id)."""
        rows = await self.pool.fetch(QUERIES["run_fail_unknown"], waited_seconds, limit)
        return [(row[0], row[1]) for row in rows]

    async def subscription_retire_unserved(self, unserved_for: float) -> list[tuple[str, str]]:
        """Delete subscriptions of tasks no live worker has served for ``unserved_for``
        seconds: (event name, task id)."""
        rows = await self.pool.fetch(QUERIES["subscription_retire_unserved"], unserved_for)
        return [(row[0], row[1]) for row in rows]

    async def failure_hook_claim(
        self, worker_id: uuid.UUID, task_ids: Sequence[str], limit: int
    ) -> list[dict[str, Any]]:
        """Claim owed on_failure hooks of these tasks (with their runs' data; None fields
        when the run was pruned)."""
        rows = await self.pool.fetch(
            QUERIES["failure_hook_claim"], worker_id, list(task_ids), limit
        )
        return [dict(row) for row in rows]

    async def failure_hook_done(self, run_ids: Sequence[uuid.UUID], worker_id: uuid.UUID) -> None:
        await self.pool.execute(QUERIES["failure_hook_done"], list(run_ids), worker_id)

    async def failure_hook_prune(self, limit: int) -> int:
        return _count(await self.pool.execute(QUERIES["failure_hook_prune"], limit))

    async def worker_report(self, worker_id: uuid.UUID, report: bytes) -> None:
        """Record the worker's last reconciliation report (JSON)."""
        await self.pool.execute(QUERIES["worker_report"], worker_id, report.decode())

    async def task_list_served(self) -> list[str]:
        """Task ids that some live worker serves."""
        return [row[0] for row in await self.pool.fetch(QUERIES["task_list_served"])]

    async def run_cancel(self, run_id: uuid.UUID) -> str:
        """taskd.cancel: 'canceled', or 'executing' when its worker was asked to cancel it."""
        status: str = await self.pool.fetchval(QUERIES["run_cancel"], run_id)
        return status

    async def run_list_cancel_requested(self, run_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        rows = await self.pool.fetch(QUERIES["run_list_cancel_requested"], list(run_ids))
        return [row[0] for row in rows]

    async def run_replay(self, run_id: uuid.UUID, new_id: uuid.UUID) -> bool:
        """Create ``new_id`` as a copy of ``run_id``; False when ``run_id`` does not exist."""
        return await self.pool.fetchrow(QUERIES["run_replay"], run_id, new_id) is not None

    async def queue_depths(self) -> list[dict[str, Any]]:
        """Per queue (with runs, or with settings): due and delayed queued runs, the oldest
        due, runs executing, and its limits and pause."""
        async with self.pool.acquire() as connection:
            queued = await connection.fetch(QUERIES["queue_depths"])
            executing = dict(await connection.fetch(QUERIES["queue_executing"]))
            settings = await connection.fetch(QUERIES["queue_settings"])
        depths: dict[str, dict[str, Any]] = {}

        def entry(queue: str) -> dict[str, Any]:
            return depths.setdefault(
                queue,
                {"queue": queue, "due": 0, "delayed": 0, "oldest_due": None, "executing": 0},
            )

        for row in queued:
            entry(row["queue"]).update(row)
        for queue, count in executing.items():
            entry(queue)["executing"] = count
        for row in settings:
            entry(row["name"]).update(
                paused=row["paused"],
                concurrency=row["concurrency"],
                concurrency_limit_per_key=row["concurrency_per_key"],
                rate_limit=row["rate_limit"],
                rate_period=row["rate_period"],
                overridden=row["overridden"],
            )
        return [depths[queue] for queue in sorted(depths)]

    async def queue_sync(self, queues: Sequence[QueueSettings]) -> None:
        """Record the queues this daemon's tasks declare, with their limits."""
        if not queues:
            return
        await self.pool.execute(
            QUERIES["queue_sync"],
            [q.name for q in queues],
            [q.concurrency for q in queues],
            [q.concurrency_per_key for q in queues],
            [q.rate_limit for q in queues],
            [q.rate_period for q in queues],
            [q.declared() for q in queues],
        )

    async def queue_pause(self, name: str, paused: bool) -> None:
        await self.pool.execute(QUERIES["queue_pause"], name, paused)

    async def queue_set_limits(self, name: str, changes: dict[str, Any]) -> None:
        """Set some of concurrency, concurrency_per_key, rate (a (limit, period) or None)."""
        rate = changes.get("rate")
        await self.pool.execute(
            QUERIES["queue_set_limits"],
            name,
            changes.get("concurrency"),
            "concurrency" in changes,
            changes.get("concurrency_per_key"),
            "concurrency_per_key" in changes,
            rate[0] if rate is not None else None,
            rate[1] if rate is not None else None,
            "rate" in changes,
        )

    async def queue_reset(self, name: str) -> bool:
        return await self.pool.fetchval(QUERIES["queue_reset"], name) is not None

    async def run_count_unserved(self, served: Sequence[str]) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["run_count_unserved"], list(served))
        return [dict(row) for row in rows]

    async def event_send(
        self, name: str, payload: str, *, connection: asyncpg.Connection | None = None
    ) -> uuid.UUID:
        """taskd.send_event: record the event, create its subscribers' runs; its id."""
        event_id: uuid.UUID = await self._on(connection).fetchval(
            QUERIES["event_send"], name, payload
        )
        return event_id

    async def event_list(self, name: str | None, limit: int) -> list[Event]:
        rows = await self.pool.fetch(QUERIES["event_list"], name, limit)
        return [Event(**dict(row)) for row in rows]

    async def subscription_list(self) -> dict[str, list[str]]:
        """Event names per subscribed task."""
        rows = await self.pool.fetch(QUERIES["subscription_list"])
        return {row["task_id"]: list(row["events"]) for row in rows}

    async def subscription_sync(
        self, task_ids: Sequence[str], pairs: Sequence[tuple[str, str]]
    ) -> None:
        """These tasks' subscriptions become exactly ``pairs`` of (event name, task id)."""
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(QUERIES["subscription_clear"], list(task_ids))
            await connection.execute(
                QUERIES["subscription_add"], [p[0] for p in pairs], [p[1] for p in pairs]
            )

    # schedules --------------------------------------------------------------------------

    async def schedule_list(
        self, task_id: str | None = None, active: bool | None = None
    ) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["schedule_list"], task_id, active)
        return [dict(row) for row in rows]

    async def schedule_active(self) -> list[asyncpg.Record]:
        """Active schedules, as records: a tick over many schedules builds no dicts."""
        rows: list[asyncpg.Record] = await self.pool.fetch(QUERIES["schedule_active"])
        return rows

    async def schedule_get(self, schedule_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(QUERIES["schedule_get"], schedule_id)
        return dict(row) if row is not None else None

    async def schedule_upsert(
        self,
        schedule_id: str,
        *,
        task_id: str,
        cron: str,
        timezone: str,
        payload: str | None,
        external_id: str | None,
        dedup_key: str | None,
        catch_up: str,
    ) -> str:
        """Create (or, same dedup_key, update) a schedule and tell every daemon; its id."""
        async with self.pool.acquire() as connection, connection.transaction():
            created: str = await connection.fetchval(
                QUERIES["schedule_upsert"],
                schedule_id,
                task_id,
                cron,
                timezone,
                payload,
                external_id,
                dedup_key,
                catch_up,
                False,
            )
            await connection.execute(QUERIES["schedule_notify"], created)
        return created

    async def schedule_declare(self, specs: Sequence[tuple[str, str, str, str]]) -> None:
        """Upsert (task id, cron, timezone, catch_up) of schedules declared in code."""
        async with self.pool.acquire() as connection, connection.transaction():
            for task_id, cron, timezone, catch_up in specs:
                await connection.execute(
                    QUERIES["schedule_declare"], task_id, cron, timezone, catch_up
                )
            await connection.execute(QUERIES["schedule_notify"], "*")

    async def schedule_retire_declared(
        self, undeclared: Sequence[str], served: Sequence[str]
    ) -> list[str]:
        rows = await self.pool.fetch(
            QUERIES["schedule_retire_declared"], list(undeclared), list(served)
        )
        return [row[0] for row in rows]

    async def schedule_update(
        self,
        schedule_id: str,
        *,
        cron: str | None,
        timezone: str | None,
        payload: tuple[bool, str | None],
        external_id: tuple[bool, str | None],
        catch_up: str | None,
    ) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(
                QUERIES["schedule_update"],
                schedule_id,
                cron,
                timezone,
                payload[0],
                payload[1],
                external_id[0],
                external_id[1],
                catch_up,
            )
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_set_active(self, schedule_id: str, active: bool) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(QUERIES["schedule_set_active"], schedule_id, active)
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_delete(self, schedule_id: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            found = await connection.fetchval(QUERIES["schedule_delete"], schedule_id)
            await connection.execute(QUERIES["schedule_notify"], schedule_id)
        return found is not None

    async def schedule_fire(
        self, schedule_id: str, fire_time: datetime, run_id: uuid.UUID, payload: str
    ) -> bool:
        """One run for (schedule, fire time); False when another daemon fired it first."""
        fired = await self.pool.fetchval(
            QUERIES["schedule_fire"], run_id, fire_time, payload, schedule_id
        )
        return fired is not None

    async def schedule_skip_to(self, schedule_id: str, fire_time: datetime) -> None:
        await self.pool.execute(QUERIES["schedule_skip_to"], schedule_id, fire_time)

    async def run_get(
        self, run_id: uuid.UUID, *, with_attempts: bool = True, step_limit: int | None = None
    ) -> Run | None:
        """The run with its attempts and (at most ``step_limit``) steps."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(QUERIES["run_get"], run_id)
            if row is None:
                return None
            attempts = (
                await connection.fetch(QUERIES["attempt_list"], run_id) if with_attempts else []
            )
            steps = (
                await connection.fetch(QUERIES["step_list_first"], run_id, step_limit)
                if with_attempts
                else []
            )
        return Run(
            **dict(row),
            attempts=[Attempt(**dict(a)) for a in attempts],
            steps=[Step(**dict(s)) for s in steps],
        )

    # steps ------------------------------------------------------------------------------

    async def step_list(self, run_id: uuid.UUID) -> list[Step]:
        return [Step(**dict(row)) for row in await self.pool.fetch(QUERIES["step_list"], run_id)]

    async def step_record(
        self,
        run_id: uuid.UUID,
        name: str,
        worker_id: uuid.UUID,
        attempt: int,
        *,
        status: str,
        result: str | None,
        error: str | None,
        tries: int,
        started_at: datetime,
    ) -> bool:
        """Record a step's outcome; False when the run is no longer this worker's attempt."""
        written = await self.pool.fetchval(
            QUERIES["step_record"],
            run_id,
            name,
            worker_id,
            attempt,
            status,
            result,
            error,
            tries,
            started_at,
        )
        return bool(written)

    async def run_list(
        self,
        *,
        statuses: Sequence[RunStatus] | None = None,
        task_id: str | None = None,
        tag: str | None = None,
        queue: str | None = None,
        event: str | None = None,
        schedule_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        before: uuid.UUID | None = None,
        limit: int = 50,
        summary: bool = False,
    ) -> list[Any]:
        """Runs (RunSummary with ``summary``: no payload, output) newest first, matching every
        filter given; ``before``: the keyset cursor (the
        last id of the previous page). Ids begin with their creation time, so a created range
        is an id range on the primary key."""
        conditions: list[str] = []
        args: list[Any] = []

        def where(condition: str, value: Any) -> None:
            args.append(value)
            conditions.append(condition.replace("$?", f"${len(args)}"))

        if statuses:
            where("r.status = ANY($?::text[])", [s.value for s in statuses])
        if task_id is not None:
            where("r.task_id = $?", task_id)
        if tag is not None:
            where("r.tags @> ARRAY[$?::text] AND r.tags <> '{}'", tag)
        if queue is not None:
            where("r.queue = $?", queue)
        if schedule_id is not None:
            where("r.schedule_id = $?", schedule_id)
        if event is not None:
            where("r.event_id IN (SELECT e.id FROM taskd.events e WHERE e.name = $?)", event)
        if created_after is not None:
            where("r.id >= $?", uuid_at(created_after))
        if created_before is not None:
            where("r.id < $?", uuid_at(created_before))
        if before is not None:
            where("r.id < $?", before)
        args.append(limit)
        base = QUERIES["run_list_summary" if summary else "run_list"]
        sql = "\n   AND ".join([base, *conditions])
        sql += f"\n ORDER BY r.id DESC\n LIMIT ${len(args)}"
        rows = await self.pool.fetch(sql, *args)
        model = RunSummary if summary else Run
        return [model(**dict(row)) for row in rows]

    async def run_children(self, run_id: uuid.UUID, limit: int = 1000) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(QUERIES["run_children"], run_id, limit)
        return [dict(row) for row in rows]

    async def run_set_metadata(
        self, run_id: uuid.UUID, worker_id: uuid.UUID, attempt: int, patch: str
    ) -> bool:
        """Merge ``patch`` (a JSON object) into the run's metadata; False when the run is no
        longer this worker's attempt (rescued or canceled meanwhile)."""
        written = await self.pool.fetchval(
            QUERIES["run_set_metadata"], run_id, worker_id, attempt, patch
        )
        return bool(written)

    # run logs ---------------------------------------------------------------------------

    async def run_log_insert_many(self, lines: Sequence[LogLine]) -> None:
        await self.pool.execute(
            QUERIES["run_log_insert_many"],
            [line.run_id for line in lines],
            [line.task_id for line in lines],
            [line.attempt for line in lines],
            [line.at for line in lines],
            [line.level for line in lines],
            [line.message for line in lines],
            [line.fields.decode() if line.fields is not None else None for line in lines],
        )

    async def run_log_list(
        self,
        *,
        after: int = 0,
        run_id: uuid.UUID | None = None,
        task_id: str | None = None,
        levels: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Stored log lines with an id above ``after``, oldest first."""
        if run_id is not None and task_id is None and levels is None:
            rows = await self.pool.fetch(QUERIES["run_log_of_run"], run_id, after, limit)
        else:
            rows = await self.pool.fetch(
                QUERIES["run_log_list"], after, run_id, task_id, levels, limit
            )
        return [dict(row) for row in rows]

    async def run_log_recent(
        self,
        *,
        run_id: uuid.UUID | None = None,
        task_id: str | None = None,
        levels: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` stored lines, oldest first."""
        rows = await self.pool.fetch(QUERIES["run_log_recent"], run_id, task_id, levels, limit)
        return [dict(row) for row in reversed(rows)]

    # retention --------------------------------------------------------------------------

    async def prune_runs(
        self, finished_before: datetime, batch: int, after: uuid.UUID | None = None
    ) -> tuple[int, uuid.UUID | None]:
        """Delete one batch of runs finished before the cutoff, the first ones after ``after``
        (the previous batch's return, None to start a pass); how many were deleted, and the
        last id deleted (None if none) to pass to the next batch."""
        rows = await self.pool.fetch(
            QUERIES["prune_runs"], uuid_at(finished_before), finished_before, batch, after
        )
        return len(rows), max((row[0] for row in rows), default=None)

    async def prune_events(self, created_before: datetime, batch: int) -> int:
        return _count(
            await self.pool.execute(
                QUERIES["prune_events"], created_before, batch, uuid_at(created_before)
            )
        )

    async def prune_idempotency_keys(self, batch: int) -> int:
        return _count(await self.pool.execute(QUERIES["prune_idempotency_keys"], batch))

    async def prune_workers(self, stopped_before: datetime) -> int:
        count: int = await self.pool.fetchval(QUERIES["prune_workers"], stopped_before)
        return count

    async def table_stats(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.pool.fetch(QUERIES["table_stats"])]


def _count(status: str) -> int:
    """The row count of a command tag such as ``DELETE 12``."""
    return int(status.rsplit(" ", 1)[-1])

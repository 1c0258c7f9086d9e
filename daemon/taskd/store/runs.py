"""Runs: their creation, the claim, the outcomes, the hand-backs (release, rescue), expiry,
cancel, and the reads. See daemon/taskd/run_states.py for which verb moves a run where.

A verb that finishes a run wakes its waiting parent itself (waits.wake_parents, a statement
of its own after the verb's commit): no caller has to remember it.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from taskd.ids import uuid_at
from taskd.models import Claim, ClaimedRun, Outcome, Run, RunStatus, RunSummary
from taskd.run_states import Room, check
from taskd.store.attempts import AttemptStore
from taskd.store.database import DB_ERRORS
from taskd.store.idempotency import hold_keys
from taskd.store.queries import load
from taskd.store.steps import StepStore
from taskd.store.waits import WaitStore

SQL = load("runs")

log = logging.getLogger("taskd.store")


@dataclass(frozen=True, slots=True)
class NewRuns:
    """Runs of one task to create; ``payloads`` are JSON already encoded (size-checked),
    ``keys`` their idempotency keys (None: none)."""

    task_id: str
    ids: Sequence[uuid.UUID]
    payloads: Sequence[bytes]
    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    delay: float = 0.0
    max_attempts: int | None = None
    tags: Sequence[str] = ()
    ttl: float | None = None
    concurrency_key: str | None = None
    keys: Sequence[str | None] | None = None
    retry: dict[str, Any] | None = None  # the trigger's backoff fields (max_attempts apart)
    max_duration: float | None = None


@dataclass(frozen=True, slots=True)
class RunSearch:
    """A search in runs (store/run_scan.py's parse_search reads what an operator typed): one
    run by id, runs whose ``fields`` contain a JSON object or array (``contains``, jsonb
    ``@>``), or hold a JSON scalar as a value at any depth (``value``)."""

    run_id: uuid.UUID | None = None
    contains: str | None = None
    value: str | None = None
    fields: tuple[str, ...] = ("payload", "output", "metadata")

    def condition(self, param: Callable[[Any], str]) -> str:
        """The SQL condition on ``r``; ``param(value)`` binds a value, giving its $n."""
        if self.run_id is not None:
            return f"r.id = {param(self.run_id)}"
        columns = [c for c in self.fields if c in ("payload", "output", "metadata")]
        if self.contains is not None:
            n = param(self.contains)
            return " OR ".join(f"r.{c} @> {n}::text::jsonb" for c in columns) or "false"
        if self.value is not None:
            n = param(orjson.dumps({"v": orjson.loads(self.value)}).decode())
            return (
                " OR ".join(
                    f"jsonb_path_exists(r.{c}, 'strict $.** ? (@ == $v)', {n}::text::jsonb)"
                    for c in columns
                )
                or "false"
            )
        return "true"


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What a listing matches: every filter given (None: any)."""

    statuses: Sequence[RunStatus] | None = None
    task_id: str | None = None
    tag: str | None = None
    queue: str | None = None
    event: str | None = None
    schedule_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    concurrency_key: str | None = None
    """Runs of this concurrency key ("" : runs without one)."""
    error_group: str | None = None
    """Runs with a failed attempt of this fingerprint (taskd.error_fingerprint)."""
    search: RunSearch | None = None
    version: str | None = None
    """Runs started by this version of their task's code (taskd.runs.version)."""


class RunStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        claim_pool: asyncpg.Pool,
        *,
        attempts: AttemptStore,
        steps: StepStore,
        waits: WaitStore,
        hold_claim_connection: bool = False,
    ) -> None:
        self.pool = pool
        # Claims may go through a pool of their own (asynchronous commit; see create_pool).
        self.claim_pool = claim_pool
        # The daemon's claim pool is its claimer's alone: its connection stays out between
        # claims (taken and given back, it cost 0.08 ms of a claim of one run's 0.6), and goes
        # back on an error, the pool opening a new one for the next claim.
        self._hold_claim_connection = hold_claim_connection
        self._claim_connection: asyncpg.pool.PoolConnectionProxy | None = None
        self._claim_lock = asyncio.Lock()
        self._attempts = attempts
        self._steps = steps
        self._waits = waits

    # creation -----------------------------------------------------------------------------

    async def insert_many(
        self, runs: NewRuns, *, connection: asyncpg.Connection | None = None
    ) -> None:
        """Insert runs of one task (their keys, if any, already held: see insert_many_keyed)."""
        on = connection if connection is not None else self.pool
        one = len(runs.ids) == 1  # a single trigger: scalars, not arrays of one
        await on.execute(
            SQL["insert_one"] if one else SQL["insert_many"],
            runs.task_id,
            runs.queue,
            runs.priority,
            runs.run_at,
            runs.delay,
            runs.max_attempts,
            list(runs.tags),
            runs.ids[0] if one else runs.ids,
            runs.payloads[0].decode() if one else [p.decode() for p in runs.payloads],
            runs.ttl,
            runs.concurrency_key or "",
            (runs.keys[0] if runs.keys is not None else None)
            if one
            else (list(runs.keys) if runs.keys is not None else [None] * len(runs.ids)),
            orjson.dumps(runs.retry).decode() if runs.retry else None,
            runs.max_duration,
        )

    async def insert_many_keyed(
        self, runs: NewRuns, key_ttl: float, *, connection: asyncpg.Connection | None = None
    ) -> list[uuid.UUID]:
        """Insert the runs whose idempotency key is free (or that have none), in one
        transaction; the ids in order, a key already held giving its run's id."""
        keys = runs.keys if runs.keys is not None else [None] * len(runs.ids)
        if connection is not None:
            async with connection.transaction():
                return await self._insert_keyed(connection, runs, keys, key_ttl)
        async with self.pool.acquire() as pooled, pooled.transaction():
            return await self._insert_keyed(pooled, runs, keys, key_ttl)

    async def _insert_keyed(
        self,
        tx: asyncpg.Connection,
        runs: NewRuns,
        keys: Sequence[str | None],
        key_ttl: float,
    ) -> list[uuid.UUID]:
        final, new = await hold_keys(tx, runs.task_id, runs.ids, keys, key_ttl)
        if new:
            chosen = dataclasses.replace(
                runs,
                ids=[runs.ids[i] for i in new],
                payloads=[runs.payloads[i] for i in new],
                keys=[keys[i] for i in new],
            )
            await self.insert_many(chosen, connection=tx)
        return final

    async def trigger(
        self,
        task_id: str,
        payload: str,
        options: str,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> uuid.UUID:
        """taskd.trigger: ``payload`` and ``options`` as JSON text; the run's id (with an
        idempotency key held by an earlier run: that run's id)."""
        on = connection if connection is not None else self.pool
        run_id: uuid.UUID = await on.fetchval(SQL["trigger"], task_id, payload, options)
        return run_id

    async def replay(
        self, run_id: uuid.UUID, new_id: uuid.UUID, payload: str | None = None
    ) -> bool:
        """Create ``new_id`` as a copy of ``run_id`` (with ``payload``, JSON text, instead of
        its own if given); False when ``run_id`` does not exist."""
        return bool(await self.replay_many([run_id], [new_id], payload))

    async def replay_many(
        self, run_ids: Sequence[uuid.UUID], new_ids: Sequence[uuid.UUID], payload: str | None = None
    ) -> builtins.list[tuple[uuid.UUID, uuid.UUID, str]]:
        """Copies of ``run_ids`` as ``new_ids`` (same positions), in one statement: (new id,
        replayed run, task id) of each created (a run missing is left out)."""
        rows = await self.pool.fetch(SQL["replay"], list(run_ids), list(new_ids), payload)
        return [(row[0], row[1], row[2]) for row in rows]

    # the claimer and the completer --------------------------------------------------------

    async def claim(
        self,
        task_ids: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        worker_id: uuid.UUID,
        lease_seconds: float,
        *,
        queue_after: str | None = None,
        key_after: dict[str, str] | None = None,
        task_versions: Sequence[str | None] | None = None,
        pinned: bool = True,
    ) -> Claim:
        """Claim up to ``limit`` due runs of these tasks (in these queues; None: all), queue
        by queue after ``queue_after`` and key by key after ``key_after[queue]``; with what
        the queues' limits held back. ``task_versions``: this daemon's version of each task
        (the same positions), recorded on a run's first start; ``pinned``: a run with a
        recorded version and durable state (steps, a parent) is claimed only at its version
        (False: the ``latest`` policy, at any)."""
        args = (
            task_ids,
            queues,
            limit,
            worker_id,
            lease_seconds,
            queue_after,
            orjson.dumps(key_after or {}).decode(),
            task_versions,
            pinned,
        )
        if self._hold_claim_connection:
            async with self._claim_lock:
                connection = self._claim_connection
                if connection is None:
                    connection = await self.claim_pool.acquire()
                    self._claim_connection = connection
                try:
                    rows = await connection.fetch(SQL["claim"], *args)
                except BaseException:
                    self._claim_connection = None
                    await self.claim_pool.release(connection)
                    raise
        else:
            rows = await self.claim_pool.fetch(SQL["claim"], *args)
        claim = Claim()
        for row in rows:
            if row[0] is None:
                claim.held_back = bool(row[10])
                claim.retry_in = row[11]
                claim.cursors = row[12] or {}
            else:
                run = ClaimedRun(*row[:10])
                run.retry, run.max_duration = row[13], row[14]
                claim.runs.append(run)
        return claim

    async def release_claim_connection(self) -> None:
        """Give the claimer's connection back to its pool (before the pool closes)."""
        async with self._claim_lock:
            connection, self._claim_connection = self._claim_connection, None
            if connection is not None:
                await self.claim_pool.release(connection)

    async def complete_many(
        self,
        worker_id: uuid.UUID,
        outcomes: Sequence[Outcome],
        locked: set[uuid.UUID] | None = None,
    ) -> dict[uuid.UUID, str]:
        """Write outcomes; return {id: new status} for the writes that won (the rest lost a
        race, or are added to ``locked``: runs still this worker's whose row another
        transaction holds, to be written later). Then wake the waiting parents whose last
        child this batch finished."""
        for o in outcomes:
            check(Room.COMPLETER, RunStatus.EXECUTING, o.status)
        rows = await self.pool.fetch(
            SQL["complete_many"],
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
        await self._wake_parents_after_commit(
            [row[0] for row in rows if row[2] is not None and RunStatus(row[1]).terminal]
        )
        return {row[0]: row[1] for row in rows}

    async def release_many(
        self, worker_id: uuid.UUID, runs: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]:
        """Hand (run id, attempt) back to the queue without spending the attempt (a run
        asked to cancel ends canceled, and wakes its parent)."""
        if not runs:
            return set()
        ids, attempts = zip(*runs, strict=True)
        rows = await self.pool.fetch(SQL["release_many"], worker_id, ids, attempts)
        await self._wake_parents_after_commit(
            [row[0] for row in rows if row[2] is not None and RunStatus(row[1]).terminal]
        )
        return {row[0] for row in rows}

    async def _wake_parents_after_commit(self, finished_children: list[uuid.UUID]) -> None:
        if not finished_children:
            return
        try:
            await self._waits.wake_parents(finished_children)
        except DB_ERRORS as exc:
            # The outcomes are committed: a failure here must not have them written again.
            # The parents' own recheck (CHILDREN_RECHECK) wakes them.
            log.warning("waking the parents of %d run(s) failed: %s", len(finished_children), exc)

    async def set_metadata(
        self, run_id: uuid.UUID, worker_id: uuid.UUID, attempt: int, patch: str
    ) -> bool:
        """Merge ``patch`` (a JSON object) into the run's metadata; False when the run is no
        longer this worker's attempt (rescued or canceled meanwhile)."""
        written = await self.pool.fetchval(SQL["set_metadata"], run_id, worker_id, attempt, patch)
        return bool(written)

    async def list_cancel_requested(self, run_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        rows = await self.pool.fetch(SQL["list_cancel_requested"], list(run_ids))
        return [row[0] for row in rows]

    # the chores that end runs outside an attempt --------------------------------------------
    # (each wakes the waiting parents of the runs it finished; a failure to wake them is
    # raised, as the chore's own failure would be: the chore runs again)

    async def rescue(
        self, gone_workers: Sequence[uuid.UUID], limit: int = 1000
    ) -> list[tuple[uuid.UUID, str, uuid.UUID, str, int]]:
        """Hand back runs with an expired lease or a gone worker:
        (run id, new status, lost worker, task id, attempt)."""
        rows = await self.pool.fetch(SQL["rescue"], list(gone_workers), limit)
        rescued = [(row[0], row[1], row[2], row[3], row[4]) for row in rows]
        await self._wake_parents([r[0] for r in rescued if RunStatus(r[1]).terminal])
        return rescued

    async def expire(self, limit: int = 1000) -> list[tuple[uuid.UUID, str]]:
        """Queued runs past their ttl end expired: (run id, task id)."""
        expired = [(row[0], row[1]) for row in await self.pool.fetch(SQL["expire"], limit)]
        await self._wake_parents([run_id for run_id, _ in expired])
        return expired

    async def fail_unknown(
        self, waited_seconds: float, limit: int = 1000
    ) -> list[tuple[uuid.UUID, str]]:
        """Fail due runs of tasks unserved for ``waited_seconds``: (run id, task id)."""
        rows = await self.pool.fetch(SQL["fail_unknown"], waited_seconds, limit)
        failed = [(row[0], row[1]) for row in rows]
        await self._wake_parents([run_id for run_id, _ in failed])
        return failed

    async def cancel(self, run_id: uuid.UUID) -> str:
        """taskd.cancel: 'canceled', or 'executing' when its worker was asked to cancel it
        (its end then wakes the parent: the completer, the releaser or the rescuer)."""
        status: str = await self.pool.fetchval(SQL["cancel"], run_id)
        if status == RunStatus.CANCELED:
            await self._wake_parents([run_id])
        return status

    async def cancel_many(
        self, run_ids: Sequence[uuid.UUID]
    ) -> builtins.list[tuple[uuid.UUID, str, str]]:
        """taskd.cancel for each of these runs still unfinished, in one transaction: (id,
        task id, status after the call) of each ('canceled', or 'executing': its daemon was
        asked); the runs finished or gone meanwhile are left out."""
        rows = await self.pool.fetch(SQL["cancel_many"], list(run_ids))
        done = [(row[0], row[1], row[2]) for row in rows]
        await self._wake_parents_after_commit([r[0] for r in done if r[2] == RunStatus.CANCELED])
        return done

    async def _wake_parents(self, finished: list[uuid.UUID]) -> None:
        if finished:
            await self._waits.wake_parents(finished)

    # reads --------------------------------------------------------------------------------

    async def get(
        self, run_id: uuid.UUID, *, with_attempts: bool = True, step_limit: int | None = None
    ) -> Run | None:
        """The run with its attempts and (at most ``step_limit``) steps."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(SQL["get"], run_id)
            if row is None:
                return None
            attempts = (
                await self._attempts.list(run_id, connection=connection) if with_attempts else []
            )
            steps = (
                await self._steps.list(run_id, limit=step_limit, connection=connection)
                if with_attempts
                else []
            )
        return Run(**dict(row), attempts=attempts, steps=steps)

    async def list(
        self,
        where: RunFilter | None = None,
        *,
        before: uuid.UUID | None = None,
        limit: int = 50,
        summary: bool = False,
    ) -> list[Any]:
        """Runs (RunSummary with ``summary``: no payload, output) newest first, matching
        ``where``; ``before``: the keyset cursor (the last id of the previous page). Ids
        begin with their creation time, so a created range is an id range on the primary
        key."""
        f = where or RunFilter()
        conditions: list[str] = []
        args: list[Any] = []

        def match(condition: str, value: Any) -> None:
            args.append(value)
            conditions.append(condition.replace("$?", f"${len(args)}"))

        if f.statuses:
            match("r.status = ANY($?::text[])", [s.value for s in f.statuses])
        if f.task_id is not None:
            match("r.task_id = $?", f.task_id)
        if f.tag is not None:
            match("r.tags @> ARRAY[$?::text] AND r.tags <> '{}'", f.tag)
        if f.queue is not None:
            match("r.queue = $?", f.queue)
        if f.schedule_id is not None:
            match("r.schedule_id = $?", f.schedule_id)
        if f.event is not None:
            # a lookup per run (store/run_scan.py says why not IN (SELECT ...))
            match(
                "EXISTS (SELECT FROM taskd.events e WHERE e.id = r.event_id AND e.name = $?)",
                f.event,
            )
        if f.created_after is not None:
            match("r.id >= $?", uuid_at(f.created_after))
        if f.created_before is not None:
            match("r.id < $?", uuid_at(f.created_before))
        if before is not None:
            match("r.id < $?", before)
        if f.concurrency_key is not None:
            match("r.concurrency_key = $?", f.concurrency_key)
        if f.error_group is not None:
            match(
                "EXISTS (SELECT FROM taskd.attempts a"
                " WHERE a.run_id = r.id AND a.fingerprint = $?)",
                f.error_group,
            )
        if f.version is not None:
            match("r.version = $?", f.version)
        if f.search is not None:

            def param(value: Any) -> str:
                args.append(value)
                return f"${len(args)}"

            conditions.append(f"({f.search.condition(param)})")
        args.append(limit)
        base = SQL["list_summary" if summary else "list"]
        sql = "\n   AND ".join([base, *conditions])
        sql += f"\n ORDER BY r.id DESC\n LIMIT ${len(args)}"
        rows = await self.pool.fetch(sql, *args)
        model = RunSummary if summary else Run
        return [model(**dict(row)) for row in rows]

    async def children(self, run_id: uuid.UUID, limit: int = 1000) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(SQL["children"], run_id, limit)
        return [dict(row) for row in rows]

    async def fail_version_unavailable(
        self, waited_seconds: float, limit: int = 1000
    ) -> builtins.list[tuple[uuid.UUID, str, str]]:
        """Fail due runs pinned to a version no live worker has served for ``waited_seconds``
        (VersionUnavailable): (run id, task id, version)."""
        rows = await self.pool.fetch(SQL["fail_version_unavailable"], waited_seconds, limit)
        failed = [(row[0], row[1], row[2]) for row in rows]
        await self._wake_parents([run_id for run_id, _, _ in failed])
        return failed

    async def version_unserved(self) -> builtins.list[dict[str, Any]]:
        """Queued, due runs pinned to a version no live worker serves, per task and version:
        task_id, version, queued, oldest (created), due_since."""
        return [dict(row) for row in await self.pool.fetch(SQL["version_unserved"])]

    async def count_unserved(self, served: Sequence[str]) -> builtins.list[dict[str, Any]]:
        rows = await self.pool.fetch(SQL["count_unserved"], list(served))
        return [dict(row) for row in rows]

    async def any_due(self, task_ids: Sequence[str], queues: Sequence[str] | None) -> bool:
        """Whether a queued run of these tasks (in these queues; None: all) is due and could
        be claimed but for the queues' limits (burst mode)."""
        due: bool = await self.pool.fetchval(
            SQL["any_due"], list(task_ids), list(queues) if queues is not None else None
        )
        return due

    async def left_for_later(
        self, task_ids: Sequence[str], queues: Sequence[str] | None
    ) -> dict[str, int]:
        """Runs of these tasks (in these queues; None: all) not finished: ``delayed`` (queued,
        not due), ``due`` (queued, due) and ``waiting`` (what a burst leaves)."""
        row = await self.pool.fetchrow(
            SQL["left_for_later"], list(task_ids), list(queues) if queues is not None else None
        )
        assert row is not None
        return dict(row)

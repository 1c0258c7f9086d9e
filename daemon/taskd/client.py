"""The Python producer: trigger runs (optionally inside your own transaction) and read them."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.lowlevel
import asyncpg
import orjson

from taskd import clock
from taskd.changes import ChangeHub, ChangeKind, RunChange
from taskd.config import DatabaseSettings, find_config, load_settings
from taskd.durations import Duration, duration_text, to_seconds
from taskd.embedded import embedded_dsn
from taskd.errors import (
    QueueNotFound,
    RunFinished,
    RunNotFound,
    ScheduleNotFound,
    TokenFinished,
    TokenNotFound,
    WebhookExists,
    WebhookNotFound,
)
from taskd.ids import new_run_id, new_run_ids, parse_run_id
from taskd.models import (
    COST_DIMENSIONS,
    Budgets,
    BudgetStatus,
    CostDimension,
    Costs,
    DailyCost,
    DailyCostDimension,
    DailyCosts,
    Event,
    Health,
    LLMBackoff,
    LLMCallRecord,
    QueueDepth,
    Run,
    RunLogLine,
    RunStatus,
    Schedule,
    UnservedTask,
    UnservedVersion,
    WorkerInfo,
)
from taskd.payloads import check_concurrency_key, check_idempotency_keys, encode_payload
from taskd.sdk.cron import upcoming_fire
from taskd.sdk.current import reset_current_client, set_current_client
from taskd.sdk.queues import Rate, check_limit, check_queue_name
from taskd.sdk.retry import Retry, run_policy
from taskd.sdk.schedules import CATCH_UP_POLICIES, CatchUp, ScheduleSpec
from taskd.sdk.task import TaskDefinition
from taskd.store.database import create_pool
from taskd.store.llm import DAILY_DIMENSIONS, MAX_COST_DAYS, CallFilter
from taskd.store.run_scan import parse_search
from taskd.store.runs import NewRuns, RunFilter
from taskd.store.schedules import KEEP, NewSchedule, ScheduleChanges
from taskd.store.store import Store
from taskd.store.webhooks import DELIVERY_STATUSES, SubscriptionSpec
from taskd.webhook_models import WebhookDelivery, WebhookSecret, WebhookSubscription
from taskd.webhook_rules import (
    check_events,
    check_filter,
    check_name,
    check_secret,
    check_url,
    new_secret,
)

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
MAX_DELAY_SECONDS = 100 * 365.25 * 86_400


class Unset(enum.Enum):
    """A keyword not given (where None means "no limit")."""

    UNSET = "unset"


UNSET = Unset.UNSET
_UNSET: Any = object()  # "not given", where None is a value (clear the payload)


class Client:
    """Triggers and reads runs through an asyncpg pool.

    ``async with Client.connect(dsn) as client`` owns its pool (which does not reset session
    state between calls: leave no SET or LISTEN on ``client.pool``'s connections);
    ``Client(pool)`` borrows yours.
    Inside ``Client.connect`` the client is also the default for typed handles
    (``my_task.trigger(payload)``).
    """

    def __init__(self, pool: asyncpg.Pool, *, changes: ChangeHub | None = None) -> None:
        self._store = Store(pool)
        self._max_payload_bytes: int | None = None
        # Inside a daemon: runs this client creates or cancels are published to its stream
        # (not those enqueued in a caller's transaction, which may still roll back).
        self._changes = changes

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, dsn: str | None = None, settings: DatabaseSettings | None = None
    ) -> AsyncIterator[Client]:
        """Open a pool on ``dsn``; without one, on the project's configured database.

        ``Client.connect()`` finds the configuration as every ``taskd`` command does
        (``$TASKD_CONFIG``, else the ``taskd.toml`` of the working directory or a parent,
        else ``./config.toml``; ``TASKD_*`` variables override it) and connects to the
        database the daemon uses: ``database.url``, or when it is empty the embedded server
        under ``database.data_dir``, joined if ``taskd dev`` runs it, started otherwise.
        ``settings`` (pool sizes, timeouts) default to that configuration's ``[database]``.
        """
        if dsn is None:
            project = load_settings(find_config())
            settings = settings or project.database
            dsn = project.database.url or await anyio.to_thread.run_sync(
                embedded_dsn, project.database.data_dir
            )
        pool = await create_pool(dsn, settings, reset_session=False)
        client = cls(pool)
        token = set_current_client(client)
        try:
            yield client
        finally:
            reset_current_client(token)
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        """The asyncpg pool the client works through (yours, or the one ``connect`` opened)."""
        return self._store.pool

    # producing ------------------------------------------------------------------------------

    async def trigger(
        self,
        task: str | TaskDefinition[Any, Any],
        payload: Any = None,
        *,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
        tags: Sequence[str] = (),
        queue: str | None = None,
        ttl: Duration | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: Duration = "24h",
        concurrency_key: str | None = None,
        connection: asyncpg.Connection | None = None,
    ) -> uuid.UUID:
        """Create a run; return its id.

        ``delay`` ("10s", "5m", seconds) or ``run_at`` (aware datetime) postpone the start;
        ``priority``: higher starts first; ``max_attempts`` overrides the task's retry;
        ``retry`` (a ``Retry``, or a dict of some of its fields: ``{"max_attempts": 5,
        "min_delay": "1s", "factor": 2}``) overrides the task's retry policy for this run, each
        field given over the task's; ``max_duration`` ("5m", seconds) this run's attempts';
        ``ttl``: a run not started within it (counted from now) ends expired;
        ``idempotency_key``: a second trigger of this task with the same key within
        ``idempotency_ttl`` (24 h) creates nothing and returns the first run's id, whatever
        the number of concurrent callers (a unique key in the database decides);
        ``concurrency_key``: runs with one key share their queue's per-key limit (one run at
        a time per user...), and keys take turns when the queue is busy;
        ``connection``: enqueue inside that connection's open transaction, so the run exists
        only if the transaction commits.
        """
        if idempotency_key is not None:
            return await self._trigger_once(
                task,
                payload,
                idempotency_key,
                idempotency_ttl,
                delay=delay,
                run_at=run_at,
                priority=priority,
                max_attempts=max_attempts,
                retry=retry,
                max_duration=max_duration,
                tags=tags,
                queue=queue,
                ttl=ttl,
                concurrency_key=concurrency_key,
                connection=connection,
            )
        ids = await self.batch_trigger(
            task,
            [payload],
            delay=delay,
            run_at=run_at,
            priority=priority,
            max_attempts=max_attempts,
            retry=retry,
            max_duration=max_duration,
            tags=tags,
            queue=queue,
            ttl=ttl,
            concurrency_key=concurrency_key,
            connection=connection,
        )
        return ids[0]

    async def batch_trigger(
        self,
        task: str | TaskDefinition[Any, Any],
        payloads: Sequence[Any],
        *,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        retry: Retry | Mapping[str, Any] | None = None,
        max_duration: Duration | None = None,
        tags: Sequence[str] = (),
        queue: str | None = None,
        ttl: Duration | None = None,
        concurrency_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
        idempotency_ttl: Duration = "24h",
        connection: asyncpg.Connection | None = None,
    ) -> list[uuid.UUID]:
        """Create one run per payload, in one statement and one NOTIFY; ids in order.

        ``idempotency_keys``: one per payload (None: no key); a payload whose key an earlier
        run holds creates nothing and gets that run's id (so does a key repeated in the
        batch: the id of its first payload's run).
        """
        task_id, default_queue = _task_identity(task)
        _check_options(tags, max_attempts, run_at, delay, ttl, concurrency_key)
        attempts, backoff, duration = run_policy(max_attempts, retry, max_duration)
        keys = check_idempotency_keys(idempotency_keys, len(payloads))
        limit = await self._payload_limit()
        encoded = [encode_payload(payload, limit) for payload in payloads]
        if not encoded:
            return []
        ids = new_run_ids(len(encoded))
        runs = NewRuns(
            task_id,
            ids,
            encoded,
            queue=queue or default_queue,
            priority=priority,
            run_at=run_at,
            delay=to_seconds(delay) if delay is not None else 0.0,
            max_attempts=attempts,
            tags=tags,
            ttl=to_seconds(ttl) if ttl is not None else None,
            concurrency_key=concurrency_key,
            keys=keys,
            retry=backoff,
            max_duration=duration,
        )
        created = ids
        if keys is None:
            await self._store.runs.insert_many(runs, connection=connection)
        else:
            ids = await self._store.runs.insert_many_keyed(
                runs, to_seconds(idempotency_ttl), connection=connection
            )
            created = [run_id for run_id, new in zip(ids, created, strict=True) if run_id == new]
        if self._changes is not None and self._changes.active and connection is None:
            for run_id in created:
                self._changes.publish(RunChange(ChangeKind.CREATED, run_id, task_id, "queued"))
        return ids

    async def _trigger_once(
        self,
        task: str | TaskDefinition[Any, Any],
        payload: Any,
        idempotency_key: str,
        idempotency_ttl: Duration,
        *,
        delay: Duration | None,
        run_at: datetime | None,
        priority: int,
        max_attempts: int | None,
        retry: Retry | Mapping[str, Any] | None,
        max_duration: Duration | None,
        tags: Sequence[str],
        queue: str | None,
        ttl: Duration | None,
        concurrency_key: str | None,
        connection: asyncpg.Connection | None,
    ) -> uuid.UUID:
        """A keyed trigger, through taskd.trigger: the key's row decides, in one statement."""
        task_id, default_queue = _task_identity(task)
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise ValueError("idempotency_key must be a non-empty string")
        _check_options(tags, max_attempts, run_at, delay, ttl, concurrency_key)
        attempts, backoff, duration = run_policy(max_attempts, retry, max_duration)
        options: dict[str, Any] = {
            "idempotency_key": idempotency_key,
            "idempotency_ttl": to_seconds(idempotency_ttl),
            "priority": priority,
            "tags": list(tags),
        }
        for name, value in (
            ("delay", to_seconds(delay) if delay is not None else None),
            ("run_at", run_at.isoformat() if run_at is not None else None),
            ("max_attempts", attempts),
            ("retry", backoff),
            ("max_duration", duration),
            ("queue", queue or default_queue),
            ("ttl", to_seconds(ttl) if ttl is not None else None),
            ("concurrency_key", concurrency_key),
        ):
            if value is not None:
                options[name] = value
        encoded = encode_payload(payload, await self._payload_limit())
        run_id = await self._store.runs.trigger(
            task_id, encoded.decode(), orjson.dumps(options).decode(), connection=connection
        )
        return run_id

    async def send_event(
        self, name: str, payload: Any = None, *, connection: asyncpg.Connection | None = None
    ) -> uuid.UUID:
        """Record an event and start one run of every task subscribed to ``name``.

        Like ``trigger``, ``connection`` puts it in your own transaction. An event no task
        subscribes to is recorded all the same. Returns the event's id (each run it created
        carries it as ``event_id``).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError("an event needs a non-empty name")
        encoded = encode_payload(
            payload if payload is not None else {}, await self._payload_limit()
        )
        return await self._store.events.send(name, encoded.decode(), connection=connection)

    async def list_events(self, *, name: str | None = None, limit: int = 50) -> list[Event]:
        """Recorded events, newest first."""
        return await self._store.events.list(name, limit)

    # schedules --------------------------------------------------------------------------------

    async def create_schedule(
        self,
        task: str | TaskDefinition[Any, Any],
        cron: str,
        *,
        timezone: str = "UTC",
        external_id: str | None = None,
        dedup_key: str | None = None,
        payload: Any = None,
        catch_up: str = "latest",
    ) -> Schedule:
        """Create a cron schedule for a task; every daemon picks it up within a second.

        ``dedup_key`` makes creation idempotent: creating again with the same key updates the
        existing schedule instead of adding one (as Trigger.dev's deduplicationKey).
        ``external_id`` is yours (a user id, say) and reaches every run's payload, as does
        ``payload``. ``catch_up``: what to do with fire times missed (more than 60 s late:
        no daemon ran, or the schedule was paused): ``latest`` (one run), ``all`` (one per
        time, the latest 100), ``none``; a fire time at most 60 s late always fires. A bad
        cron or timezone, or a cron that never fires (``0 0 30 2 *``), is a ValueError.
        """
        task_id = _task_identity(task)[0]
        ScheduleSpec(cron, timezone, _catch_up(catch_up))  # validates
        encoded = encode_payload(payload, await self._payload_limit()).decode()
        schedule_id = await self._store.schedules.upsert(
            NewSchedule(
                f"sched_{new_run_id().hex}",
                task_id=task_id,
                cron=cron,
                timezone=timezone,
                payload=encoded,
                external_id=external_id,
                dedup_key=dedup_key,
                catch_up=catch_up,
            )
        )
        return await self.get_schedule(schedule_id)

    async def update_schedule(
        self,
        schedule_id: str,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        payload: Any = _UNSET,
        external_id: Any = _UNSET,
        catch_up: str | None = None,
    ) -> Schedule:
        """Change a schedule's cron, timezone, payload, external id or catch-up policy."""
        current = await self.get_schedule(schedule_id)
        ScheduleSpec(
            cron or current.cron,
            timezone or current.timezone,
            _catch_up(catch_up or current.catch_up),
        )
        new_payload = (
            encode_payload(payload, await self._payload_limit()).decode()
            if payload is not _UNSET
            else KEEP
        )
        await self._store.schedules.update(
            schedule_id,
            ScheduleChanges(
                cron=cron,
                timezone=timezone,
                catch_up=catch_up,
                payload=new_payload,
                external_id=external_id if external_id is not _UNSET else KEEP,
            ),
        )
        return await self.get_schedule(schedule_id)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; the runs it fired stay. ScheduleNotFound for an unknown id."""
        if not await self._store.schedules.delete(schedule_id):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")

    async def trigger_schedule(self, schedule_id: str) -> uuid.UUID:
        """Fire a schedule now, paused or not; the new run's id.

        The run is the one a scheduled fire makes (its task, queue, and a ``ScheduledRun``
        payload with ``timestamp`` = now and the schedule's ``payload``), with
        ``manual=True`` and no ``scheduled_for``; the schedule's next scheduled fire is
        unchanged. ScheduleNotFound for an unknown id.
        """
        fired = await self._store.schedules.trigger(schedule_id)
        if fired is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        run_id, task_id = fired
        if self._changes is not None and self._changes.active:
            self._changes.publish(RunChange(ChangeKind.CREATED, run_id, task_id, "queued"))
        return run_id

    async def activate_schedule(self, schedule_id: str) -> Schedule:
        """Resume a paused schedule (missed times follow its catch-up policy)."""
        if not await self._store.schedules.set_active(schedule_id, True):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return await self.get_schedule(schedule_id)

    async def deactivate_schedule(self, schedule_id: str) -> Schedule:
        """Pause a schedule: it fires nothing until activated again."""
        if not await self._store.schedules.set_active(schedule_id, False):
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return await self.get_schedule(schedule_id)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """One schedule, with its next fire time; ScheduleNotFound for an unknown id."""
        row = await self._store.schedules.get(schedule_id)
        if row is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return _schedule(row)

    async def list_schedules(
        self, *, task: str | TaskDefinition[Any, Any] | None = None, active: bool | None = None
    ) -> list[Schedule]:
        """Schedules by id, optionally only those of ``task`` or only active (or paused) ones."""
        task_id = _task_identity(task)[0] if task is not None else None
        rows = await self._store.schedules.list(task_id, active)
        found = []
        slice_start = time.perf_counter()
        for row in rows:
            # served by the admin API on the daemon's loop: give it back every few ms
            if time.perf_counter() - slice_start > 0.002:
                await anyio.lowlevel.checkpoint()
                slice_start = time.perf_counter()
            found.append(_schedule(row))
        return found

    async def cancel(self, run_id: uuid.UUID | str) -> RunStatus:
        """Cancel a run.

        A run that has not started (queued, delayed, retrying) is CANCELED at once and never
        starts; the return value is CANCELED. For an executing run, its daemon is notified
        and cancels the attempt (its ``on_cancel`` hook runs, the run ends CANCELED); the
        return value is EXECUTING: poll ``get_run`` to see it end. A run that completes
        before the request reaches it stays completed. Raises RunNotFound, or RunFinished
        for a run that has already finished.
        """
        parsed = parse_run_id(run_id)
        try:
            status = await self._store.runs.cancel(parsed)
        except asyncpg.PostgresError as exc:
            raise _run_error(exc) from None
        if status == RunStatus.CANCELED and self._changes is not None and self._changes.active:
            run = await self._store.runs.get(parsed, with_attempts=False)
            task_id = run.task_id if run is not None else ""
            self._changes.publish(RunChange(ChangeKind.CANCELED, parsed, task_id, "canceled"))
        return RunStatus(status)

    async def complete_token(
        self,
        token_id: uuid.UUID | str,
        data: Any = None,
        *,
        connection: asyncpg.Connection | None = None,
    ) -> None:
        """Complete a wait token: the run waiting on it (``wait.for_token``) gets ``data`` and
        resumes. Raises TokenNotFound, or TokenFinished when it was completed or timed out
        already. ``connection``: inside your own transaction."""
        try:
            parsed = uuid.UUID(str(token_id))
        except ValueError:
            raise TokenNotFound(f"not a token id: {token_id!r}") from None
        encoded = encode_payload(data, await self._payload_limit())
        try:
            await self._store.tokens.complete(parsed, encoded.decode(), connection=connection)
        except asyncpg.PostgresError as exc:
            code = getattr(exc, "sqlstate", None)
            message = str(exc).removeprefix("taskd.complete_token: ")
            if code == "TD404":
                raise TokenNotFound(message) from None
            if code == "TD409":
                raise TokenFinished(message) from None
            raise

    async def replay(self, run_id: uuid.UUID | str, *, payload: Any = _UNSET) -> uuid.UUID:
        """Create a new run with the payload and options of ``run_id``; return its id.

        The new run's ``replayed_from`` names the original. Any run can be replayed.
        ``payload``: the new run's payload instead of the original's (None is the JSON null).
        """
        original = parse_run_id(run_id)
        new_id = new_run_id()
        encoded = (
            None
            if payload is _UNSET
            else encode_payload(payload, await self._payload_limit()).decode()
        )
        if not await self._store.runs.replay(original, new_id, encoded):
            raise RunNotFound(f"no run with id {original}")
        if self._changes is not None and self._changes.active:
            run = await self._store.runs.get(new_id, with_attempts=False)
            task_id = run.task_id if run is not None else ""
            self._changes.publish(RunChange(ChangeKind.CREATED, new_id, task_id, "queued"))
        return new_id

    # reading ----------------------------------------------------------------------------------

    async def get_run(self, run_id: uuid.UUID | str) -> Run:
        """The run with its attempts; raises RunNotFound."""
        run = await self._store.runs.get(parse_run_id(run_id))
        if run is None:
            raise RunNotFound(f"no run with id {run_id}")
        return run

    async def list_runs(
        self,
        *,
        status: RunStatus | str | Sequence[RunStatus | str] | None = None,
        task: str | TaskDefinition[Any, Any] | None = None,
        event: str | None = None,
        schedule: str | None = None,
        tag: str | None = None,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        key: str | None = None,
        error_group: str | None = None,
        search: str | None = None,
        search_in: Sequence[str] = ("payload", "output", "metadata"),
        before: uuid.UUID | str | None = None,
        limit: int = 50,
        version: str | None = None,
    ) -> list[Run]:
        """Runs newest first, matching every filter given; page with
        ``before=<last id of the previous page>``.

        ``key``: a concurrency key; ``error_group``: a fingerprint of ``/api/errors`` (runs
        with a failed attempt in that group); ``search``: a run id, JSON (an object or array
        that the payload, output or metadata contains: ``'{"customer": "acme"}'``), or a
        value held at any depth (``acme``, ``42``), in ``search_in``; ``version``: runs
        started by this version of their task's code. Unlike the console's pages, this reads
        as many runs as it takes to fill ``limit``."""
        if isinstance(status, str | RunStatus):
            statuses = [RunStatus(status)]
        elif status is not None:
            statuses = [RunStatus(s) for s in status]
        else:
            statuses = None
        task_id = _task_identity(task)[0] if task is not None else None
        return await self._store.runs.list(
            RunFilter(
                statuses=statuses,
                task_id=task_id,
                event=event,
                schedule_id=schedule,
                tag=tag,
                queue=queue,
                created_after=created_after,
                created_before=created_before,
                concurrency_key=key,
                error_group=error_group,
                search=parse_search(search, search_in) if search is not None else None,
                version=version,
            ),
            before=parse_run_id(before) if before is not None else None,
            limit=limit,
        )

    async def list_logs(
        self,
        *,
        run: uuid.UUID | str | None = None,
        task: str | TaskDefinition[Any, Any] | None = None,
        levels: Sequence[str] | None = None,
        after: int = 0,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[RunLogLine]:
        """Stored ``ctx.log`` lines, oldest first (``taskd logs``): those with an id above
        ``after``, or with ``newest`` the last ``limit`` lines."""
        run_id = parse_run_id(run) if run is not None else None
        task_id = _task_identity(task)[0] if task is not None else None
        level_list = list(levels) if levels is not None else None
        if newest:
            rows = await self._store.logs.recent(
                run_id=run_id, task_id=task_id, levels=level_list, limit=limit
            )
        else:
            rows = await self._store.logs.list(
                after=after, run_id=run_id, task_id=task_id, levels=level_list, limit=limit
            )
        return [RunLogLine(**row) for row in rows]

    # queues -------------------------------------------------------------------------------

    async def list_queues(self) -> list[QueueDepth]:
        """Every queue with runs or settings: depths, runs executing, limits, pause."""
        return [QueueDepth(**q) for q in await self._store.queues.depths()]

    async def pause_queue(self, name: str) -> None:
        """Stop starting runs of this queue, on every daemon (within a claim); runs executing
        finish, queued runs stay queued and nothing is lost."""
        await self._store.queues.pause(_queue_name(name), True)

    async def resume_queue(self, name: str) -> None:
        """Start runs of a paused queue again, on every daemon."""
        await self._store.queues.pause(_queue_name(name), False)

    async def set_queue_limits(
        self,
        name: str,
        *,
        concurrency: int | Unset | None = UNSET,
        concurrency_limit_per_key: int | Unset | None = UNSET,
        rate_limit: Rate | str | Unset | None = UNSET,
    ) -> None:
        """Change a queue's limits at run time, on every daemon from their next claim (None
        removes a limit; a limit not given stays). They hold until ``reset_queue``, also over
        what the code declares. Lowering a limit stops no run: new starts wait until the
        queue is under it."""
        changes: dict[str, Any] = {}
        for field_name, value in (
            ("concurrency", concurrency),
            ("concurrency_per_key", concurrency_limit_per_key),
        ):
            if value is UNSET:
                continue
            if value is not None:
                check_limit(field_name, value)
            changes[field_name] = value
        if not isinstance(rate_limit, Unset):
            if isinstance(rate_limit, str):
                rate_limit = Rate.parse(rate_limit)
            if rate_limit is not None and (rate_limit.limit is None or rate_limit.call_limits()):
                raise ValueError(
                    "an operator's rate limit is starts per period (e.g. 50/1m); limits on "
                    "LLM calls are declared in the code (Queue(rate_limit=Rate(tokens=...)))"
                )
            changes["rate"] = (
                (rate_limit.limit, rate_limit.seconds) if rate_limit is not None else None
            )
        if not changes:
            raise ValueError("give at least one limit to change")
        await self._store.queues.set_limits(_queue_name(name), changes)

    async def reset_queue(self, name: str) -> None:
        """Back to the limits the code declares; an error for a queue without settings."""
        if not await self._store.queues.reset(_queue_name(name)):
            raise QueueNotFound(f"no queue {name!r} has settings")

    # LLM calls ------------------------------------------------------------------------------

    async def costs(
        self,
        *,
        by: CostDimension | None = "task",
        since: datetime | Duration | None = None,
        until: datetime | Duration | None = None,
        task: str | TaskDefinition[Any, Any] | None = None,
        key: str | None = None,
        tag: str | None = None,
        model: str | None = None,
        run: uuid.UUID | str | None = None,
        limit: int = 1000,
    ) -> Costs:
        """What the LLM calls made through ``ctx.llm`` cost: tokens and dollars summed per
        ``by`` (``"task"``, ``"tag"``, ``"key"``: the concurrency key, i.e. the tenant,
        ``"model"``, ``"run"``; None: only the total), largest cost first, at most ``limit``
        groups, and in total. ``since`` / ``until`` bound the calls' start: a datetime, an
        ISO 8601 text (without a timezone: UTC) or a duration before now (``"7d"``,
        ``3600``); the other arguments keep the calls of one task, concurrency key, tag,
        model or run. Sums are exact (``Decimal`` dollars): ``await client.costs(key=user_id,
        since="30d", by=None)`` is what a user cost this month."""
        if by is not None and by not in COST_DIMENSIONS:
            raise ValueError(f"by must be one of {', '.join(COST_DIMENSIONS)}, not {by!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be a whole number from 1 to 100000, not {limit!r}")
        task_id = _task_identity(task)[0] if task is not None else None
        for name, text in (("task", task_id), ("key", key), ("tag", tag), ("model", model)):
            if text is not None and (not isinstance(text, str) or "\x00" in text):
                raise ValueError(f"{name} must be a string without NUL characters: {text!r}")
        now = clock.now()
        start, end = moment_of(since, "since", now), moment_of(until, "until", now)
        if start is not None and end is not None and start > end:
            raise ValueError(f"since ({start.isoformat()}) is after until ({end.isoformat()})")
        where = CallFilter(
            since=start,
            until=end,
            task_id=task_id,
            concurrency_key=key,
            tag=tag,
            model=model,
            run_id=parse_run_id(run) if run is not None else None,
        )
        return await self._store.llm.costs(by, where, limit)

    async def list_llm_calls(
        self, run: uuid.UUID | str, *, limit: int = 1000
    ) -> list[LLMCallRecord]:
        """The run's LLM calls, oldest first (at most ``limit``): model, step, tokens, cost,
        outcome. They stay after the run itself is pruned (``[retention] llm_calls``)."""
        return await self._store.llm.run_calls(parse_run_id(run), limit)

    async def daily_costs(
        self, *, days: int = 30, by: DailyCostDimension = "task", top: int = 10
    ) -> DailyCosts:
        """What the LLM calls made through ``ctx.llm`` cost per UTC day over the last ``days``
        (today included, at most 400), per ``by`` (``"task"``, ``"tag"``, ``"key"``: the
        concurrency key, ``"model"``): the ``top`` groups that cost the most over the range
        have a row per day, the others are summed per day in a row with group None. Read from
        daily sums kept beside the calls (``taskd.llm_costs_daily``), not from every call."""
        if by not in DAILY_DIMENSIONS:
            raise ValueError(f"by must be one of {', '.join(DAILY_DIMENSIONS)}, not {by!r}")
        for name, value, most in (("days", days, MAX_COST_DAYS), ("top", top, 1000)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
                raise ValueError(f"{name} must be a whole number from 1 to {most}, not {value!r}")
        rows, total = await self._store.llm.daily_costs(days, by, top)
        return DailyCosts(
            days=[
                DailyCost(
                    day=row["day"],
                    group=row["grp"],
                    cost_usd=row["cost_usd"],
                    input_tokens=row["input_tokens"],
                    output_tokens=row["output_tokens"],
                    calls=row["calls"],
                )
                for row in rows
            ],
            total_usd=total,
            others=rows[0]["others"] if rows else 0,
        )

    async def budgets(self, *, limit: int = 1000) -> Budgets:
        """Every LLM budget with what it has spent: each queue ``Budget`` per concurrency key
        that spent in its current window (most first; a budget nothing spent in has one entry
        with key None), then each task's ``budget_usd`` with the most any of its unfinished
        runs has spent. At most ``limit`` entries (``truncated`` says when more keys spent)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be a whole number from 1 to 100000, not {limit!r}")
        entries: list[BudgetStatus] = []
        truncated = False
        for row in await self._store.llm_limits.queue_budgets(limit + 1):
            if len(entries) >= limit:
                truncated = True
                break
            entries.append(
                BudgetStatus(
                    scope="queue",
                    name=row["name"],
                    key=row["concurrency_key"],
                    limit_usd=row["limit_usd"],
                    per=duration_text(row["period"]),
                    spent_usd=row["spent"] if row["spent"] is not None else Decimal(0),
                    window_start=row["window_start"],
                    on_exceed=row["on_exceed"],
                )
            )
        for budgeted in await self._store.llm_limits.task_budgets():
            if len(entries) >= limit:
                truncated = True
                break
            entries.append(
                BudgetStatus(
                    scope="task",
                    name=budgeted["id"],
                    key=None,
                    limit_usd=budgeted["limit_usd"],
                    per=None,
                    spent_usd=budgeted["spent"],
                    window_start=None,
                    on_exceed="fail",
                )
            )
        return Budgets(budgets=entries, truncated=truncated)

    async def llm_backoffs(self) -> list[LLMBackoff]:
        """The models the fleet holds backed off: no daemon starts a call of one before its
        ``until`` (set by a 429's reset time or by overload answers)."""
        return await self._store.llm.backoff_list()

    async def health(self) -> Health:
        """Live workers, queue depths, the oldest due run, and runs no live worker serves."""
        workers = [WorkerInfo(**w) for w in await self._store.workers.list()]
        queues = [QueueDepth(**q) for q in await self._store.queues.depths()]
        served = sorted({task for worker in workers for task in worker.tasks})
        unserved = [UnservedTask(**u) for u in await self._store.runs.count_unserved(served)]
        due = [q.oldest_due for q in queues if q.oldest_due is not None]
        versions = [UnservedVersion(**u) for u in await self._store.runs.version_unserved()]
        return Health(
            workers=workers,
            queues=queues,
            unserved=unserved,
            executing=sum(w.executing for w in workers),
            oldest_due=min(due) if due else None,
            unserved_versions=versions,
        )

    # status webhooks ---------------------------------------------------------------------

    async def create_webhook(
        self,
        name: str,
        url: str,
        events: Sequence[str],
        *,
        tasks: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        secret: str | None = None,
    ) -> WebhookSecret:
        """Subscribe ``url`` to run ``events`` (``run.completed``, ...), optionally only for
        some tasks, queues or tags. The secret (given, or made: ``whsec_`` + base64) is
        returned this once. ValueError on a bad value; WebhookExists when the name is taken."""
        spec = SubscriptionSpec(
            check_name(name),
            check_url(url),
            check_events(events),
            check_filter("tasks", tasks),
            check_filter("queues", queues),
            check_filter("tags", tags),
        )
        secret = check_secret(secret) if secret is not None else new_secret()
        if await self._store.webhooks.create(spec, secret) is None:
            raise WebhookExists(f"a webhook named {name!r} exists already")
        return WebhookSecret(name=name, secret=secret)

    async def webhooks(self) -> list[WebhookSubscription]:
        """Every status webhook subscription, by name (without secrets)."""
        return [WebhookSubscription(**s) for s in await self._store.webhooks.subscriptions()]

    async def get_webhook(self, name: str) -> WebhookSubscription:
        """One subscription (WebhookNotFound when there is none of that name)."""
        found = await self._store.webhooks.get(name)
        if found is None:
            raise WebhookNotFound(f"no webhook named {name!r}")
        return WebhookSubscription(**found)

    async def pause_webhook(self, name: str) -> None:
        """Capture no more events for it until resumed (deliveries already queued are not
        sent: they end dead, redeliverable)."""
        if not await self._store.webhooks.pause(name):
            raise WebhookNotFound(f"no webhook named {name!r}")

    async def resume_webhook(self, name: str) -> None:
        """Resume a paused subscription, or enable a disabled one (its failures forgotten)."""
        if not await self._store.webhooks.resume(name):
            raise WebhookNotFound(f"no webhook named {name!r}")

    async def delete_webhook(self, name: str) -> None:
        """Delete it with its deliveries (a config one comes back at the next daemon start
        while its ``[[webhooks]]`` table is there)."""
        if not await self._store.webhooks.delete(name):
            raise WebhookNotFound(f"no webhook named {name!r}")

    async def rotate_webhook_secret(
        self, name: str, *, secret: str | None = None, overlap: Duration = "24h"
    ) -> WebhookSecret:
        """A new secret (given or made) signs from now on; the previous one signs too for
        ``overlap`` (two signatures), while receivers move to the new one."""
        secret = check_secret(secret) if secret is not None else new_secret()
        seconds = to_seconds(overlap)
        if not 0 <= seconds <= 365 * 86_400:
            raise ValueError(f"overlap must be between 0 and a year (got {overlap!r})")
        if not await self._store.webhooks.rotate(name, secret, seconds):
            raise WebhookNotFound(f"no webhook named {name!r}")
        return WebhookSecret(name=name, secret=secret)

    async def webhook_deliveries(
        self,
        *,
        webhook: str | None = None,
        status: str | None = None,
        run_id: uuid.UUID | str | None = None,
        before: uuid.UUID | str | None = None,
        limit: int = 50,
    ) -> list[WebhookDelivery]:
        """Deliveries, newest first: of one subscription, in one status (pending, sending,
        delivered, dead), about one run; ``before``: the page after that delivery id."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise ValueError(f"status must be one of {', '.join(DELIVERY_STATUSES)}")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        rows = await self._store.webhooks.deliveries(
            subscription=webhook,
            status=status,
            run_id=parse_run_id(run_id) if run_id is not None else None,
            before=parse_run_id(before) if before is not None else None,
            limit=limit,
        )
        return [WebhookDelivery(**row) for row in rows]

    async def webhook_delivery(self, delivery_id: uuid.UUID | str) -> WebhookDelivery:
        """One delivery with its body."""
        found = await self._store.webhooks.delivery(parse_run_id(delivery_id))
        if found is None:
            raise WebhookNotFound(f"no webhook delivery {delivery_id}")
        return WebhookDelivery(**found)

    async def redeliver_webhook(self, delivery_id: uuid.UUID | str) -> uuid.UUID:
        """Send a dead (or delivered) delivery again, same ``webhook-id``, by a new run (its
        id returned). ValueError while it is still pending or being sent."""
        was, sender = await self._store.webhooks.redeliver(parse_run_id(delivery_id))
        if was is None:
            raise WebhookNotFound(f"no webhook delivery {delivery_id}")
        if sender is None:
            raise ValueError(f"webhook delivery {delivery_id} is {was}: it is being sent")
        return sender

    async def redeliver_dead_webhooks(self, name: str) -> list[uuid.UUID]:
        """Send every dead delivery of a subscription again; their new runs' ids."""
        await self.get_webhook(name)
        return await self._store.webhooks.redeliver_dead(name)

    async def _payload_limit(self) -> int:
        if self._max_payload_bytes is None:
            value = await self._store.settings.get("max_payload_bytes")
            self._max_payload_bytes = int(value) if value is not None else DEFAULT_MAX_PAYLOAD_BYTES
        return self._max_payload_bytes


def moment_of(
    value: datetime | Duration | None, name: str, now: datetime | None = None
) -> datetime | None:
    """A moment given as a datetime (naive: UTC), an ISO 8601 text (without a timezone: UTC)
    or a duration before ``now`` (``"7d"``, ``"1h30m"``, seconds); ValueError naming ``name``
    for anything else."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            seconds = to_seconds(value)
        except ValueError:
            if not isinstance(value, str):
                raise ValueError(f"{name}: not a time nor a duration: {value!r}") from None
            try:
                moment = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    f"{name}: not a duration (7d, 12h, 30m) nor an ISO 8601 time "
                    f"(2026-11-23T09:00:00Z): {value!r}"
                ) from None
        else:
            if not seconds <= MAX_DELAY_SECONDS:  # also NaN
                raise ValueError(f"{name}: a duration of at most 100 years, not {value!r}")
            return (now or clock.now()) - timedelta(seconds=seconds)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name}: out of range (years 1 to 9999 in UTC): {value!r}") from None


def _check_options(
    tags: Sequence[str],
    max_attempts: int | None,
    run_at: datetime | None,
    delay: Duration | None,
    ttl: Duration | None,
    concurrency_key: str | None = None,
) -> None:
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a string")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    if run_at is not None and run_at.year >= 9000:
        raise ValueError("run_at must be before the year 9000")
    for name, value in (("delay", delay), ("ttl", ttl)):
        if value is not None and to_seconds(value) > MAX_DELAY_SECONDS:
            raise ValueError(f"{name} must be at most 100 years")
    check_concurrency_key(concurrency_key)


def _queue_name(name: str) -> str:
    return check_queue_name(name)


def _catch_up(value: str) -> CatchUp:
    if value not in CATCH_UP_POLICIES:
        raise ValueError(f"catch_up must be one of {CATCH_UP_POLICIES}, not {value!r}")
    return value


def _schedule(row: dict[str, Any]) -> Schedule:
    next_at = None
    if row["active"]:
        try:
            upcoming = upcoming_fire(row["cron"], row["timezone"], clock.now())
        except ValueError:  # a cron that never fires, written before taskd refused them
            upcoming = None
        next_at = upcoming.astimezone(ZoneInfo(row["timezone"])) if upcoming else None
    return Schedule(**row, next_fire_at=next_at)


def _run_error(exc: BaseException) -> Exception:
    """Map taskd.cancel's SQLSTATEs (TD404, TD409) to the client's errors."""
    message = str(exc).removeprefix("taskd.cancel: ")
    code = getattr(exc, "sqlstate", None)
    if code == "TD404":
        return RunNotFound(message)
    if code == "TD409":
        return RunFinished(message)
    return exc if isinstance(exc, Exception) else RuntimeError(message)


def _task_identity(task: str | TaskDefinition[Any, Any]) -> tuple[str, str | None]:
    if isinstance(task, TaskDefinition):
        return task.id, task.queue.name
    if not isinstance(task, str) or not task:
        raise ValueError(f"not a task id: {task!r}")
    return task, None

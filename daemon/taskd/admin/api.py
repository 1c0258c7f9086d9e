"""The admin API: one table of routes, each with its query, body and response models.

The server (server.py) validates every request against its route's models before the handler
runs, and the OpenAPI document (openapi.py) is generated from the same table.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from taskd.admin.fleet_api import FLEET_ROUTES
from taskd.admin.replica_api import REPLICA_ROUTES
from taskd.admin.routing import Handler, RequestInvalid, Route
from taskd.admin.schemas import (
    MAX_BULK_RUNS,
    MAX_CHILDREN,
    MAX_LIST_ITEMS,
    MAX_LLM_CALLS,
    MAX_STEPS,
    BulkPreview,
    BulkPreviewQuery,
    BulkRequest,
    BulkResult,
    CancelResult,
    CostsQuery,
    ErrorBody,
    ErrorGroup,
    ErrorGroupList,
    ErrorsQuery,
    Liveness,
    QueueList,
    QueuePauseResult,
    Readiness,
    ReplayRequest,
    ReplayResult,
    RunCounts,
    RunDetail,
    RunDetailQuery,
    RunFilterQuery,
    RunLink,
    RunListQuery,
    RunPage,
    RunSearchQuery,
    ScheduleCreate,
    ScheduleDeleted,
    ScheduleList,
    ScheduleTriggerResult,
    ScheduleUpdate,
    SessionInfo,
    SessionLogin,
    StatusCounts,
    StreamQuery,
    TaskInfo,
    TaskList,
    TaskSchedule,
    TriggerRequest,
    TriggerResult,
    WorkerList,
)
from taskd.admin.session import (
    COOKIE,
    SESSION_SECONDS,
    bearer_role,
    cookie_role,
    cookie_value,
    role_of_token,
)
from taskd.admin.state import AdminState
from taskd.admin.stats_api import STATS_ROUTES
from taskd.admin.webhook_api import WEBHOOK_ROUTES
from taskd.changes import ChangeKind, RunChange
from taskd.client import moment_of
from taskd.errors import RunNotFound, UnknownTask
from taskd.ids import new_run_ids
from taskd.models import Costs, QueueDepth, RunLogLine, RunStatus, Schedule, WorkerInfo
from taskd.store.llm import CallFilter
from taskd.store.run_scan import parse_search
from taskd.store.runs import RunFilter

if TYPE_CHECKING:
    from taskd.sdk.task import TaskDefinition

# handlers -----------------------------------------------------------------------------------


async def healthz(state: AdminState, request: web.Request, query: Any, body: Any) -> Liveness:
    return Liveness()


async def readyz(state: AdminState, request: web.Request, query: Any, body: Any) -> Readiness:
    readiness = await state.readiness()
    if not readiness.ready:
        raise ReadinessFailed(readiness)
    return readiness


class ReadinessFailed(Exception):
    def __init__(self, readiness: Readiness) -> None:
        super().__init__("not ready")
        self.readiness = readiness


async def metrics(state: AdminState, request: web.Request, query: Any, body: Any) -> web.Response:
    from taskd.admin.metrics import CONTENT_TYPE

    await state.readiness()  # sets taskd_ready: a scrape must not depend on a /readyz call
    if state.replica is not None:
        await state.replica.lag(fresh=True)  # taskd_replica_lag_seconds, _bytes
    text = await state.metrics.render()
    response = web.Response(body=text)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def list_runs(
    state: AdminState, request: web.Request, query: RunListQuery, body: Any
) -> RunPage:
    page = await state.store.run_scan.page(
        _run_filter(query), before=query.cursor, limit=query.limit
    )
    return RunPage(
        runs=page.runs,
        next_cursor=page.next_cursor,
        scanned=page.scanned,
        search_complete=page.complete,
    )


def _run_filter(query: RunFilterQuery) -> RunFilter:
    """The store's filter of a query's (a search: parsed; a bad one is a 400)."""
    search = None
    if isinstance(query, RunSearchQuery) and query.search is not None:
        try:
            search = parse_search(
                query.search, query.search_in or ("payload", "output", "metadata")
            )
        except ValueError as exc:
            raise RequestInvalid(400, str(exc)) from None
    return RunFilter(
        statuses=query.status,
        task_id=query.task,
        tag=query.tag,
        queue=query.queue,
        event=query.event,
        schedule_id=query.schedule,
        created_after=query.created_after,
        created_before=query.created_before,
        concurrency_key=query.key,
        error_group=query.error_group,
        search=search,
        version=query.version,
    )


async def run_counts(
    state: AdminState, request: web.Request, query: RunFilterQuery, body: Any
) -> RunCounts:
    counted = await state.store.run_scan.counts(_run_filter(query))
    return RunCounts(
        counts=StatusCounts(**counted.counts),
        estimated=[RunStatus(s) for s in counted.estimated],
    )


def _bulk_filter(action: str, query: RunSearchQuery) -> RunFilter | None:
    """The runs an action touches: cancel only the unfinished ones (None: no run can match)."""
    f = _run_filter(query)
    if action == "cancel":
        unfinished = [s for s in (f.statuses or list(RunStatus)) if not RunStatus(s).terminal]
        if not unfinished:
            return None
        f = dataclasses.replace(f, statuses=unfinished)
    return f


async def bulk_preview(
    state: AdminState, request: web.Request, query: BulkPreviewQuery, body: Any
) -> BulkPreview:
    f = _bulk_filter(query.action, query)
    if f is None:
        return BulkPreview(action=query.action, matching=0, capped=False)
    matching, capped, estimated = await state.store.run_scan.count_matching(f, MAX_BULK_RUNS)
    return BulkPreview(action=query.action, matching=matching, capped=capped, estimated=estimated)


BULK_BATCH = 500
"""Runs per transaction of a bulk action."""
BULK_COLLECT = 5_000
"""Ids per statement when a bulk action gathers the runs it touches."""


async def bulk_action(
    state: AdminState, request: web.Request, query: Any, body: BulkRequest
) -> BulkResult:
    f = _bulk_filter(body.action, body.filter)
    result = BulkResult(action=body.action, matched=0, done=0, skipped=0, runs=[])
    if f is None:
        return result
    scan = state.store.run_scan
    # Every matching run's id first, exactly (up to the cap): the preview may have estimated
    # from the newest runs, and matches gathered further back must not make the action touch
    # far more runs than its confirmation showed.
    ids: list[uuid.UUID] = []
    cursor: uuid.UUID | None = None
    while len(ids) <= MAX_BULK_RUNS:
        asked = min(BULK_COLLECT, MAX_BULK_RUNS + 1 - len(ids))
        found = await scan.matching_ids(f, before=cursor, limit=asked)
        ids.extend(found)
        if len(found) < asked:
            break
        cursor = found[-1]
    capped = len(ids) > MAX_BULK_RUNS
    result.matched = min(len(ids), MAX_BULK_RUNS)
    if result.matched > body.expected * 1.1 + 10:
        raise RequestInvalid(
            409,
            f"{'over ' if capped else ''}{result.matched} runs match the filter now, "
            f"{body.expected} were confirmed: look at the filter again",
            {"matching": result.matched, "capped": capped},
        )
    for start in range(0, result.matched, BULK_BATCH):
        ids_batch = ids[start : start + BULK_BATCH]
        if body.action == "cancel":
            canceled = await state.store.runs.cancel_many(ids_batch)
            touched = [run_id for run_id, _, _ in canceled]
            for run_id, task_id, status in canceled:
                if status == RunStatus.CANCELED and state.changes.active:
                    state.changes.publish(
                        RunChange(ChangeKind.CANCELED, run_id, task_id, "canceled")
                    )
        else:
            replayed = await state.store.runs.replay_many(ids_batch, new_run_ids(len(ids_batch)))
            touched = [new_id for new_id, _, _ in replayed]
            if state.changes.active:
                for new_id, _, task_id in replayed:
                    state.changes.publish(RunChange(ChangeKind.CREATED, new_id, task_id, "queued"))
        result.done += len(touched)
        result.skipped += len(ids_batch) - len(touched)
        result.runs.extend(touched[: 100 - len(result.runs)])
    return result


async def list_errors(
    state: AdminState, request: web.Request, query: ErrorsQuery, body: Any
) -> ErrorGroupList:
    now = datetime.now(UTC)
    since = moment_of(query.since, "since", now)
    until = moment_of(query.until, "until", now) or now
    assert since is not None
    if since >= until:
        raise RequestInvalid(400, "since must be before until")
    groups = await state.store.error_groups.groups(
        since, until, task_id=query.task, limit=query.limit
    )
    return ErrorGroupList(groups=[ErrorGroup(**g) for g in groups])


async def get_run(
    state: AdminState, request: web.Request, query: RunDetailQuery, body: Any
) -> RunDetail:
    run_id = _run_id(request)
    # one more than shown of each list: is there more?
    run = await state.store.runs.get(run_id, step_limit=MAX_STEPS + 1)
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    steps_truncated = len(run.steps) > MAX_STEPS
    if steps_truncated:
        run = run.model_copy(update={"steps": run.steps[:MAX_STEPS]})
    parent = None
    if run.parent_id is not None:
        parent_run = await state.store.runs.get(run.parent_id, with_attempts=False)
        if parent_run is not None:
            parent = RunLink(id=parent_run.id, task_id=parent_run.task_id, status=parent_run.status)
    children = [
        RunLink(**row) for row in await state.store.runs.children(run_id, limit=MAX_CHILDREN + 1)
    ]
    lines = await state.store.logs.list(run_id=run_id, limit=query.log_limit + 1)
    calls = await state.store.llm.run_calls(run_id, MAX_LLM_CALLS + 1)
    llm_cost = await state.store.llm.costs(None, CallFilter(run_id=run_id), 1)
    return RunDetail(
        run=run,
        steps_truncated=steps_truncated,
        parent=parent,
        children=children[:MAX_CHILDREN],
        children_truncated=len(children) > MAX_CHILDREN,
        logs=[RunLogLine(**line) for line in lines[: query.log_limit]],
        logs_truncated=len(lines) > query.log_limit,
        llm_calls=calls[:MAX_LLM_CALLS],
        llm_calls_truncated=len(calls) > MAX_LLM_CALLS,
        llm_cost=llm_cost.total,
    )


async def cancel_run(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> CancelResult:
    run_id = _run_id(request)
    status = await state.client.cancel(run_id)
    return CancelResult(id=run_id, status=status)


async def replay_run(
    state: AdminState, request: web.Request, query: Any, body: ReplayRequest
) -> ReplayResult:
    run_id = _run_id(request)
    if "payload" not in body.model_fields_set:
        new_id = await state.client.replay(run_id)
        return ReplayResult(id=new_id, replayed_from=run_id)
    run = await state.store.runs.get(run_id, with_attempts=False)
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    definition = state.registry.get(run.task_id) if run.task_id in state.registry else None
    if definition is not None:
        _check_payload(definition, run.task_id, body.payload)
    new_id = await state.client.replay(run_id, payload=body.payload)
    return ReplayResult(id=new_id, replayed_from=run_id)


def _check_payload(definition: TaskDefinition[Any, Any], task_id: str, payload: Any) -> None:
    """422 when ``payload`` does not fit the task's payload model."""
    try:
        definition.parse_payload(payload)
    except ValidationError as exc:
        raise RequestInvalid(
            422,
            f"payload does not fit task {task_id!r}",
            exc.errors(include_url=False, include_context=False),
        ) from None
    except Exception as exc:  # a validator of the task's own that raised something else
        raise RequestInvalid(422, f"payload does not fit task {task_id!r}: {exc}") from None


async def trigger_task(
    state: AdminState, request: web.Request, query: Any, body: TriggerRequest
) -> TriggerResult:
    task_id = request.match_info["id"]
    definition = await _registered(state, task_id)
    payload = body.payload
    if definition is not None:
        _check_payload(definition, task_id, payload)
    try:
        run_id = await state.client.trigger(
            task_id,
            payload,
            delay=body.delay,
            run_at=body.run_at,
            priority=body.priority,
            max_attempts=body.max_attempts,
            retry=body.retry,
            max_duration=body.max_duration,
            tags=body.tags,
            queue=body.queue or (definition.queue.name if definition is not None else None),
            ttl=body.ttl,
            idempotency_key=body.idempotency_key,
            idempotency_ttl=body.idempotency_ttl,
            concurrency_key=body.concurrency_key,
        )
    except ValueError as exc:  # a malformed delay or ttl, a naive run_at
        raise RequestInvalid(422, str(exc)) from None
    return TriggerResult(id=run_id)


async def list_tasks(state: AdminState, request: web.Request, query: Any, body: Any) -> TaskList:
    subscriptions = await state.store.events.subscriptions()
    tasks = []
    for row in await state.store.tasks.list():
        definition = state.registry.get(row["id"]) if row["id"] in state.registry else None
        settings = row["settings"] or {}
        schedule = None
        if definition is not None and definition.schedule is not None:
            spec = definition.schedule
            schedule = TaskSchedule(cron=spec.cron, timezone=spec.timezone, catch_up=spec.catch_up)
        tasks.append(
            TaskInfo(
                id=row["id"],
                queue=row["queue"],
                max_attempts=row["max_attempts"],
                retry=settings.get("retry"),
                max_duration=settings.get("max_duration"),
                schedule=schedule,
                events=sorted(subscriptions.get(row["id"], [])),
                served_here=definition is not None,
                updated_at=row["updated_at"],
                payload_schema=settings.get("payload_schema"),
            )
        )
    return TaskList(tasks=tasks[:MAX_LIST_ITEMS], truncated=len(tasks) > MAX_LIST_ITEMS)


async def list_queues(state: AdminState, request: web.Request, query: Any, body: Any) -> QueueList:
    queues = await state.store.queues.depths()
    return QueueList(
        queues=[QueueDepth(**q) for q in queues[:MAX_LIST_ITEMS]],
        truncated=len(queues) > MAX_LIST_ITEMS,
        llm_backoffs=await state.store.llm.backoff_list(),
    )


async def costs(state: AdminState, request: web.Request, query: CostsQuery, body: Any) -> Costs:
    try:
        return await state.client.costs(
            by=query.by,
            since=query.since,
            until=query.until,
            task=query.task,
            key=query.key,
            tag=query.tag,
            model=query.model,
            run=query.run,
            limit=query.limit,
        )
    except ValueError as exc:  # since after until
        raise RequestInvalid(400, str(exc)) from None


async def pause_queue(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> QueuePauseResult:
    return await _set_paused(state, request.match_info["name"], True)


async def resume_queue(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> QueuePauseResult:
    return await _set_paused(state, request.match_info["name"], False)


async def _set_paused(state: AdminState, name: str, paused: bool) -> QueuePauseResult:
    try:
        await (state.client.pause_queue if paused else state.client.resume_queue)(name)
    except ValueError as exc:  # an empty or oversized name
        raise RequestInvalid(422, str(exc)) from None
    return QueuePauseResult(queue=name, paused=paused)


async def list_schedules(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> ScheduleList:
    schedules = await state.client.list_schedules()
    return ScheduleList(
        schedules=schedules[:MAX_LIST_ITEMS], truncated=len(schedules) > MAX_LIST_ITEMS
    )


async def create_schedule(
    state: AdminState, request: web.Request, query: Any, body: ScheduleCreate
) -> Schedule:
    await _registered(state, body.task_id)
    try:
        return await state.client.create_schedule(
            body.task_id,
            body.cron,
            timezone=body.timezone,
            external_id=body.external_id,
            dedup_key=body.dedup_key,
            payload=body.payload,
            catch_up=body.catch_up,
        )
    except ValueError as exc:  # a bad cron or timezone, a cron that never fires
        raise RequestInvalid(422, str(exc)) from None


async def update_schedule(
    state: AdminState, request: web.Request, query: Any, body: ScheduleUpdate
) -> Schedule:
    schedule_id = request.match_info["id"]
    given = body.model_fields_set
    changes: dict[str, Any] = {
        name: getattr(body, name) for name in ("payload", "external_id") if name in given
    }
    try:
        updated = await state.client.update_schedule(
            schedule_id,
            cron=body.cron,
            timezone=body.timezone,
            catch_up=body.catch_up,
            **changes,
        )
    except ValueError as exc:
        raise RequestInvalid(422, str(exc)) from None
    if body.active is not None and body.active != updated.active:
        client = state.client
        set_active = client.activate_schedule if body.active else client.deactivate_schedule
        updated = await set_active(schedule_id)
    return updated


async def delete_schedule(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> ScheduleDeleted:
    schedule_id = request.match_info["id"]
    await state.client.delete_schedule(schedule_id)
    return ScheduleDeleted(id=schedule_id)


async def trigger_schedule(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> ScheduleTriggerResult:
    schedule_id = request.match_info["id"]
    run_id = await state.client.trigger_schedule(schedule_id)
    return ScheduleTriggerResult(id=run_id, schedule_id=schedule_id)


async def list_workers(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> WorkerList:
    return WorkerList(workers=[WorkerInfo(**w) for w in await state.store.workers.list()])


async def stream(
    state: AdminState, request: web.Request, query: StreamQuery, body: Any
) -> web.StreamResponse:
    from taskd.admin.stream import serve_stream

    return await serve_stream(state, request, query)


async def _registered(state: AdminState, task_id: str) -> TaskDefinition[Any, Any] | None:
    """The task's definition when this daemon serves it, None when only another daemon
    registered it; UnknownTask (404) when none has."""
    definition = state.registry.get(task_id) if task_id in state.registry else None
    if definition is None and task_id not in {row["id"] for row in await state.store.tasks.list()}:
        raise UnknownTask(f"no task with id {task_id!r} is registered")
    return definition


def _run_id(request: web.Request) -> uuid.UUID:
    text = request.match_info["id"]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise RunNotFound(f"no run with id {text!r} (not a run id)") from None


async def get_session(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> SessionInfo:
    settings = state.settings
    if not settings.token:
        return SessionInfo(role="admin", auth_required=False)
    role = (
        bearer_role(settings, request)
        if "Authorization" in request.headers
        else cookie_role(settings, request)
    )
    return SessionInfo(role=role, auth_required=True)


async def login(
    state: AdminState, request: web.Request, query: Any, body: SessionLogin
) -> web.StreamResponse:
    settings = state.settings
    if not settings.token:
        return _session_response(SessionInfo(role="admin", auth_required=False))
    role = role_of_token(settings, body.token)
    if role is None:
        raise RequestInvalid(401, "wrong token")
    response = _session_response(SessionInfo(role=role, auth_required=True))
    response.set_cookie(
        COOKIE,
        cookie_value(settings, role),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(
    state: AdminState, request: web.Request, query: Any, body: Any
) -> web.StreamResponse:
    auth = bool(state.settings.token)
    response = _session_response(SessionInfo(role=None if auth else "admin", auth_required=auth))
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


def _session_response(info: SessionInfo) -> web.Response:
    body = info.__pydantic_serializer__.to_json(info)
    return web.Response(body=body, content_type="application/json")


_NOT_FOUND = {404: "No run with this id"}

ROUTES: list[Route] = [
    Route("GET", "/healthz", healthz, "The process is alive", response=Liveness, public=True),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Database reachable, LISTEN up, reconciliation done",
        response=Readiness,
        errors={503: "Not ready (the body says which check failed)"},
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        content_type="text/plain",
    ),
    Route(
        "GET",
        "/api/runs",
        list_runs,
        "Runs, newest first, filtered; keyset pagination through next_cursor",
        query=RunListQuery,
        response=RunPage,
        errors={400: "A filter is not valid"},
    ),
    Route(
        "GET",
        "/api/runs/counts",
        run_counts,
        "Runs per status matching the filters of /api/runs (estimates where exact counts "
        "would read the history: listed in estimated)",
        query=RunFilterQuery,
        response=RunCounts,
        errors={400: "A filter is not valid"},
    ),
    Route(
        "GET",
        "/api/runs/bulk",
        bulk_preview,
        "How many runs a bulk cancel (the unfinished ones) or replay of the filters would "
        "touch, counted up to 100,000",
        query=BulkPreviewQuery,
        response=BulkPreview,
        errors={400: "A filter is not valid"},
    ),
    Route(
        "POST",
        "/api/runs/bulk",
        bulk_action,
        "Cancel or replay every run matching a filter (at most 100,000), in transactions of "
        "500; runs finished meanwhile are skipped",
        body=BulkRequest,
        response=BulkResult,
        errors={
            400: "The body is not JSON, or the search is not valid",
            409: "More runs match now than the confirmation showed (10% + 10); detail: "
            "{matching, capped}, the exact count",
            422: "The action, filter or expected count is not valid",
        },
    ),
    Route(
        "GET",
        "/api/errors",
        list_errors,
        "Failed attempts grouped by fingerprint (type, message shape, top frame of task "
        "code): counts over 24 buckets, runs, first and last seen, tasks",
        query=ErrorsQuery,
        response=ErrorGroupList,
        errors={400: "A parameter is not valid"},
    ),
    Route(
        "GET",
        "/api/runs/{id}",
        get_run,
        "One run: attempts, error, output, metadata, parent and children, log lines",
        query=RunDetailQuery,
        response=RunDetail,
        errors={400: "A parameter is not valid", **_NOT_FOUND},
    ),
    Route(
        "POST",
        "/api/runs/{id}/cancel",
        cancel_run,
        "Cancel a run (a queued one at once, an executing one through its daemon)",
        response=CancelResult,
        errors={**_NOT_FOUND, 409: "The run has already finished"},
    ),
    Route(
        "POST",
        "/api/runs/{id}/replay",
        replay_run,
        "A new run with the same task, payload and options (or the body's payload)",
        body=ReplayRequest,
        response=ReplayResult,
        status=201,
        errors={
            400: "The body is not JSON",
            **_NOT_FOUND,
            413: "The payload is over [tasks] max_payload_bytes",
            422: "The payload does not fit the task's payload model",
        },
    ),
    Route(
        "POST",
        "/api/tasks/{id}/trigger",
        trigger_task,
        "Create a run of a task (the options of client.trigger)",
        body=TriggerRequest,
        response=TriggerResult,
        status=201,
        errors={
            400: "The body is not JSON",
            404: "No task with this id is registered",
            413: "The payload is over [tasks] max_payload_bytes",
            422: "The options or the payload do not fit (the task's payload model)",
        },
    ),
    Route(
        "GET", "/api/tasks", list_tasks, "Registered tasks and their settings", response=TaskList
    ),
    Route(
        "GET",
        "/api/queues",
        list_queues,
        "Queues over all daemons: depths, runs executing, limits, pause; the LLM models backed off",
        response=QueueList,
    ),
    Route(
        "POST",
        "/api/queues/{name}/pause",
        pause_queue,
        "Stop starting runs of a queue, on every daemon (runs executing finish)",
        response=QueuePauseResult,
        errors={422: "The queue name is empty or over 200 characters"},
    ),
    Route(
        "POST",
        "/api/queues/{name}/resume",
        resume_queue,
        "Start runs of a paused queue again",
        response=QueuePauseResult,
        errors={422: "The queue name is empty or over 200 characters"},
    ),
    Route("GET", "/api/schedules", list_schedules, "Cron schedules", response=ScheduleList),
    Route(
        "POST",
        "/api/schedules",
        create_schedule,
        "Create a cron schedule for a task (with a dedup_key: create or update that schedule)",
        body=ScheduleCreate,
        response=Schedule,
        status=201,
        errors={
            400: "The body is not JSON",
            404: "No task with this id is registered",
            413: "The payload is over [tasks] max_payload_bytes",
            422: "A bad cron, timezone or option, or a cron that never fires",
        },
    ),
    Route(
        "PATCH",
        "/api/schedules/{id}",
        update_schedule,
        "Change a schedule: cron, timezone, catch_up, payload, external_id, active",
        body=ScheduleUpdate,
        response=Schedule,
        errors={
            400: "The body is not JSON",
            404: "No schedule with this id",
            413: "The payload is over [tasks] max_payload_bytes",
            422: "A bad cron, timezone or option, or a cron that never fires",
        },
    ),
    Route(
        "DELETE",
        "/api/schedules/{id}",
        delete_schedule,
        "Delete a schedule (the runs it fired stay)",
        response=ScheduleDeleted,
        errors={404: "No schedule with this id"},
    ),
    Route(
        "POST",
        "/api/schedules/{id}/trigger",
        trigger_schedule,
        "Fire a schedule now (paused or not): a run as a scheduled fire makes, marked manual; "
        "the next scheduled fire is unchanged",
        response=ScheduleTriggerResult,
        status=201,
        errors={404: "No schedule with this id"},
    ),
    Route(
        "GET",
        "/api/costs",
        costs,
        "What LLM calls cost: tokens and dollars per task, tag, key (tenant), model or run, "
        "and in total, over a time range",
        query=CostsQuery,
        response=Costs,
        errors={400: "A parameter is not valid"},
    ),
    Route("GET", "/api/workers", list_workers, "Live workers", response=WorkerList),
    *STATS_ROUTES,  # GET /api/stats: the console's charts (stats_api.py)
    Route(
        "GET",
        "/api/session",
        get_session,
        "The console session's role (null: not logged in)",
        response=SessionInfo,
        public=True,
    ),
    Route(
        "POST",
        "/api/session",
        login,
        "Log in with a token: sets the console's session cookie (HttpOnly, SameSite=Strict)",
        body=SessionLogin,
        response=SessionInfo,
        public=True,
        errors={
            400: "The body is not JSON",
            401: "Wrong token",
            403: "Cross-origin request (CSRF)",
            415: "Not application/json",
            422: "The body is not valid",
        },
    ),
    Route(
        "DELETE",
        "/api/session",
        logout,
        "Log out: clears the session cookie",
        response=SessionInfo,
        public=True,
        errors={403: "Cross-origin request (CSRF)", 415: "Not application/json"},
    ),
    Route(
        "GET",
        "/api/stream",
        stream,
        "Server-sent events of run changes (all runs, ?run=ID or ?task=ID)",
        query=StreamQuery,
        content_type="text/event-stream",
        errors={400: "A parameter is not valid"},
    ),
    *FLEET_ROUTES,
    *WEBHOOK_ROUTES,  # /api/webhooks: status webhooks (webhook_api.py)
    *REPLICA_ROUTES,  # GET /api/replica: the read replica's lag (replica_api.py)
]

__all__ = ["ROUTES", "ErrorBody", "Handler", "ReadinessFailed", "RequestInvalid", "Route"]

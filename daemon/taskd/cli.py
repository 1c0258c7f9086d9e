"""`taskd`: run the daemon, migrate, trigger runs and read them.

Every failure is one line on stderr and a non-zero exit: 2 for bad configuration or usage,
1 for everything else (unknown task, bad id, unreachable database). `taskd run --until-empty`
exits 3 when a run it attempted failed.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from taskd.config import Settings, find_config, load_settings
from taskd.errors import ConfigError, TaskdError, UnknownTask
from taskd.logs import configure_logging
from taskd.models import (
    COST_DIMENSIONS,
    Costs,
    CostSums,
    Event,
    Health,
    LLMBackoff,
    LLMCallRecord,
    QueueDepth,
    Run,
    RunStatus,
    Schedule,
    SchemaStatus,
    WorkerReport,
)

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    return find_config()


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(_config_path(args.config))


def _registry(args: argparse.Namespace, settings: Settings) -> Any:
    """The tasks of the configured modules; with no configuration file, a failed import says
    where one would be looked for."""
    from taskd.sdk.registry import Registry

    try:
        return Registry.from_modules(settings.tasks.modules, settings.tasks.pythonpath)
    except ConfigError as exc:
        if _config_path(args.config) is None:
            raise ConfigError(
                f"{exc} (no taskd.toml here or above, nor ./config.toml: run taskd init in "
                "your project's root)"
            ) from None
        raise


# commands -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, *, dev: bool = False) -> None:
    from taskd.app import run_daemon

    settings = _settings(args)
    if dev:
        settings.database.url = ""
        if settings.log.format == "auto":
            settings.log.format = "text"
    if getattr(args, "queue", None):
        settings.worker.queues = _queue_names(args.queue)
    configure_logging(settings.log.level, settings.log.format)
    # systemd's watchdog kills a blocked daemon with SIGABRT: print every thread's stack first,
    # so the journal shows which task's synchronous code blocked the loop.
    faulthandler.enable()
    registry = _registry(args, settings)
    code = _run_guarded(
        lambda: run_daemon(settings, registry, until_empty=getattr(args, "until_empty", False)),
        settings.database.url or None,
    )
    if code:
        sys.exit(code)


def cmd_init(args: argparse.Namespace) -> None:
    from taskd.scaffold import InitError, next_steps, plan_init, write_init

    try:
        plan = plan_init(Path.cwd(), args.package)
        written = write_init(plan, force=args.force)
    except InitError as exc:
        raise CliError(str(exc), EXIT_USAGE if exc.usage else EXIT_ERROR) from None
    print(next_steps(plan, written), end="")


def _queue_names(names: Sequence[str]) -> list[str]:
    """`--queue` values, checked like a queue's name in code; each once."""
    from taskd.sdk.queues import check_queue_name

    for name in names:
        try:
            check_queue_name(name)
        except ValueError as exc:
            raise CliError(f"--queue {name!r}: {exc}", EXIT_USAGE) from None
    return list(dict.fromkeys(names))


def cmd_migrate(args: argparse.Namespace) -> None:
    from taskd.app import migrate, resolve_direct_dsn

    settings = _settings(args)
    configure_logging("WARNING", "text")
    if args.dry_run or args.sql:
        print(_run_async(lambda: _migrate_preview(args, settings), settings.database.url or None))
        return
    applied = _run_async(
        lambda: migrate(resolve_direct_dsn(settings), settings), settings.database.url or None
    )
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")


async def _migrate_preview(args: argparse.Namespace, settings: Settings) -> str:
    """`taskd migrate --dry-run` / `--sql`: what migrating would run, read without writing."""
    from taskd.app import resolve_dsn
    from taskd.store.database import connect
    from taskd.store.migrations import dry_run_sql, plain_sql, read_plan

    connection = await connect(resolve_dsn(settings), settings.database)
    try:
        plan = await read_plan(connection)
    finally:
        await connection.close()
    if args.sql:
        return plain_sql(plan).rstrip("\n")
    if not plan.pending and plan.adopt is None and plan.recorded is not None:
        return "schema is up to date: nothing to run"
    return (
        "-- taskd migrate --dry-run: nothing was changed; taskd migrate would run this, "
        "under its advisory lock\n\n" + dry_run_sql(plan).rstrip("\n")
    )


def cmd_trigger(args: argparse.Namespace) -> None:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}", EXIT_USAGE) from None
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            raise CliError(
                f"--run-at is not an ISO 8601 time: {args.run_at!r}", EXIT_USAGE
            ) from None
        if run_at.tzinfo is None:
            raise CliError("--run-at needs a timezone, e.g. 2026-01-01T09:00:00+00:00", EXIT_USAGE)
    retry = _retry_option(args.retry)
    if args.max_duration is not None:
        from taskd.sdk.retry import max_duration_seconds

        try:
            max_duration_seconds("--max-duration", args.max_duration)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None

    async def trigger(client: Any) -> Any:
        known = {row["id"] for row in await client._store.tasks.list()}
        if args.task not in known:
            listing = ", ".join(sorted(known)) or "none yet: start a daemon first"
            raise UnknownTask(f"unknown task {args.task!r} (registered: {listing})")
        return await client.trigger(
            args.task,
            payload,
            delay=args.delay,
            run_at=run_at,
            priority=args.priority,
            max_attempts=args.max_attempts,
            retry=retry,
            max_duration=args.max_duration,
            tags=args.tag or (),
            queue=args.queue,
            ttl=args.ttl,
            idempotency_key=args.idempotency_key,
            idempotency_ttl=args.idempotency_ttl,
            concurrency_key=args.concurrency_key,
        )

    print(_with_client(args, trigger))


def _retry_option(text: str | None) -> dict[str, Any] | None:
    """``--retry '{"max_attempts": 5, "min_delay": "1s"}'``, checked before connecting."""
    if text is None:
        return None
    from taskd.sdk.retry import retry_override

    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--retry is not valid JSON: {exc}", EXIT_USAGE) from None
    try:
        retry_override(value)
    except ValueError as exc:
        raise CliError(f"--retry: {exc}", EXIT_USAGE) from None
    result: dict[str, Any] = value
    return result


def cmd_runs_cancel(args: argparse.Namespace) -> None:
    status: RunStatus = _with_client(args, lambda client: client.cancel(args.id))
    if status is RunStatus.CANCELED:
        print("canceled")
    else:
        print("cancel requested: the run is executing; its worker cancels it")


def cmd_tokens_complete(args: argparse.Namespace) -> None:
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--data is not valid JSON: {exc}", EXIT_USAGE) from None
    _with_client(args, lambda client: client.complete_token(args.id, data))
    print("completed")


def cmd_runs_replay(args: argparse.Namespace) -> None:
    print(_with_client(args, lambda client: client.replay(args.id)))


def cmd_events_list(args: argparse.Namespace) -> None:
    events: list[Event] = _with_client(
        args, lambda client: client.list_events(name=args.name, limit=args.limit)
    )
    if args.json:
        print(orjson.dumps([e.model_dump(mode="json") for e in events]).decode())
        return
    _table(
        ("ID", "NAME", "RUNS", "CREATED"),
        [(str(e.id), e.name, str(e.runs), _when(e.created_at)) for e in events],
    )


def cmd_queues_list(args: argparse.Namespace) -> None:
    queues: list[QueueDepth] = _with_client(args, lambda client: client.list_queues())
    if args.json:
        print(orjson.dumps([q.model_dump(mode="json") for q in queues]).decode())
        return
    _table(
        (
            "QUEUE",
            "STATE",
            "DUE",
            "DELAYED",
            "EXECUTING",
            "CONCURRENCY",
            "PER KEY",
            "RATE",
            "LLM LIMITS",
            "LLM BUDGET",
        ),
        [
            (
                q.queue,
                "paused" if q.paused else "active",
                str(q.due),
                str(q.delayed),
                str(q.executing),
                _limit(q.concurrency) + ("*" if q.overridden else ""),
                _limit(q.concurrency_limit_per_key),
                f"{q.rate_limit}/{q.rate_period:g}s" if q.rate_limit and q.rate_period else "-",
                q.llm_rate or "-",
                q.llm_budget or "-",
            )
            for q in queues
        ],
    )
    if any(q.overridden for q in queues):
        print(
            "* limits set by an operator (taskd queues set); taskd queues reset restores the code's"
        )
    _print_llm_backoffs(args)


def _print_llm_backoffs(args: argparse.Namespace) -> None:
    """After the queue table: the models the fleet holds backed off (nothing when none)."""
    backoffs: list[LLMBackoff] = _with_client(args, lambda client: client.llm_backoffs())
    if not backoffs:
        return
    print("\nLLM models backed off (no daemon calls them before UNTIL)")
    _table(
        ("MODEL", "UNTIL", "OVERLOADS", "REASON"),
        [(b.model, _when(b.until), str(b.overloads), b.reason[:80]) for b in backoffs],
    )


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def cmd_queues_pause(args: argparse.Namespace) -> None:
    _with_client(args, lambda client: client.pause_queue(args.name))
    print(f"paused {args.name}: no run of it starts until resumed; runs executing finish")


def cmd_queues_resume(args: argparse.Namespace) -> None:
    _with_client(args, lambda client: client.resume_queue(args.name))
    print(f"resumed {args.name}")


def cmd_queues_set(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    for option, keyword in (
        ("concurrency", "concurrency"),
        ("per_key", "concurrency_limit_per_key"),
    ):
        value = getattr(args, option)
        if value is not None:
            changes[keyword] = _optional_int(value, option.replace("_", "-"))
    if args.rate is not None:
        changes["rate_limit"] = None if args.rate == "none" else args.rate
    if not changes:
        raise CliError("give --concurrency, --per-key or --rate", EXIT_USAGE)
    _with_client(args, lambda client: client.set_queue_limits(args.name, **changes))
    print(f"limits of {args.name} set; daemons apply them from their next claim")


def _optional_int(value: str, option: str) -> int | None:
    if value == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 2**31 - 1:
        raise CliError(
            f"--{option} must be a whole number from 1 to 2147483647, or none", EXIT_USAGE
        )
    return number


def cmd_queues_reset(args: argparse.Namespace) -> None:
    _with_client(args, lambda client: client.reset_queue(args.name))
    print(f"limits of {args.name} are the code's again")


def cmd_schedules_list(args: argparse.Namespace) -> None:
    found: list[Schedule] = _with_client(args, lambda client: client.list_schedules())
    if args.json:
        print(orjson.dumps([s.model_dump(mode="json") for s in found]).decode())
        return
    _table(
        ("ID", "TASK", "CRON", "TIMEZONE", "STATUS", "NEXT (LOCAL)", "NEXT (UTC)", "LAST FIRED"),
        [
            (
                s.id,
                s.task_id,
                s.cron,
                s.timezone,
                "active" if s.active else "paused",
                s.next_fire_at.strftime("%Y-%m-%d %H:%M:%S %Z") if s.next_fire_at else "-",
                s.next_fire_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
                if s.next_fire_at
                else "-",
                _when(s.last_fired_at),
            )
            for s in found
        ],
    )


def cmd_schedules_show(args: argparse.Namespace) -> None:
    found: Schedule = _with_client(args, lambda client: client.get_schedule(args.id))
    if args.json:
        print(orjson.dumps(found.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return
    source = "declared in code" if found.declared else "created through the API"
    for label, value in (
        ("schedule", found.id),
        ("task", found.task_id),
        ("cron", f"{found.cron}   timezone {found.timezone}   catch-up {found.catch_up}"),
        ("status", f"{'active' if found.active else 'paused'} ({source})"),
        ("next", f"{found.next_fire_at.isoformat() if found.next_fire_at else '-'}"),
        ("last", f"{_when(found.last_fired_at)}   run {found.last_run_id or '-'}"),
        ("external", found.external_id or "-"),
        ("dedup key", found.dedup_key or "-"),
    ):
        print(f"{label:<10}{value}")


def cmd_schedules_pause(args: argparse.Namespace, *, active: bool) -> None:
    found: Schedule = _with_client(
        args,
        lambda client: (
            client.activate_schedule(args.id) if active else client.deactivate_schedule(args.id)
        ),
    )
    print(f"{found.id} {'active' if found.active else 'paused'}")


def _json_option(value: str, name: str) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{name} is not valid JSON: {exc}", EXIT_USAGE) from None


def cmd_schedules_create(args: argparse.Namespace) -> None:
    payload = _json_option(args.payload, "--payload") if args.payload is not None else None

    async def create(client: Any) -> Schedule:
        known = {row["id"] for row in await client._store.tasks.list()}
        if args.task not in known:
            listing = ", ".join(sorted(known)) or "none yet: start a daemon first"
            raise UnknownTask(f"unknown task {args.task!r} (registered: {listing})")
        created: Schedule = await client.create_schedule(
            args.task,
            args.cron,
            timezone=args.timezone,
            external_id=args.external_id,
            dedup_key=args.dedup_key,
            payload=payload,
            catch_up=args.catch_up,
        )
        return created

    print(_with_client(args, create).id)


def cmd_schedules_update(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    if args.payload is not None:
        changes["payload"] = _json_option(args.payload, "--payload")
    if args.external_id is not None:
        changes["external_id"] = args.external_id or None  # "" clears it
    found: Schedule = _with_client(
        args,
        lambda client: client.update_schedule(
            args.id, cron=args.cron, timezone=args.timezone, catch_up=args.catch_up, **changes
        ),
    )
    print(f"{found.id} updated: {found.cron} {found.timezone}")


def cmd_schedules_delete(args: argparse.Namespace) -> None:
    _with_client(args, lambda client: client.delete_schedule(args.id))
    print(f"{args.id} deleted")


def cmd_schedules_trigger(args: argparse.Namespace) -> None:
    print(_with_client(args, lambda client: client.trigger_schedule(args.id)))


def cmd_tasks_list(args: argparse.Namespace) -> None:
    """The tasks the configured modules ([tasks] modules) register: read from the code, so no
    database and no daemon are needed."""
    from taskd.sdk.retry import Retry

    settings = _settings(args)
    configure_logging("WARNING", "text")
    # as a daemon runs them: [tasks] retry and max_duration where a task did not set its own
    registry = _registry(args, settings).with_defaults(
        Retry(**settings.tasks.retry.model_dump()), settings.tasks.max_duration or None
    )
    found: list[dict[str, Any]] = []
    for definition in sorted(registry, key=lambda d: d.id):
        retry, spec = definition.retry, definition.schedule
        found.append(
            {
                "id": definition.id,
                "module": getattr(definition.fn, "__module__", None),
                "queue": definition.queue.name,
                "retry": asdict(retry),
                "max_duration": definition.max_duration,
                "schedule": None
                if spec is None
                else {"cron": spec.cron, "timezone": spec.timezone, "catch_up": spec.catch_up},
                "events": list(definition.events),
            }
        )
    if args.json:
        print(orjson.dumps(found).decode())
        return
    _table(
        ("ID", "QUEUE", "RETRY", "MAX DURATION", "SCHEDULE", "EVENTS"),
        [
            (
                t["id"],
                t["queue"],
                "{max_attempts} attempts, {min_delay:g}s-{max_delay:g}s x{factor:g}".format(
                    **t["retry"]
                ),
                f"{t['max_duration']:g}s" if t["max_duration"] is not None else "-",
                f"{t['schedule']['cron']} {t['schedule']['timezone']}" if t["schedule"] else "-",
                ", ".join(t["events"]) or "-",
            )
            for t in found
        ],
    )


def _report_line(report: WorkerReport) -> str:
    """One worker's last report: when, what triggered it, counts, and per task."""
    found = [f"{n} {kind.replace('_', ' ')}" for kind, n in report.counts.items() if n]
    tasks = "; ".join(
        f"{kind.replace('_', ' ')}: " + ", ".join(f"{task} {n}" for task, n in per_task.items())
        for kind, per_task in report.by_task.items()
    )
    return (
        f"{report.trigger} {_when(report.at)}: {', '.join(found) or 'nothing found'}"
        f" ({report.gone_worker_count} gone worker(s))" + (f" [{tasks}]" if tasks else "")
    )


def _code_versions(worker: Any) -> str:
    """The versions of its tasks' code a worker serves (``1.4.0+g3f2a9c1``; ``(latest)`` after
    them when its version_policy is latest); ``-`` for a worker of a taskd without versions."""
    served = sorted({v for v in worker.task_versions or () if v})
    text = ",".join(served) or "-"
    return f"{text} (latest)" if worker.version_policy == "latest" else text


def cmd_status(args: argparse.Namespace) -> None:
    from taskd.store.migrations import schema_status

    async def status(client: Any) -> tuple[SchemaStatus, Health | None]:
        schema = await schema_status(client.pool)
        return schema, None if schema.state == "uninitialised" else await client.health()

    schema: SchemaStatus
    found: Health | None
    schema, found = _with_client(args, status)
    if args.json:
        shown = found.model_dump(mode="json") if found else {}
        shown["schema"] = schema.model_dump(mode="json")
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    if found is None:
        print(_schema_line(schema))
        return
    health = found
    now = datetime.now(UTC)
    print(f"workers: {len(health.workers)} live, {health.executing} run(s) executing")
    if health.workers:
        _table(
            ("WORKER", "HOST", "PID", "VERSION", "CODE", "UP SINCE", "HEARTBEAT", "EXECUTING"),
            [
                (
                    str(w.id),
                    w.host,
                    str(w.pid),
                    w.version,
                    _code_versions(w),
                    _when(w.started_at),
                    f"{(now - w.heartbeat_at).total_seconds():.0f}s ago",
                    f"{w.executing}/{w.concurrency}",
                )
                for w in health.workers
            ],
        )
        reports = [(w.id, w.last_report) for w in health.workers if w.last_report]
        if reports:
            print("\nlast reconciliation report of each worker")
            for worker_id, report in reports:
                print(f"{worker_id}  {_report_line(report)}")
    oldest = f"{(now - health.oldest_due).total_seconds():.1f}s" if health.oldest_due else "none"
    print(f"\nqueues: oldest due run waiting {oldest}")
    if health.queues:
        _table(
            ("QUEUE", "STATE", "DUE", "DELAYED", "EXECUTING", "OLDEST DUE"),
            [
                (
                    q.queue,
                    "paused" if q.paused else "active",
                    str(q.due),
                    str(q.delayed),
                    str(q.executing) + (f"/{q.concurrency}" if q.concurrency else ""),
                    _when(q.oldest_due),
                )
                for q in health.queues
            ],
        )
    if health.unserved:
        print("\nqueued runs of tasks no live worker serves")
        _table(
            ("TASK", "QUEUED", "OLDEST"),
            [(u.task_id, str(u.queued), _when(u.oldest)) for u in health.unserved],
        )
    if health.unserved_versions:
        print("\nqueued runs pinned to a version no live worker serves")
        _table(
            ("TASK", "VERSION", "QUEUED", "OLDEST", "DUE SINCE"),
            [
                (u.task_id, u.version, str(u.queued), _when(u.oldest), _when(u.due_since))
                for u in health.unserved_versions
            ],
        )
    # last, so that `taskd status | head -1` still reads the workers line
    print(f"\n{_schema_line(schema)}")


def _schema_line(schema: SchemaStatus) -> str:
    if schema.state == "uninitialised":
        return "schema: uninitialised: run taskd migrate (a starting daemon migrates too)"
    if schema.state == "ahead":
        return (
            f"schema: ahead: the database has {', '.join(schema.unknown)}, unknown to this "
            "taskd (a newer taskd migrated it): upgrade taskd"
        )
    if schema.state == "behind":
        pending = ", ".join(schema.pending) or "adopting the development migrations"
        return f"schema: behind: pending {pending}: run taskd migrate"
    return f"schema: current ({schema.applied[-1]})"


def cmd_runs_list(args: argparse.Namespace) -> None:
    statuses = [RunStatus(s) for s in args.status] if args.status else None
    runs: list[Run] = _with_read_client(
        args,
        lambda client: client.list_runs(
            status=statuses,
            task=args.task,
            event=args.event,
            schedule=args.schedule,
            tag=args.tag,
            queue=args.queue,
            limit=args.limit,
            version=args.version,
        ),
    )
    if args.json:
        print(
            orjson.dumps([r.model_dump(mode="json", exclude={"attempts"}) for r in runs]).decode()
        )
        return
    rows = [
        (
            str(r.id),
            r.task_id,
            r.status.value.upper(),
            f"{r.attempt}",
            _when(r.created_at),
            _when(r.finished_at),
        )
        for r in runs
    ]
    _table(("ID", "TASK", "STATUS", "ATTEMPT", "CREATED", "FINISHED"), rows)


def _retry_text(retry: dict[str, Any]) -> str:
    """A run's own backoff fields: ``min_delay 1s, max_delay 10s, factor 2, jitter off``."""
    parts = []
    for name in ("min_delay", "max_delay"):
        if name in retry:
            parts.append(f"{name} {retry[name]:g}s")
    if "factor" in retry:
        parts.append(f"factor {retry['factor']:g}")
    if "jitter" in retry:
        parts.append(f"jitter {'on' if retry['jitter'] else 'off'}")
    return ", ".join(parts)


def cmd_runs_show(args: argparse.Namespace) -> None:
    run: Run
    run, llm_calls, llm_cost = _with_read_client(args, _run_with_llm_calls(args.id))
    if args.json:
        print(orjson.dumps(run.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return
    max_attempts = run.max_attempts if run.max_attempts is not None else "? (unknown task)"
    lines = [
        f"run       {run.id}",
        f"task      {run.task_id}   queue {run.queue}   priority {run.priority}",
        f"status    {run.status.value.upper()}   attempt {run.attempt} of {max_attempts}",
        f"created   {_when(run.created_at)}   run at {_when(run.run_at)}",
        f"started   {_when(run.started_at)}   finished {_when(run.finished_at)}",
    ]
    if run.version is not None:
        lines.append(f"version   {run.version}")
    if run.retry:
        lines.append(f"retry     {_retry_text(run.retry)} (the trigger's; the rest: the task's)")
    if run.max_duration is not None:
        lines.append(f"duration  at most {run.max_duration:g}s per attempt (the trigger's)")
    if run.tags:
        lines.append(f"tags      {', '.join(run.tags)}")
    if run.expires_at:
        lines.append(f"expires   {_when(run.expires_at)} (ttl: if not started by then)")
    if run.cancel_requested_at and run.status is RunStatus.EXECUTING:
        lines.append(f"cancel    requested {_when(run.cancel_requested_at)}")
    if run.replayed_from:
        lines.append(f"replays   {run.replayed_from}")
    if run.event_id:
        lines.append(f"event     {run.event_id}")
    lines.append(f"payload   {orjson.dumps(run.payload).decode()}")
    if run.output is not None:
        lines.append(f"output    {orjson.dumps(run.output).decode()}")
    if run.metadata:
        lines.append(f"metadata  {orjson.dumps(run.metadata).decode()}")
    if run.parent_id:
        lines.append(f"parent    {run.parent_id}")
    if run.error:
        lines.append(f"error     {run.error.get('type')}: {run.error.get('message')}")
    print("\n".join(lines))
    if run.steps:
        print("\nsteps")
        _table(
            ("STEP", "STATUS", "TRIES", "RUN ATTEMPT", "DURATION", "RESULT / ERROR"),
            [
                (
                    step.name,
                    step.status,
                    str(step.attempts),
                    str(step.run_attempt),
                    f"{(step.finished_at - step.started_at).total_seconds():.3f}s",
                    (
                        f"{step.error['type']}: {step.error['message']}"
                        if step.error
                        else orjson.dumps(step.result).decode()
                    )[:60],
                )
                for step in run.steps
            ],
        )
    if run.attempts:
        print("\nattempts")
        _table(
            ("#", "OUTCOME", "STARTED", "FINISHED", "DURATION", "ERROR"),
            [
                (
                    str(a.attempt),
                    a.outcome.value,
                    _when(a.started_at),
                    _when(a.finished_at),
                    f"{(a.finished_at - a.started_at).total_seconds():.3f}s",
                    f"{a.error['type']}: {a.error['message']}"[:80] if a.error else "",
                )
                for a in run.attempts
            ],
        )
    _print_run_llm_calls(llm_calls, llm_cost)


MAX_SHOWN_LLM_CALLS = 1000


def _run_with_llm_calls(run_id: str) -> Callable[[Any], Awaitable[Any]]:
    """The run, its LLM calls (at most MAX_SHOWN_LLM_CALLS) and their sums, on one
    connection."""

    async def read(client: Any) -> tuple[Run, list[LLMCallRecord], CostSums]:
        run = await client.get_run(run_id)
        calls = await client.list_llm_calls(run.id, limit=MAX_SHOWN_LLM_CALLS)
        costs: Costs = await client.costs(run=run.id, by=None)
        return run, calls, costs.total

    return read


def _print_run_llm_calls(calls: list[LLMCallRecord], total: CostSums) -> None:
    if not total.calls:
        return
    print("\nLLM calls")
    _table(
        ("STARTED", "STEP", "MODEL", "KIND", "OUTCOME", "INPUT", "OUTPUT", "CACHE W/R", "COST"),
        [
            (
                _when(c.started_at),
                c.step or "-",
                c.model,
                c.kind,
                c.outcome,
                f"{c.input_tokens:,}",
                f"{c.output_tokens:,}",
                f"{c.cache_write_tokens:,}/{c.cache_read_tokens:,}",
                _usd(c.cost_usd, 6) if c.cost_usd is not None else "-",
            )
            for c in calls
        ],
    )
    if total.calls > len(calls):
        print(f"(the first {len(calls)} of {total.calls} calls; the total counts them all)")
    print(f"total     {_usd(total.cost_usd, 6)} over {total.calls} call(s): {_tokens(total)}")
    if total.unpriced_calls:
        print(f"unpriced  {_unpriced(total.unpriced_calls)}")


def _usd(value: Decimal, places: int = 4) -> str:
    """Dollars to ``places`` decimals (at least the cent), rounded half-even."""
    return f"${value.quantize(Decimal(1).scaleb(-places)):,}"


def _tokens(sums: CostSums) -> str:
    return (
        f"{sums.input_tokens:,} input, {sums.output_tokens:,} output, "
        f"{sums.cache_write_tokens:,} cache write, {sums.cache_read_tokens:,} cache read tokens"
    )


def _unpriced(count: int) -> str:
    return (
        f"{count} call(s) of models without a price ([llm] prices): their tokens are counted, "
        "their cost is not"
    )


def cmd_costs(args: argparse.Namespace) -> None:
    by = None if args.by == "none" else args.by
    found: Costs = _with_client(
        args,
        lambda client: client.costs(
            by=by,
            since=args.since,
            until=args.until,
            task=args.task,
            key=args.key,
            tag=args.tag,
            model=args.model,
            run=args.run,
            limit=args.limit,
        ),
    )
    if args.json:
        print(orjson.dumps(found.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return
    since = _when(found.since) if found.since else "the first call"
    until = _when(found.until) if found.until else "now"
    print(f"LLM calls started from {since} to {until}")
    label = {"key": "CONCURRENCY KEY"}.get(by or "", (by or "").upper())
    rows: list[tuple[str, CostSums]] = [
        (r.name if r.name is not None else _no_name(by), r) for r in found.rows
    ]
    if by is not None:
        rows.append(("TOTAL", found.total))
    else:
        rows = [("TOTAL", found.total)]
    _table(
        (label or "", "CALLS", "INPUT", "OUTPUT", "CACHE WRITE", "CACHE READ", "COST (USD)"),
        [
            (
                name,
                f"{s.calls:,}",
                f"{s.input_tokens:,}",
                f"{s.output_tokens:,}",
                f"{s.cache_write_tokens:,}",
                f"{s.cache_read_tokens:,}",
                _usd(s.cost_usd) + (f" +{s.unpriced_calls} unpriced" if s.unpriced_calls else ""),
            )
            for name, s in rows
        ],
    )
    if found.truncated:
        print(f"(the {len(found.rows)} largest groups; TOTAL counts every call: --limit)")
    if by == "tag":
        print("(a call with several tags counts in each of their rows, once in TOTAL)")
    if found.total.unpriced_calls:
        print(_unpriced(found.total.unpriced_calls))


def _no_name(by: str | None) -> str:
    return {"key": "(no key)", "tag": "(no tag)", "run": "(no run)"}.get(by or "", "-")


def cmd_logs(args: argparse.Namespace) -> None:
    from taskd.app import resolve_direct_dsn, resolve_dsn
    from taskd.client import Client
    from taskd.ids import parse_run_id
    from taskd.log_tail import LogTail, levels_from

    settings = _settings(args)
    configure_logging("WARNING", "text")
    levels = levels_from(args.level)
    run_id = parse_run_id(args.run) if args.run else None
    dsn = resolve_dsn(settings)
    emit = _print_log_json if args.json else _print_log_text

    async def follow(client: Client) -> None:
        if run_id is not None:
            await client.get_run(run_id)  # RunNotFound: one line, exit 1
        tail = LogTail(client, run=run_id, task=args.task, levels=levels)
        await tail.backlog(emit, args.lines)
        if args.follow:
            # LISTEN on a session of the primary (a standby and a transaction pooler refuse
            # it): database.direct_url; reads on the client's
            await tail.follow(
                emit,
                resolve_direct_dsn(settings, dsn),
                settings.database,
                until_finished=run_id is not None,
            )

    # on [admin] read_url's replica when set (the primary when it is unreachable)
    _run_async(lambda: _on_replica(settings, follow), settings.database.url or None)


def _print_log_text(line: Any) -> None:
    fields = " ".join(
        f"{key}={value}" for key, value in (line.fields or {}).items() if key != "exc"
    )
    text = (
        f"{_when_ms(line.at)} {line.level.upper():<7} {line.task_id} "
        f"{line.run_id}#{line.attempt}  {line.message}"
    )
    if fields:
        text += f"  {fields}"
    print(text, flush=True)
    if line.fields and "exc" in line.fields:
        print(str(line.fields["exc"]).rstrip(), flush=True)


def _print_log_json(line: Any) -> None:
    print(orjson.dumps(line.model_dump(mode="json")).decode(), flush=True)


def _when_ms(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# helpers --------------------------------------------------------------------------------------


def _run_async(make: Callable[[], Awaitable[Any]], dsn: str | None = None) -> Any:
    async def main() -> Any:
        return await make()

    return _run_guarded(lambda: asyncio.run(main()), dsn)


def _run_guarded(call: Callable[[], Any], dsn: str | None = None) -> Any:
    """Call, turning database and connection failures into one-line CliErrors that say
    which database (``dsn``) could not be reached."""
    try:
        return call()
    except (TaskdError, CliError):
        raise
    except Exception as raised:
        from taskd.store.database import DatabaseError, describe_connection_error

        # A failure inside the daemon's task group arrives wrapped in an exception group.
        exc: BaseException = raised
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if isinstance(exc, TaskdError | CliError):
            raise exc from None
        described = describe_connection_error(exc, dsn)
        if described:
            raise CliError(described) from None
        if isinstance(exc, DatabaseError):
            raise CliError(f"database error: {exc}") from None
        raise


# status webhooks --------------------------------------------------------------------------


def cmd_webhooks_list(args: argparse.Namespace) -> None:
    hooks = _with_client(args, lambda client: client.webhooks())
    if args.json:
        print(orjson.dumps([h.model_dump(mode="json") for h in hooks]).decode())
        return
    _table(
        ("NAME", "STATE", "URL", "EVENTS", "FILTERS", "PENDING", "DEAD", "SOURCE"),
        [
            (
                h.name,
                "disabled" if not h.enabled else "paused" if h.paused else "active",
                h.url,
                ",".join(e.removeprefix("run.") for e in h.events),
                _webhook_filters(h.tasks, h.queues, h.tags),
                str(h.pending),
                str(h.dead),
                h.source,
            )
            for h in hooks
        ],
    )
    for h in hooks:
        if not h.enabled:
            print(f"{h.name} disabled: {h.disabled_reason}")


def cmd_webhooks_add(args: argparse.Namespace) -> None:
    created = _with_client(
        args,
        lambda client: client.create_webhook(
            args.name,
            args.url,
            _csv(args.events),
            tasks=_csv(args.tasks) if args.tasks else None,
            queues=_csv(args.queues) if args.queues else None,
            tags=_csv(args.tags) if args.tags else None,
        ),
    )
    print(f"created webhook {created.name}; its secret (shown once): {created.secret}")


def cmd_webhooks_toggle(args: argparse.Namespace, *, verb: str) -> None:
    def act(client: Any) -> Awaitable[None]:
        calls = {
            "pause": client.pause_webhook,
            "resume": client.resume_webhook,
            "delete": client.delete_webhook,
        }
        result: Awaitable[None] = calls[verb](args.name)
        return result

    _with_client(args, act)
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[verb]
    print(f"{done} webhook {args.name}")


def cmd_webhooks_rotate(args: argparse.Namespace) -> None:
    rotated = _with_client(
        args, lambda client: client.rotate_webhook_secret(args.name, overlap=args.overlap)
    )
    print(
        f"rotated webhook {rotated.name}; its new secret (shown once): {rotated.secret} "
        f"(the previous one signs too for {args.overlap})"
    )


def cmd_webhooks_deliveries(args: argparse.Namespace) -> None:
    found = _with_client(
        args,
        lambda client: client.webhook_deliveries(
            webhook=args.name, status=args.status, run_id=args.run, limit=args.limit
        ),
    )
    if args.json:
        print(orjson.dumps([d.model_dump(mode="json") for d in found]).decode())
        return
    _table(
        ("ID", "WEBHOOK", "EVENT", "RUN", "STATUS", "TRIES", "LAST", "SENDER RUN", "CREATED"),
        [
            (
                str(d.id),
                d.subscription,
                d.event,
                str(d.run_id),
                d.status,
                str(d.attempts),
                (str(d.last_status) if d.last_status else (d.last_error or "-"))[:40],
                str(d.delivery_run_id or "-"),
                _when(d.created_at),
            )
            for d in found
        ],
    )


def cmd_webhooks_redeliver(args: argparse.Namespace) -> None:
    if args.all_dead:
        runs = _with_client(args, lambda client: client.redeliver_dead_webhooks(args.target))
        print(f"redelivering {len(runs)} dead deliveries of webhook {args.target}")
        return
    run_id = _with_client(args, lambda client: client.redeliver_webhook(args.target))
    print(f"redelivering {args.target}: run {run_id}")


def _webhook_filters(*filters: list[str] | None) -> str:
    labels = ("tasks", "queues", "tags")
    shown = [f"{k}={','.join(v)}" for k, v in zip(labels, filters, strict=True) if v]
    return " ".join(shown) or "-"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _with_client(args: argparse.Namespace, use: Callable[[Any], Awaitable[Any]]) -> Any:
    from taskd.app import resolve_dsn
    from taskd.client import Client

    settings = _settings(args)
    configure_logging("WARNING", "text")

    async def main() -> Any:
        async with Client.connect(resolve_dsn(settings), settings.database) as client:
            return await use(client)

    return _run_async(main, settings.database.url or None)


def _with_read_client(args: argparse.Namespace, use: Callable[[Any], Awaitable[Any]]) -> Any:
    """``use(client)`` on [admin] read_url's replica when it is set (`taskd runs`, `taskd
    logs`): on the primary when the replica cannot be reached (one line on stderr) or does
    not know the run yet."""
    settings = _settings(args)
    configure_logging("WARNING", "text")
    return _run_async(lambda: _on_replica(settings, use), settings.database.url or None)


async def _on_replica(settings: Settings, use: Callable[[Any], Awaitable[Any]]) -> Any:
    from taskd.app import resolve_dsn
    from taskd.client import Client
    from taskd.errors import RunNotFound
    from taskd.store.database import dsn_location
    from taskd.store.replica import unreachable

    read_url = settings.admin.read_url
    if read_url:
        try:
            async with Client.connect(read_url, settings.database) as client:
                return await use(client)
        except RunNotFound:
            pass  # not replayed yet (or nowhere): the primary decides
        except Exception as exc:
            if not unreachable(exc):
                raise
            print(
                f"taskd: the replica at {dsn_location(read_url)} is unreachable "
                f"({type(exc).__name__}: {str(exc).strip() or 'no answer'}): "
                "reading from the primary",
                file=sys.stderr,
            )
    async with Client.connect(resolve_dsn(settings), settings.database) as client:
        return await use(client)


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    for line in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskd", description="Durable background tasks on PostgreSQL."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help="config file (default: $TASKD_CONFIG, else the nearest taskd.toml from here up, "
        "else ./config.toml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    daemon_options = argparse.ArgumentParser(add_help=False)
    daemon_options.add_argument(
        "--until-empty",
        action="store_true",
        help="burst mode: run what is due now, then exit (0; 3 if a run failed); delayed and "
        "waiting runs are left for later",
    )
    daemon_options.add_argument(
        "--queue",
        action="append",
        metavar="NAME",
        help="claim only from this queue (repeatable; replaces [worker] queues)",
    )
    commands.add_parser(
        "run", parents=[common, daemon_options], help="run the daemon in the foreground"
    ).set_defaults(handler=cmd_run)
    commands.add_parser(
        "dev",
        parents=[common, daemon_options],
        help="run the daemon on the embedded PostgreSQL (no setup)",
    ).set_defaults(handler=lambda a: cmd_run(a, dev=True))
    migrating = commands.add_parser("migrate", parents=[common], help="apply schema migrations")
    previews = migrating.add_mutually_exclusive_group()
    previews.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL of the pending migrations, a header line each; change nothing",
    )
    previews.add_argument(
        "--sql",
        action="store_true",
        help="print the pending migrations as one plain SQL script for your own migration "
        "tool (it records them in taskd.migrations); change nothing",
    )
    migrating.set_defaults(handler=cmd_migrate)
    init = commands.add_parser(
        "init",
        help="start in an existing project: write its taskd.toml and a sample task module",
        description="Run in your project's root: writes taskd.toml (the embedded PostgreSQL "
        "under .taskd/ for `taskd dev`; your task modules) and a sample task module in your "
        "package (src/<pkg>/ or <pkg>/; none: tasks/), and adds .taskd/ to .gitignore. "
        "Existing files are not overwritten unless --force.",
    )
    init.add_argument("--package", help="the package the task module goes in (default: found)")
    init.add_argument("--force", action="store_true", help="replace files that exist")
    init.set_defaults(handler=cmd_init)

    trigger = commands.add_parser("trigger", parents=[common], help="create a run; prints its id")
    trigger.add_argument("task", help="task id")
    trigger.add_argument("--payload", default="{}", help="JSON payload (default {})")
    trigger.add_argument("--delay", help="start after this long: 10s, 5m, 1h")
    trigger.add_argument("--run-at", help="start at this ISO 8601 time (with timezone)")
    trigger.add_argument("--priority", type=int, default=0, help="higher starts first")
    trigger.add_argument("--max-attempts", type=int, help="override the task's retry attempts")
    trigger.add_argument(
        "--retry",
        help='override the task\'s retry: JSON, e.g. \'{"max_attempts": 5, "min_delay": "1s"}\'',
    )
    trigger.add_argument("--max-duration", help="override the task's max_duration: 30s, 5m")
    trigger.add_argument("--tag", action="append", help="tag the run (repeatable)")
    trigger.add_argument("--queue", help="override the task's queue")
    trigger.add_argument("--ttl", help="expire the run if it has not started within this: 1h")
    trigger.add_argument(
        "--idempotency-key",
        help="a second trigger of the task with this key (within --idempotency-ttl) creates "
        "nothing and prints the first run's id",
    )
    trigger.add_argument("--idempotency-ttl", default="24h", help="how long the key holds (24h)")
    trigger.add_argument(
        "--concurrency-key",
        help="runs with one key share their queue's per-key limit (e.g. one at a time per user)",
    )
    trigger.set_defaults(handler=cmd_trigger)

    runs = commands.add_parser("runs", help="list and inspect runs").add_subparsers(
        dest="runs_command", required=True, metavar="COMMAND"
    )
    listing = runs.add_parser("list", parents=[common], help="runs, newest first")
    listing.add_argument(
        "--status", action="append", choices=[s.value for s in RunStatus], help="repeatable"
    )
    listing.add_argument("--task", help="runs of this task id")
    listing.add_argument("--event", help="runs created by events of this name")
    listing.add_argument("--schedule", help="runs fired by this schedule")
    listing.add_argument("--tag", help="runs carrying this tag")
    listing.add_argument("--queue", help="runs in this queue")
    listing.add_argument(
        "--version", dest="version", help="runs started by this version of their task's code"
    )
    listing.add_argument("--limit", type=int, default=50, help="most runs printed")
    listing.add_argument("--json", action="store_true", help="one JSON array of runs")
    listing.set_defaults(handler=cmd_runs_list)
    show = runs.add_parser("show", parents=[common], help="one run with its attempts")
    show.add_argument("id", help="run id")
    show.add_argument("--json", action="store_true", help="the run as JSON")
    show.set_defaults(handler=cmd_runs_show)
    cancel = runs.add_parser("cancel", parents=[common], help="cancel a queued or running run")
    cancel.add_argument("id", help="run id")
    cancel.set_defaults(handler=cmd_runs_cancel)
    replay = runs.add_parser("replay", parents=[common], help="run again with the same payload")
    replay.add_argument("id", help="run id")
    replay.set_defaults(handler=cmd_runs_replay)

    scheduling = commands.add_parser("schedules", help="cron schedules").add_subparsers(
        dest="schedules_command", required=True, metavar="COMMAND"
    )
    schedule_listing = scheduling.add_parser("list", parents=[common], help="every schedule")
    schedule_listing.add_argument("--json", action="store_true", help="one JSON array")
    schedule_listing.set_defaults(handler=cmd_schedules_list)
    schedule_show = scheduling.add_parser("show", parents=[common], help="one schedule")
    schedule_show.add_argument("id", help="schedule id")
    schedule_show.add_argument("--json", action="store_true", help="the schedule as JSON")
    schedule_show.set_defaults(handler=cmd_schedules_show)
    for name, active in (("pause", False), ("resume", True)):
        toggle = scheduling.add_parser(name, parents=[common], help=f"{name} a schedule")
        toggle.add_argument("id", help="schedule id")
        toggle.set_defaults(handler=lambda a, active=active: cmd_schedules_pause(a, active=active))
    schedule_trigger = scheduling.add_parser(
        "trigger", parents=[common], help="fire a schedule now; prints the run id"
    )
    schedule_trigger.add_argument("id", help="schedule id")
    schedule_trigger.set_defaults(handler=cmd_schedules_trigger)
    schedule_create = scheduling.add_parser(
        "create", parents=[common], help="create a cron schedule; prints its id"
    )
    schedule_create.add_argument("task", help="task id")
    schedule_create.add_argument("cron", help="5 fields, 6 with seconds first, or @daily...")
    schedule_create.add_argument("--timezone", default="UTC", help="an IANA name (UTC)")
    schedule_create.add_argument("--payload", help="JSON every run it fires gets")
    schedule_create.add_argument("--external-id", help="your own reference (a user id...)")
    schedule_create.add_argument("--dedup-key", help="creating again with it updates instead")
    schedule_create.add_argument(
        "--catch-up",
        default="latest",
        choices=("latest", "all", "none"),
        help="fire times missed by over 60 s: one run, one each (up to 100), or none",
    )
    schedule_create.set_defaults(handler=cmd_schedules_create)
    schedule_update = scheduling.add_parser("update", parents=[common], help="change a schedule")
    schedule_update.add_argument("id", help="schedule id")
    schedule_update.add_argument("--cron", help="a new cron expression")
    schedule_update.add_argument("--timezone", help="a new IANA timezone")
    schedule_update.add_argument("--payload", help="JSON (null clears it)")
    schedule_update.add_argument("--external-id", help='"" clears it')
    schedule_update.add_argument(
        "--catch-up", choices=("latest", "all", "none"), help="a new catch-up policy"
    )
    schedule_update.set_defaults(handler=cmd_schedules_update)
    schedule_delete = scheduling.add_parser("delete", parents=[common], help="delete a schedule")
    schedule_delete.add_argument("id", help="schedule id")
    schedule_delete.set_defaults(handler=cmd_schedules_delete)

    task_commands = commands.add_parser("tasks", help="the tasks in the code").add_subparsers(
        dest="tasks_command", required=True, metavar="COMMAND"
    )
    task_listing = task_commands.add_parser(
        "list", parents=[common], help="tasks the configured modules register (no database)"
    )
    task_listing.add_argument("--json", action="store_true", help="one JSON array of tasks")
    task_listing.set_defaults(handler=cmd_tasks_list)

    queueing = commands.add_parser("queues", help="queues: limits and pause").add_subparsers(
        dest="queues_command", required=True, metavar="COMMAND"
    )
    queue_listing = queueing.add_parser(
        "list", parents=[common], help="every queue: depths, runs executing, limits"
    )
    queue_listing.add_argument("--json", action="store_true", help="one JSON array")
    queue_listing.set_defaults(handler=cmd_queues_list)
    for verb, handler, text in (
        ("pause", cmd_queues_pause, "stop starting runs of a queue (on every daemon)"),
        ("resume", cmd_queues_resume, "start runs of a paused queue again"),
        ("reset", cmd_queues_reset, "back to the limits the code declares"),
    ):
        command = queueing.add_parser(verb, parents=[common], help=text)
        command.add_argument("name", help="queue name")
        command.set_defaults(handler=handler)
    setting = queueing.add_parser(
        "set", parents=[common], help="change a queue's limits at run time (every daemon)"
    )
    setting.add_argument("name", help="queue name")
    setting.add_argument("--concurrency", help="runs executing at once, or none")
    setting.add_argument("--per-key", help="runs of one concurrency key at once, or none")
    setting.add_argument("--rate", help="starts per period, e.g. 50/1m, 20/1s, or none")
    setting.set_defaults(handler=cmd_queues_set)

    webhooks = commands.add_parser(
        "webhooks", help="status webhooks: run events POSTed, signed, to a URL"
    ).add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")
    hook_listing = webhooks.add_parser("list", parents=[common], help="every subscription")
    hook_listing.add_argument("--json", action="store_true", help="one JSON array")
    hook_listing.set_defaults(handler=cmd_webhooks_list)
    hook_add = webhooks.add_parser(
        "add", parents=[common], help="subscribe a URL to run events; prints its secret once"
    )
    hook_add.add_argument("name", help="its name")
    hook_add.add_argument("url", help="where events are POSTed")
    hook_add.add_argument(
        "--events", required=True, help="comma-separated, e.g. run.completed,run.failed"
    )
    hook_add.add_argument("--tasks", help="only runs of these tasks (comma-separated)")
    hook_add.add_argument("--queues", help="only runs in these queues (comma-separated)")
    hook_add.add_argument("--tags", help="only runs with one of these tags (comma-separated)")
    hook_add.set_defaults(handler=cmd_webhooks_add)
    for verb, text in (
        ("pause", "capture no events for it until resumed"),
        ("resume", "resume a paused one, or enable a disabled one"),
        ("delete", "delete it and its deliveries"),
    ):
        hook_toggle = webhooks.add_parser(verb, parents=[common], help=text)
        hook_toggle.add_argument("name", help="webhook name")
        hook_toggle.set_defaults(handler=lambda a, verb=verb: cmd_webhooks_toggle(a, verb=verb))
    hook_rotate = webhooks.add_parser(
        "rotate", parents=[common], help="a new secret; the previous one signs too for a while"
    )
    hook_rotate.add_argument("name", help="webhook name")
    hook_rotate.add_argument(
        "--overlap", default="24h", help="how long the previous secret signs too (default 24h)"
    )
    hook_rotate.set_defaults(handler=cmd_webhooks_rotate)
    hook_deliveries = webhooks.add_parser(
        "deliveries", parents=[common], help="deliveries, newest first (dead: the dead letter)"
    )
    hook_deliveries.add_argument("name", nargs="?", help="of this webhook only")
    hook_deliveries.add_argument(
        "--status", choices=["pending", "sending", "delivered", "dead"], help="only these"
    )
    hook_deliveries.add_argument("--run", help="only the events of this run")
    hook_deliveries.add_argument("--limit", type=int, default=50, help="at most (default 50)")
    hook_deliveries.add_argument("--json", action="store_true", help="one JSON array")
    hook_deliveries.set_defaults(handler=cmd_webhooks_deliveries)
    hook_redeliver = webhooks.add_parser(
        "redeliver", parents=[common], help="send a delivery again (same webhook-id)"
    )
    hook_redeliver.add_argument("target", help="a delivery id (or a webhook name with --all-dead)")
    hook_redeliver.add_argument(
        "--all-dead", action="store_true", help="every dead delivery of the webhook TARGET"
    )
    hook_redeliver.set_defaults(handler=cmd_webhooks_redeliver)

    tokens = commands.add_parser("tokens", help="wait tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="COMMAND"
    )
    complete = tokens.add_parser(
        "complete", parents=[common], help="complete a wait token: its run resumes with the data"
    )
    complete.add_argument("id", help="wait token id")
    complete.add_argument("--data", default="null", help="JSON handed to the run (default null)")
    complete.set_defaults(handler=cmd_tokens_complete)

    events = commands.add_parser("events", help="recorded events").add_subparsers(
        dest="events_command", required=True, metavar="COMMAND"
    )
    event_listing = events.add_parser("list", parents=[common], help="events, newest first")
    event_listing.add_argument("--name", help="events of this name")
    event_listing.add_argument("--limit", type=int, default=50, help="most events printed")
    event_listing.add_argument("--json", action="store_true", help="one JSON array")
    event_listing.set_defaults(handler=cmd_events_list)

    logs = commands.add_parser(
        "logs",
        parents=[common],
        help="stored ctx.log lines of runs; -f follows new ones",
        description="Print the lines tasks logged through ctx.log (stored with their runs). "
        "With --run: that run's lines; otherwise the newest --lines. -f keeps printing new "
        "lines as any daemon stores them (with --run, until that run has finished).",
    )
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--run", help="one run's lines")
    logs.add_argument("--task", help="lines of this task's runs")
    logs.add_argument("--level", help="least level shown: debug, info, warning, error")
    logs.add_argument(
        "--lines",
        type=int,
        help="print this many of the newest lines first (default 100; --run: all)",
    )
    logs.add_argument("--json", action="store_true", help="one JSON object per line")
    logs.set_defaults(handler=cmd_logs)

    costing = commands.add_parser(
        "costs",
        parents=[common],
        help="what LLM calls cost: tokens and dollars per task, tag, key or model",
        description="Sum the LLM calls made through ctx.llm (taskd.llm_calls) per task, tag, "
        "concurrency key (the tenant), model or run, over a time range, with a TOTAL line. "
        "Dollars are the [llm] prices in force when each call was recorded; calls of models "
        "without a price are counted apart (their tokens are summed, their cost is not).",
    )
    costing.add_argument(
        "--by",
        default="task",
        choices=[*COST_DIMENSIONS, "none"],
        help="sum per this (default task; key: the concurrency key; none: the total only)",
    )
    costing.add_argument(
        "--since",
        help="calls started since: a duration before now (7d, 12h) or an ISO 8601 time "
        "(without a timezone: UTC)",
    )
    costing.add_argument("--until", help="calls started before: a duration before now or a time")
    costing.add_argument("--task", help="only the calls of this task id")
    costing.add_argument("--key", help="only the calls of runs with this concurrency key")
    costing.add_argument("--tag", help="only the calls of runs carrying this tag")
    costing.add_argument("--model", help="only the calls of this model id")
    costing.add_argument("--run", help="only the calls of this run")
    costing.add_argument(
        "--limit", type=int, default=1000, help="most rows printed (TOTAL counts every call)"
    )
    costing.add_argument("--json", action="store_true", help="one JSON object (exact dollars)")
    costing.set_defaults(handler=cmd_costs)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="the schema's state, workers, queue depths, the oldest waiting run",
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    except CliError as exc:
        _fail(str(exc), exc.code)
    except (TaskdError, ValueError) as exc:
        _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `taskd runs list | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


def _fail(message: str, code: int) -> None:
    print(f"taskd: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()

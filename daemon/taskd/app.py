"""Wiring: builds the daemon's parts from Settings and runs them in one anyio task group."""

from __future__ import annotations

import logging
import signal
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from taskd.changes import ChangeHub
from taskd.client import Client
from taskd.config import Settings
from taskd.embedded import embedded_dsn
from taskd.errors import MigrationError, TaskdError
from taskd.health import counters, readiness, status_line
from taskd.logs import log_event
from taskd.sdk.current import set_current_client
from taskd.sdk.registry import Registry
from taskd.sdk.retry import Retry
from taskd.store.database import DB_ERRORS, create_pool, create_worker_pool
from taskd.store.migrations import apply_migrations, read_plan, status_of
from taskd.store.pooler import check_pool_statements, connect_session
from taskd.store.store import Store
from taskd.systemd import SystemdNotifier
from taskd.telemetry import LateTelemetry, Telemetry
from taskd.webhook_delivery import WebhookSender, sync_config_webhooks
from taskd.worker.burst import Burst
from taskd.worker.change_feed import ChangeFeed
from taskd.worker.claimer import Claimer
from taskd.worker.completer import Completer
from taskd.worker.event_relay import EventRelay
from taskd.worker.expirer import Expirer
from taskd.worker.failure_hooks import FailureHooks
from taskd.worker.findings import Findings
from taskd.worker.heartbeat import Heartbeat
from taskd.worker.in_flight import InFlight
from taskd.worker.listener import CANCEL_CHANNEL, NUDGE_CHANNEL, Listener
from taskd.worker.llm_batch_poller import LLMBatchPoller
from taskd.worker.llm_call_writer import LLMCallWriter
from taskd.worker.lock import WorkerLock, new_lock_key
from taskd.worker.log_writer import RunLogWriter
from taskd.worker.pruner import Pruner
from taskd.worker.queue_sampler import QueueSampler
from taskd.worker.reconciler import Reconciler
from taskd.worker.registrar import (
    publish_registry,
    register_worker,
    retire_undeclared_schedules,
)
from taskd.worker.rescuer import Rescuer
from taskd.worker.run_services import WorkerRunServices
from taskd.worker.scheduler import SCHEDULES_CHANNEL, Scheduler
from taskd.worker.subscription_retirer import SubscriptionRetirer
from taskd.worker.sweeper import Sweeper
from taskd.worker.unknown_task_failer import UnknownTaskFailer
from taskd.worker.version_failer import VersionFailer
from taskd.worker.versions import (
    deployment_version,
    task_versions,
    taskd_package_version,
    with_versions,
)
from taskd.worker.waker import Waker

if TYPE_CHECKING:
    from asyncpg import Pool

    from taskd.admin.listen import AdminListener
    from taskd.admin.metrics import Metrics
    from taskd.admin.read_replica import ReadReplica
    from taskd.admin.server import AdminServer
    from taskd.hooks.server import HooksServer

log = logging.getLogger("taskd.daemon")

ADMIN_POOL_SIZE = 3
ADMIN_STATEMENT_TIMEOUT = 10.0  # seconds; a longer admin query answers 503
HOOKS_POOL_SIZE = 2  # the webhook listener's own connections: a flood never takes the worker's
HOOKS_STATEMENT_TIMEOUT = 10.0  # seconds; a longer webhook transaction answers 503
EXIT_RUNS_FAILED = 3  # burst mode: a run it attempted failed (or is left to retry)


class AdminStartFailed(TaskdError):
    """The admin endpoint could not be built or served once the claims had begun: the daemon
    drained (as on SIGTERM), then exits with this one line."""


async def flush_run_rows(log_writer: RunLogWriter, llm_writer: LLMCallWriter) -> bool:
    """Store the buffered LLM call records, then the log lines (before outcomes and hand-backs
    are written: a run seen finished, or resumed elsewhere, has its calls' costs stored, which
    its budget counts). The calls first: the completer bounds the whole flush, and a backlog of
    log lines must not keep the costs out."""
    calls = await llm_writer.flush(only_current=True)
    lines = await log_writer.flush(only_current=True)
    return lines and calls


def taskd_version() -> str:
    return taskd_package_version()  # read once (each read searches sys.path)


def resolve_dsn(settings: Settings) -> str:
    """The configured database, or the embedded server when the url is empty."""
    return settings.database.url or embedded_dsn(settings.database.data_dir)


def resolve_direct_dsn(settings: Settings, dsn: str | None = None) -> str:
    """The session connections' database (``database.direct_url``), else ``dsn`` (else the
    configured database): LISTEN, the worker lock, the event relay, the migrations' lock."""
    return settings.database.direct_url or dsn or resolve_dsn(settings)


async def migrate(dsn: str, settings: Settings) -> list[str]:
    """Apply the pending migrations on ``dsn``, a session (under its advisory lock): a
    transaction pooler is refused with a one-line ConfigError naming database.direct_url."""
    connection = await connect_session(dsn, settings.database)
    try:
        applied = await apply_migrations(connection)
    finally:
        await connection.close()
    return [f"{m.version:04d}_{m.name}" for m in applied]


async def prepare_schema(dsn: str, settings: Settings) -> None:
    """A starting daemon's schema: migrated (``database.migrate``, the default), or checked to
    be current; MigrationError (one line, says what to do) otherwise."""
    if settings.database.migrate:
        await migrate(dsn, settings)
        return
    connection = await connect_session(dsn, settings.database)
    try:
        status = status_of(await read_plan(connection))  # ahead: MigrationError
    finally:
        await connection.close()
    if status.state != "current":
        pending = ", ".join(status.pending) or "adopting the development migrations"
        raise MigrationError(
            f"the database's taskd schema is {status.state} (pending: {pending}) and "
            "database.migrate is false, so this daemon does not migrate it: apply them first "
            "(taskd migrate, or taskd migrate --sql with your own migration tool)"
        )


class Daemon:
    """One taskd process: builds its parts (one per chore) and runs them in one task group;
    drains on SIGTERM/SIGINT."""

    def __init__(
        self, settings: Settings, registry: Registry, dsn: str, *, until_empty: bool = False
    ) -> None:
        self.settings = settings
        # the tasks as this daemon runs them: [tasks] retry and max_duration where a task did
        # not set its own
        self.registry = registry.with_defaults(
            Retry(**settings.tasks.retry.model_dump()), settings.tasks.max_duration or None
        )
        # and each task's version: its @task(version=...), else the deployment's
        self.version = deployment_version(settings)
        self.registry = with_versions(self.registry, self.version)
        self.dsn = dsn
        # the session connections (LISTEN, locks): database.direct_url, else the pools' dsn
        self.direct_dsn = resolve_direct_dsn(settings, dsn)
        self.until_empty = until_empty  # burst mode: exit once nothing due is left
        self.burst: Burst | None = None
        self.worker_id = uuid.uuid4()
        # the run's path: claimer -> in_flight (executor) -> completer
        self.claimer: Claimer | None = None
        self.in_flight: InFlight | None = None
        self.completer: Completer | None = None
        self.heartbeat: Heartbeat | None = None
        self.listener: Listener | None = None
        self.lock: WorkerLock | None = None
        # maintenance chores, for the whole fleet
        self.reconciler: Reconciler | None = None
        self.rescuer: Rescuer | None = None
        self.waker: Waker | None = None
        self.expirer: Expirer | None = None
        self.unknown_task_failer: UnknownTaskFailer | None = None
        self.version_failer: VersionFailer | None = None
        self.subscription_retirer: SubscriptionRetirer | None = None
        self.failure_hooks: FailureHooks | None = None
        self.pruner: Pruner | None = None
        self.queue_sampler: QueueSampler | None = None
        self.llm_batch_poller: LLMBatchPoller | None = None
        self.sweeper: Sweeper | None = None
        self.event_relay: EventRelay | None = None
        self.scheduler: Scheduler | None = None
        self.stopping = False
        self._stop_begun: anyio.Event | None = None  # set by stop(); made in run(), on the loop
        self.admin_failure: TaskdError | None = None  # why the admin endpoint did not start
        self.declared_gone = False
        self.reconciled = False
        self.notifier = SystemdNotifier.from_environment()
        self.changes = ChangeHub()
        self.change_feed: ChangeFeed | None = None
        self.metrics: Metrics | None = None
        self.admin: AdminServer | None = None
        self.read_replica: ReadReplica | None = None  # [admin] read_url's
        self.hooks: HooksServer | None = None
        self.log_writer: RunLogWriter | None = None
        self.llm_writer: LLMCallWriter | None = None
        self.services: WorkerRunServices | None = None

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[Daemon] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        settings = self.settings
        for webhook in settings.webhooks:  # a secret_env not set stops start-up at once
            webhook.resolved_secret()
        await prepare_schema(self.direct_dsn, settings)
        if self.dsn != self.direct_dsn:  # the pools go through a pooler: do statements stay?
            await check_pool_statements(self.dsn, settings.database)
        # Every worker statement is bounded: a lock held by a transaction outside taskd (an
        # application's open `SELECT taskd.cancel(id)`) fails the one call that needs it after
        # lock_timeout instead of stalling the heartbeat, the completer or the claims.
        lock_timeout = settings.database.lock_timeout
        statement_timeout = settings.database.statement_timeout
        db_pool = await create_worker_pool(self.dsn, settings.database)
        claim_pool = await create_pool(
            self.dsn,
            settings.database,
            size=1,
            synchronous_commit=False,
            reset_session=False,
            lock_timeout=lock_timeout,
            statement_timeout=statement_timeout,
        )
        store = Store(db_pool, claim_pool=claim_pool, hold_claim_connection=True)
        # status webhooks: every daemon serves the delivery task (taskd.webhook)
        webhook_sender = WebhookSender(store, settings.webhook_delivery)
        # its runs record the deployment's version, as every task without its own
        webhook_sender.definition.version = self.version
        self.registry.add(webhook_sender.definition)
        # The admin API reads through a small pool of its own, each statement capped: many
        # operators' requests (or one heavy filter) never take the connections the worker
        # needs for its claims, outcomes and heartbeats.
        admin_pool = (
            await create_pool(
                self.dsn,
                settings.database,
                size=ADMIN_POOL_SIZE,
                reset_session=False,
                statement_timeout=ADMIN_STATEMENT_TIMEOUT,
                # what pg_stat_activity shows: an operator's reads apart from the worker's
                application_name="taskd-admin",
            )
            if settings.admin.listen
            else None
        )
        # Every operator read (the API, /metrics, /readyz) goes through the admin pool.
        admin_store = Store(admin_pool) if admin_pool is not None else None
        # The admin endpoint's metrics (prometheus-client) are built with the rest of it, once
        # the first claims are made (_start_admin); what is reported before is kept for them.
        # A daemon without the endpoint never loads them.
        late_telemetry = LateTelemetry() if admin_store is not None else None
        telemetry = late_telemetry or Telemetry()
        telemetry.served_versions(task_versions(self.registry))
        client = Client(db_pool, changes=self.changes)
        log_writer = self.log_writer = RunLogWriter(store, telemetry)
        llm_writer = self.llm_writer = LLMCallWriter(store, telemetry)
        hooks_pool = None
        admin_listener = None
        self._stop_begun = anyio.Event()
        try:
            if settings.admin.listen:
                # Bound and listening now, so that a port already in use (another daemon's
                # too) stops the daemon before it has started any run; served once the claims
                # have begun (_start_admin).
                from taskd.admin.listen import AdminListener

                admin_listener = await AdminListener.bind(settings.admin.listen)
            await publish_registry(
                store, self.registry, settings, lambda: sync_config_webhooks(store, settings)
            )
            if settings.hooks.listen:
                # The inbound webhook listener (aiohttp), after this daemon's subscriptions are
                # written: its first event already starts their runs. A pool of its own.
                from taskd.hooks.server import HooksServer

                self.hooks = HooksServer(settings.hooks, telemetry)  # a missing secret: stop
                hooks_pool = await create_pool(
                    self.dsn,
                    settings.database,
                    size=HOOKS_POOL_SIZE,
                    reset_session=False,
                    lock_timeout=lock_timeout,
                    statement_timeout=HOOKS_STATEMENT_TIMEOUT,
                    application_name="taskd-hooks",
                )
                await self.hooks.start(hooks_pool)
            served = self.registry
            set_current_client(client)
            self.lock = WorkerLock(self.direct_dsn, settings.database, store, new_lock_key())
            lock = self.lock
            services = WorkerRunServices(
                store,
                self.worker_id,
                self.changes,
                self.log_writer,
                max_metadata_bytes=settings.tasks.max_metadata_bytes,
                run_lines=settings.log.run_lines,
                run_level=logging.getLevelName(settings.log.run_level),
                wait_threshold=settings.worker.wait_threshold,
                max_payload_bytes=settings.tasks.max_payload_bytes,
                max_output_bytes=settings.tasks.max_output_bytes,
                llm_writer=llm_writer,
                llm_settings=settings.llm,
                task_versions=task_versions(self.registry),
            )
            self.services = services
            findings = Findings(store, self.worker_id, changes=self.changes, telemetry=telemetry)
            self.waker = Waker(store, self.worker_id, findings=findings)
            if self.until_empty:
                self.burst = Burst(store, served.ids, settings.worker.queues, self.waker, findings)
            claimer = self.claimer = Claimer(
                store,
                served,
                settings.worker,
                self.worker_id,
                may_claim=lambda: lock.held,
                telemetry=telemetry,
                burst=self.burst,
            )
            self.completer = Completer(
                store,
                self.worker_id,
                claimer,
                changes=self.changes,
                telemetry=telemetry,
                before_outcomes=lambda: flush_run_rows(log_writer, llm_writer),
                burst=self.burst,
            )
            in_flight = self.in_flight = InFlight(
                store,
                served,
                settings.worker,
                claimer,
                self.completer,
                changes=self.changes,
                services=services,
            )
            self.heartbeat = Heartbeat(
                store, settings.worker, self.worker_id, in_flight.leases, self._declared_gone
            )
            self.scheduler = Scheduler(store, self.changes)
            self.listener = Listener(
                self.direct_dsn,
                settings.database,
                {
                    NUDGE_CHANNEL: self._on_nudge,
                    CANCEL_CHANNEL: self._on_cancel,
                    SCHEDULES_CHANNEL: self.scheduler.changed,
                },
                on_reconnect=self._on_listener_reconnect,
            )
            worker = settings.worker
            self.rescuer = Rescuer(store, worker, self.worker_id, findings=findings)
            # the listener is not up during the reconciliation: the reconciler nudges the claimer
            self.reconciler = Reconciler(
                store, self.worker_id, self.rescuer, handed_back=claimer.nudge
            )
            self.expirer = Expirer(store, self.worker_id, findings=findings)
            self.unknown_task_failer = UnknownTaskFailer(
                store, worker, self.worker_id, findings=findings
            )
            self.subscription_retirer = SubscriptionRetirer(store)
            self.version_failer = VersionFailer(store, worker, self.worker_id, findings=findings)
            self.sweeper = Sweeper(
                worker,
                self.expirer,
                self.unknown_task_failer,
                self.rescuer,
                self.subscription_retirer,
                telemetry=telemetry,
                version_failer=self.version_failer,
            )
            self.failure_hooks = FailureHooks(
                store, self.registry, self.worker_id, services, settings=worker, findings=findings
            )
            self.pruner = Pruner(store, settings.retention, telemetry=telemetry)
            self.queue_sampler = QueueSampler(store, telemetry=telemetry)
            self.llm_batch_poller = LLMBatchPoller(
                store, settings.llm, services.llm_client, findings=findings, telemetry=telemetry
            )
            async with anyio.create_task_group() as group:
                # The lock before the worker row: a row without its lock reads as a gone worker.
                await group.start(self.lock.run)
                await register_worker(
                    store,
                    self.worker_id,
                    served,
                    settings,
                    lock_key=self.lock.key,
                    version=taskd_version(),
                )
                if handle_signals:  # before the first claim: from here on a SIGTERM drains
                    await group.start(self._watch_signals)
                group.start_soon(self.heartbeat.run)
                group.start_soon(self.log_writer.run)
                group.start_soon(llm_writer.run)
                # Claims start now, alongside the reconciliation, whose second look at the
                # gone workers it cannot prove exited comes 1.5 s after its first: queued runs
                # need not wait for it, and the runs it hands back are claimed as soon as it has.
                drained = anyio.Event()
                group.start_soon(self._serve, drained)
                await self.reconciler.run_once()
                self.reconciled = True
                await retire_undeclared_schedules(store, self.registry)
                await group.start(self.listener.run)
                # the admin endpoint's code loads once the first claims are made (its CPU
                # would delay them); served before READY
                admin_started = anyio.Event()
                if admin_listener is not None:
                    assert admin_store is not None and admin_pool is not None
                    assert late_telemetry is not None
                    group.start_soon(
                        self._start_admin,
                        admin_listener,
                        admin_store,
                        admin_pool,
                        late_telemetry,
                        admin_started,
                    )
                else:
                    admin_started.set()
                # the expirer, failer, rescuer and retirer run in the sweeper's one loop, in
                # order (sweeper.py says why); the pruner, waker and failure hooks each in a
                # loop of its own (a long backlog to prune, or a slow hook, must not delay a
                # rescue)
                for chore in (self.pruner, self.waker, self.failure_hooks, self.sweeper):
                    group.start_soon(chore.run)
                # open Message Batches (ctx.llm.batch), polled in a loop of their own too
                group.start_soon(self.llm_batch_poller.run)
                # the console's charts: queue depths and the runs of the minutes before, once a
                # minute (one daemon of the fleet writes each minute)
                group.start_soon(self.queue_sampler.run)
                self.event_relay = EventRelay(
                    self.direct_dsn, settings.database, store, settings.tasks.max_payload_bytes
                )
                group.start_soon(self.event_relay.run)
                # every daemon's run changes on any daemon's /api/stream (change_feed.py)
                self.change_feed = ChangeFeed(
                    self.direct_dsn, settings.database, self.changes, self.worker_id
                )
                group.start_soon(self.change_feed.run)
                if self.burst is not None:
                    await self._start_burst()
                group.start_soon(self.scheduler.run)
                group.start_soon(self.notifier.run_watchdog, self.status_line)
                # /readyz answers from READY on; a drain begun meanwhile (a SIGTERM, a burst
                # with nothing due, the admin endpoint failing) sends no READY
                await _first_of(admin_started, self._stop_begun, drained)
                if admin_started.is_set() and not self.stopping and not drained.is_set():
                    log_event(
                        log,
                        logging.INFO,
                        f"taskd ready: {len(served)} task(s), concurrency "
                        f"{settings.worker.concurrency}",
                        worker_id=str(self.worker_id),
                        tasks=served.ids,
                    )
                    self.notifier.ready(self.status_line())
                task_status.started(self)
                await drained.wait()
                with anyio.move_on_after(5):
                    # the last lines and LLM calls of the drained runs
                    await flush_run_rows(self.log_writer, llm_writer)
                with anyio.move_on_after(2):
                    await services.llm_close()
                group.cancel_scope.cancel()
            try:
                with anyio.fail_after(5):
                    await store.workers.stop(self.worker_id)
            except DB_ERRORS as exc:
                log.warning("could not record the worker's stop: %s", exc)
            if self.burst is not None:
                with anyio.move_on_after(5):
                    await self.burst.report(claimer.claimed_total, self.exit_code)
            log_event(log, logging.INFO, "taskd stopped", worker_id=str(self.worker_id))
            if self.admin_failure is not None:
                raise self.admin_failure
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(2):
                    await webhook_sender.close()
                if self.admin is not None:
                    with anyio.move_on_after(5):
                        await self.admin.stop()
                elif admin_listener is not None:
                    await admin_listener.close()
                if self.hooks is not None:
                    with anyio.move_on_after(5):
                        await self.hooks.stop()
                extra_pools = [p for p in (admin_pool, hooks_pool) if p is not None]
                if self.read_replica is not None:
                    extra_pools.append(self.read_replica.pool)
                with anyio.move_on_after(5):
                    await store.runs.release_claim_connection()
                for pool in (claim_pool, db_pool, *extra_pools):
                    with anyio.move_on_after(5) as closing:
                        await pool.close()
                    if closing.cancelled_caught:
                        pool.terminate()

    async def _start_admin(
        self,
        listener: AdminListener,
        admin_store: Store,
        admin_pool: Pool,
        telemetry: LateTelemetry,
        started: anyio.Event,
    ) -> None:
        """Serve the admin endpoint on its sockets, bound and listening before the first
        claim. Its modules (aiohttp, prometheus-client, the API's models: about as much CPU as
        the rest of the start-up) load in a thread, so that the claims go on meanwhile; nothing
        on the loop may import them while that thread runs (a cross-thread import cycle).

        A failure here comes after the claims began: the daemon drains as on SIGTERM (runs
        finish within the grace or go back without spending an attempt), then exits with one
        line (``admin_failure``), instead of cancelling the runs in flight."""
        try:
            await self._build_admin(listener, admin_store, admin_pool, telemetry)
        except Exception as exc:
            line = (str(exc).splitlines() or [""])[0]
            if isinstance(exc, TaskdError) and line == str(exc):
                failure: TaskdError = exc  # AdminListenFailed, ConfigError: their own line
            else:
                failure = AdminStartFailed(
                    f"cannot start the admin endpoint on {listener.listen} (admin.listen): "
                    f"{type(exc).__name__}: {line}"
                )
            self.admin_failure = failure
            # the traceback goes to the log, the exit's message stays one line
            log.error("%s; draining", failure, exc_info=not isinstance(exc, TaskdError))
            await self.stop()
        else:
            started.set()

    async def _build_admin(
        self,
        listener: AdminListener,
        admin_store: Store,
        admin_pool: Pool,
        telemetry: LateTelemetry,
    ) -> None:
        from taskd.models import describe_fields

        # on the loop, before the thread: it rebuilds models the loop validates with
        describe_fields()
        await anyio.to_thread.run_sync(_load_admin_modules)
        from taskd.admin.metrics import Metrics
        from taskd.admin.server import AdminServer
        from taskd.admin.state import AdminState

        self.metrics = Metrics(
            admin_store,
            lambda: counters(self),
            known_task=lambda task_id: task_id in self.registry,
        )
        telemetry.attach(self.metrics)
        settings = self.settings
        if settings.admin.read_url:
            self.read_replica = await _read_replica(settings, admin_pool, self.metrics)
        self.admin = AdminServer(
            AdminState(
                store=admin_store,
                client=Client(admin_pool, changes=self.changes),
                registry=self.registry,
                changes=self.changes,
                metrics=self.metrics,
                settings=settings.admin,
                readiness=lambda: readiness(self, admin_store),
                max_payload_bytes=settings.tasks.max_payload_bytes,
                replica=self.read_replica,
            ),
            taskd_version(),
            listener,
        )
        await self.admin.start()

    async def _serve(self, drained: anyio.Event) -> None:
        """The runs in flight, until they have drained; ``drained`` is set then."""
        assert self.in_flight is not None
        try:
            await self.in_flight.run()
        finally:
            drained.set()

    async def _start_burst(self) -> None:
        """Burst mode, once start-up is done: fire the cron times due now (due work too), then
        let the claimer end the burst when nothing due is left."""
        assert self.burst is not None and self.scheduler is not None
        assert self.claimer is not None
        try:
            await self.scheduler.tick()
        except DB_ERRORS as exc:
            log.warning("burst: the scheduler's first pass failed, its loop retries: %s", exc)
        self.burst.started = True
        self.claimer.nudge()

    @property
    def exit_code(self) -> int:
        """0; 1 when outcomes could not be written before exiting or this worker was declared
        gone; in burst mode EXIT_RUNS_FAILED when a run it attempted ended failed or is left
        to retry a failed attempt."""
        if (self.completer is not None and self.completer.unwritten) or self.declared_gone:
            return 1
        if self.burst is not None and self.burst.runs_failed:
            return EXIT_RUNS_FAILED
        return 0

    def status_line(self) -> str:
        return status_line(self)

    def _on_nudge(self, queue: str) -> None:
        # a queue this daemon serves; other queues' enqueues are not its business
        if self.claimer is not None and self.claimer.serves_queue(queue):
            self.claimer.nudge()

    def _on_cancel(self, payload: str) -> None:
        try:
            run_id = uuid.UUID(payload)
        except ValueError:
            log.warning("malformed cancel notification ignored: %.100r", payload)
            return
        if self.in_flight is not None:
            self.in_flight.cancel_hint(run_id)  # a hint: any role may NOTIFY; the database decides

    def _on_listener_reconnect(self) -> None:
        # nudges sent while the listener was away are lost: claim now (lost cancel requests
        # are found by the in-flight runs' cancel poll within a second)
        if self.claimer is not None:
            self.claimer.nudge()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: stop claiming, let attempts finish within ``grace``, hand back the rest."""
        if self.in_flight is None or self.stopping:
            return
        self.stopping = True
        if self._stop_begun is not None:
            self._stop_begun.set()
        log.info("stopping: no new claims")
        self.notifier.stopping(f"draining: {self.status_line()}")
        await self.in_flight.drain(self.settings.worker.shutdown_grace if grace is None else grace)

    async def _watch_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async with anyio.create_task_group() as group:
                async for signum in signals:
                    if not self.stopping:
                        log.info("received %s: draining", signal.Signals(signum).name)
                        group.start_soon(self.stop)
                    elif self.in_flight is not None:
                        log.info("received %s again: cancelling now", signal.Signals(signum).name)
                        self.in_flight.cancel_all()

    def _declared_gone(self) -> None:
        # Another daemon found this worker's lock free twice and handed its runs back: they
        # are others' now. Stop at once; systemd restarts us (exit 1).
        self.declared_gone = True
        if self.in_flight is not None:
            self.in_flight.abandon()


def run_daemon(settings: Settings, registry: Registry, *, until_empty: bool = False) -> int:
    """Entry point of `taskd run`: uvloop when available, then the daemon until it drains
    (``until_empty``: until nothing due is left for it, burst mode).

    Returns the exit code: 0; 1 when outcomes could not be written before exiting; in burst
    mode 3 when a run it attempted failed (``Daemon.exit_code``).
    """
    dsn = resolve_dsn(settings)
    daemon = Daemon(settings, registry, dsn, until_empty=until_empty)
    backend_options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401

        backend_options["use_uvloop"] = True
    except ImportError:
        pass
    anyio.run(daemon.run, backend="asyncio", backend_options=backend_options)
    return daemon.exit_code


__all__ = [
    "EXIT_RUNS_FAILED",
    "Daemon",
    "migrate",
    "resolve_direct_dsn",
    "resolve_dsn",
    "run_daemon",
]


def _load_admin_modules() -> None:
    import taskd.admin.metrics
    import taskd.admin.server
    import taskd.admin.state  # noqa: F401


async def _first_of(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


async def _read_replica(settings: Settings, admin_pool: Any, metrics: Any) -> Any:
    """[admin] read_url's replica for the admin API's reads: a pool that connects on the first
    read (a replica down at start costs a fallback, not the start)."""
    from taskd.admin.read_replica import ReadReplica
    from taskd.store.replica import create_read_pool

    pool = await create_read_pool(
        settings.admin.read_url,
        settings.database,
        size=ADMIN_POOL_SIZE,
        statement_timeout=ADMIN_STATEMENT_TIMEOUT,
        application_name="taskd-admin-read",
    )
    return ReadReplica(settings.admin.read_url, pool, admin_pool, metrics.registry)

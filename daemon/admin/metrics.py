"""Prometheus metrics of one daemon, through prometheus-client.

Counters and histograms are fed on the paths that do the work (run changes, claims, database
errors); figures that live in the database (queue depths, the oldest queued run, dead rows)
are read once per scrape. Each daemon has its own registry: several daemons in one process
(the tests) do not share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from daemon.changes import ChangeKind, RunChange
from daemon.store.store import Store
from daemon.telemetry import Telemetry

# The *_created series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER_TASKS = "(other)"  # the task label of runs of tasks this daemon does not serve
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_CLAIM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class DatabaseSnapshot:
    """What one scrape read from the database."""

    queues: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    read_at: datetime | None = None


class _DatabaseCollector(Collector):
    def __init__(self, snapshot: Callable[[], DatabaseSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot()
        depth = GaugeMetricFamily(
            "taskd_queue_depth",
            "Runs per queue and state, over all daemons",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "taskd_queue_oldest_age_seconds",
            "Age of the oldest queued run whose time has come (0 when none)",
            labels=["queue"],
        )
        now = snap.read_at or datetime.now(UTC)
        for queue in snap.queues:
            for state in ("due", "delayed", "executing"):
                depth.add_metric([queue["queue"], state], queue[state])
            due = queue["oldest_due"]
            oldest.add_metric([queue["queue"]], max(0.0, (now - due).total_seconds()) if due else 0)
        live = GaugeMetricFamily(
            "taskd_table_live_rows", "Live rows per taskd table", labels=["table"]
        )
        dead = GaugeMetricFamily(
            "taskd_table_dead_rows",
            "Dead rows per taskd table (bloat awaiting vacuum)",
            labels=["table"],
        )
        for table in snap.tables:
            live.add_metric([table["table"]], table["live"])
            dead.add_metric([table["table"]], table["dead"])
        yield from (depth, oldest, live, dead)


class _CallbackCollector(Collector):
    """Counters whose values the daemon's parts already keep (read at scrape time)."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        values = self._read()
        specs = {
            "listener_reconnects": "LISTEN connection re-established after a loss",
            "stream_clients_dropped": "/api/stream clients disconnected for falling behind",
            "run_log_lines_dropped": "ctx.log lines not stored (buffer full or refused)",
            "pruned_runs": "Finished runs deleted by retention",
        }
        for name, text in specs.items():
            counter = CounterMetricFamily(f"taskd_{name}", text)
            counter.add_metric([], values.get(name, 0))
            yield counter


class Metrics(Telemetry):
    def __init__(
        self,
        store: Store,
        read_counters: Callable[[], dict[str, float]],
        known_task: Callable[[str], bool] = lambda task_id: True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Producers may name any task id, and maintenance expires or fails runs of tasks
        # this daemon does not serve: those share one label, so the series stay bounded.
        self._known_task = known_task
        self._store = store
        self._read_counters = read_counters
        self._counters: dict[str, float] = {}
        self._snapshot = DatabaseSnapshot()
        registry = self.registry
        runs = {
            ChangeKind.STARTED: "started",
            ChangeKind.COMPLETED: "completed",
            ChangeKind.FAILED: "failed",
            ChangeKind.CANCELED: "canceled",
            ChangeKind.EXPIRED: "expired",
            ChangeKind.ATTEMPT_FAILED: "retried",
        }
        self._run_counters = {
            kind: Counter(
                f"taskd_runs_{name}",
                f"Runs {name} by this daemon, by task"
                + (" (attempts that failed and will be retried)" if name == "retried" else ""),
                ["task"],
                registry=registry,
            )
            for kind, name in runs.items()
        }
        self._children: dict[tuple[ChangeKind, str], Any] = {}
        self._durations = Histogram(
            "taskd_attempt_duration_seconds",
            "Wall time of attempts this daemon ran, by task",
            ["task"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self._duration_children: dict[str, Any] = {}
        self._claims = Histogram(
            "taskd_claim_batch_size",
            "Runs returned per claim",
            buckets=_CLAIM_BUCKETS,
            registry=registry,
        )
        self._db_errors = Counter(
            "taskd_database_errors",
            "Failed database calls, by component",
            ["component"],
            registry=registry,
        )
        self.pool_in_use = Gauge(
            "taskd_pool_in_use", "Runs executing in this daemon", registry=registry
        )
        self.pool_limit = Gauge("taskd_pool_limit", "This daemon's concurrency", registry=registry)
        self.loop_lag = Gauge(
            "taskd_event_loop_lag_max_seconds",
            "Longest event-loop stall seen since start",
            registry=registry,
        )
        self.ready = Gauge("taskd_ready", "1 when /readyz would answer 200", registry=registry)
        self.stream_clients = Gauge(
            "taskd_stream_clients", "Connected /api/stream clients", registry=registry
        )
        registry.register(_DatabaseCollector(lambda: self._snapshot))
        registry.register(_CallbackCollector(lambda: self._counters))
        ProcessCollector(registry=registry)  # RSS, CPU, open fds: memory growth shows here

    # Telemetry -------------------------------------------------------------------------------

    def claimed(self, count: int) -> None:
        self._claims.observe(count)

    def db_error(self, component: str) -> None:
        self._db_errors.labels(component).inc()

    def on_change(self, change: RunChange) -> None:
        """A run-change listener (see ChangeHub.add_listener): counts and durations."""
        task_id = change.task_id if self._known_task(change.task_id) else OTHER_TASKS
        key = (change.kind, task_id)
        child = self._children.get(key)
        if child is None:
            counter = self._run_counters.get(change.kind)
            if counter is None:
                return
            child = self._children[key] = counter.labels(task_id)
        child.inc()
        data = change.data
        if data is not None and "duration" in data:
            histogram = self._duration_children.get(task_id)
            if histogram is None:
                histogram = self._duration_children[task_id] = self._durations.labels(task_id)
            histogram.observe(data["duration"])

    # exposition ------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text, after reading the database figures once."""
        queues = await self._store.queue_depths()
        tables = await self._store.table_stats()
        self._snapshot = DatabaseSnapshot(queues, tables, datetime.now(UTC))
        self._counters = self._read_counters()  # also sets the pool and loop gauges
        return generate_latest(self.registry)

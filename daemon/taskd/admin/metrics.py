"""Prometheus metrics of one daemon, through prometheus-client.

Counters and histograms are fed on the paths that do the work (run changes, claims, database
errors); figures that live in the database (queue depths, the oldest queued run, dead rows)
are read once per scrape. Each daemon has its own registry: several daemons in one process
(the tests) do not share counters.
"""

from __future__ import annotations

import bisect
import math
import time
import uuid
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from taskd.models import ClaimedRun, LLMCall, Outcome
from taskd.store.store import Store
from taskd.telemetry import Telemetry

# The *_created series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# a written outcome's new status, and a maintenance change's kind -> the counter it counts in
_STATUS_COUNTERS = {
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "queued": "retried",
    "waiting": "suspended",
}
_KIND_COUNTERS = {
    "expired": "expired",
    "failed": "failed",
    "canceled": "canceled",
    "attempt_failed": "retried",
}
OTHER_TASKS = "(other)"  # the task label of runs of tasks this daemon does not serve
OTHER_QUEUES = "(other)"  # the queue label summing the queues past MAX_QUEUE_SERIES
MAX_QUEUE_SERIES = 100
OTHER_MODELS = "(other)"  # the model label of models past MAX_MODEL_SERIES
MAX_MODEL_SERIES = 50
LLM_TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_CLAIM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class DatabaseSnapshot:
    """What one scrape read from the database."""

    queues: list[dict[str, Any]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    read_at: datetime | None = None


def _bounded_queues(queues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_QUEUE_SERIES queues get their own label: producers choose queue names, and
    each name would be a new series in every scrape forever. Queues with settings (declared
    in code, paused or limited by an operator) come first, then the busiest; the rest are
    summed into one OTHER_QUEUES entry."""
    if len(queues) <= MAX_QUEUE_SERIES:
        return queues
    ranked = sorted(
        queues,
        key=lambda q: (
            "paused" not in q,  # a row in taskd.queues: declared or set by an operator
            -(q["due"] + q["delayed"] + q["executing"]),
            q["queue"],
        ),
    )
    kept, rest = ranked[: MAX_QUEUE_SERIES - 1], ranked[MAX_QUEUE_SERIES - 1 :]
    dues = [q["oldest_due"] for q in rest if q["oldest_due"] is not None]
    other = {
        "queue": OTHER_QUEUES,
        "due": sum(q["due"] for q in rest),
        "delayed": sum(q["delayed"] for q in rest),
        "executing": sum(q["executing"] for q in rest),
        "oldest_due": min(dues) if dues else None,
    }
    return [*kept, other]


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
        paused = GaugeMetricFamily(
            "taskd_queue_paused", "1 while the queue is paused", labels=["queue"]
        )
        limit = GaugeMetricFamily(
            "taskd_queue_concurrency_limit",
            "The queue's concurrency limit over all daemons (queues without one: absent)",
            labels=["queue"],
        )
        now = snap.read_at or datetime.now(UTC)
        for queue in _bounded_queues(snap.queues):
            for state in ("due", "delayed", "executing"):
                depth.add_metric([queue["queue"], state], queue[state])
            due = queue["oldest_due"]
            oldest.add_metric([queue["queue"]], max(0.0, (now - due).total_seconds()) if due else 0)
            paused.add_metric([queue["queue"]], 1.0 if queue.get("paused") else 0.0)
            if queue.get("concurrency") is not None:
                limit.add_metric([queue["queue"]], queue["concurrency"])
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
        yield from (depth, oldest, paused, limit, live, dead)


class _DurationHistogram(Collector):
    """Attempt durations by task: bucket counts kept as plain integers and exposed at scrape
    time (prometheus-client's Histogram takes a lock per observation: at 20,000 runs a second
    that alone was several per cent of the daemon's time)."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, task_id: str, seconds: float) -> None:
        entry = self._tasks.get(task_id)
        if entry is None:
            entry = self._tasks[task_id] = ([0] * (len(_DURATION_BUCKETS) + 1), [0.0])
        entry[0][bisect.bisect_left(_DURATION_BUCKETS, seconds)] += 1
        entry[1][0] += seconds

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "taskd_attempt_duration_seconds",
            "Wall time of attempts this daemon ran, by task",
            labels=["task"],
        )
        for task_id, (counts, total) in sorted(self._tasks.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*_DURATION_BUCKETS, math.inf), counts, strict=True):
                cumulative += count
                buckets.append((_bucket_name(bound), cumulative))
            family.add_metric([task_id], buckets, total[0])
        yield family


def _bucket_name(bound: float) -> str:
    name: str = floatToGoString(bound)  # type: ignore[no-untyped-call]  # "+Inf", "0.005"
    return name


class _LLMCounters(Collector):
    """Tokens, dollars and calls of the LLM calls this daemon stored, by task and model: plain
    integers and Decimals added per stored batch and exposed at scrape time (the dollars are
    summed exactly; only the exposition is a float)."""

    def __init__(self) -> None:
        self.tokens: Counter_[tuple[str, str, str]] = Counter_()
        self.cost: dict[tuple[str, str], Decimal] = {}
        self.calls: Counter_[tuple[str, str, str]] = Counter_()

    def collect(self) -> Iterable[Metric]:
        tokens = CounterMetricFamily(
            "taskd_llm_tokens",
            "Tokens of the LLM calls this daemon recorded, by task, model and kind (input, "
            "output, cache_write, cache_read)",
            labels=["task", "model", "kind"],
        )
        for labels, count in sorted(self.tokens.items()):
            tokens.add_metric(list(labels), count)
        cost = CounterMetricFamily(
            "taskd_llm_cost_usd",
            "US dollars of the LLM calls this daemon recorded, by task and model (calls of "
            "models without a price add nothing)",
            labels=["task", "model"],
        )
        for (task_id, model), dollars in sorted(self.cost.items()):
            cost.add_metric([task_id, model], float(dollars))
        calls = CounterMetricFamily(
            "taskd_llm_calls",
            "LLM calls this daemon recorded, by task, model and outcome",
            labels=["task", "model", "outcome"],
        )
        for labels, count in sorted(self.calls.items()):
            calls.add_metric(list(labels), count)
        yield from (tokens, cost, calls)


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
        self._snapshot_at = -math.inf  # time.monotonic() of the last database read
        self._reading = anyio.Lock()
        registry = self.registry
        self._run_counters = {
            name: Counter(
                f"taskd_runs_{name}",
                f"Runs {name} by this daemon, by task"
                + (" (attempts that failed and will be retried)" if name == "retried" else ""),
                ["task"],
                registry=registry,
            )
            for name in (
                "started",
                "completed",
                "failed",
                "canceled",
                "expired",
                "retried",
                "suspended",
            )
        }
        self._children: dict[tuple[str, str], Any] = {}
        self._durations = _DurationHistogram()
        self._llm = _LLMCounters()
        # Models are named by task code: the first MAX_MODEL_SERIES get a label each, later
        # ones share OTHER_MODELS (as tasks this daemon does not serve share OTHER_TASKS).
        self._models: set[str] = set()
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
        self._hook_requests = Counter(
            "taskd_hooks_requests",
            "Requests to the webhook listener, by source and result (accepted, duplicate, "
            "unauthorized, stale, too_large, bad_request, unavailable, unknown_source)",
            ["source", "result"],
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
        # One series per task this daemon serves (a daemon serves one version of each): as
        # bounded as the task label, however many versions a fleet deploys over time. The
        # runs' own versions are no label (every deploy would add series); the runs list
        # filters by version instead.
        self._task_versions = Gauge(
            "taskd_task_version_info",
            "1 for each task this daemon serves, with the version of its code",
            ["task", "version"],
            registry=registry,
        )
        registry.register(self._durations)
        registry.register(self._llm)
        registry.register(_DatabaseCollector(lambda: self._snapshot))
        registry.register(_CallbackCollector(lambda: self._counters))
        ProcessCollector(registry=registry)  # RSS, CPU, open fds: memory growth shows here

    # Telemetry -------------------------------------------------------------------------------

    def served_versions(self, versions: Mapping[str, str]) -> None:
        for task_id, version in versions.items():
            self._task_versions.labels(task=task_id, version=version).set(1)

    # These run on the hot path, once per claim or outcome batch: counts are summed per
    # (counter, task) first and added once each, durations go to plain bucket counts.

    def claimed(self, runs: Sequence[ClaimedRun]) -> None:
        self._claims.observe(len(runs))
        self._add(Counter_(("started", run.task_id) for run in runs))

    def ended(self, outcomes: Sequence[Outcome], written: Mapping[uuid.UUID, str]) -> None:
        counts: Counter_[tuple[str, str]] = Counter_()
        for outcome in outcomes:
            status = written.get(outcome.run_id)
            if status is None:
                continue
            counts[(_STATUS_COUNTERS.get(status, "failed"), outcome.task_id)] += 1
            if outcome.duration is not None:
                self._durations.observe(self._label(outcome.task_id), outcome.duration)
        self._add(counts)

    def changed(self, kind: str, task_id: str) -> None:
        self._add({(_KIND_COUNTERS.get(kind, ""), task_id): 1})

    def _label(self, task_id: str) -> str:
        return task_id if self._known_task(task_id) else OTHER_TASKS

    def _add(self, counts: Mapping[tuple[str, str], int]) -> None:
        for (counter_name, task_id), count in counts.items():
            label = self._label(task_id)
            key = (counter_name, label)
            child = self._children.get(key)
            if child is None:
                counter = self._run_counters.get(counter_name)
                if counter is None:
                    continue
                child = self._children[key] = counter.labels(label)
            child.inc(count)

    def db_error(self, component: str) -> None:
        self._db_errors.labels(component).inc()

    def hook_request(self, source: str, result: str) -> None:
        self._hook_requests.labels(source, result).inc()

    def llm_calls(self, calls: Sequence[LLMCall]) -> None:
        counters = self._llm
        for call in calls:
            task_id, model = self._label(call.task_id), self._model_label(call.model)
            for kind, count in zip(
                LLM_TOKEN_KINDS,
                (
                    call.input_tokens,
                    call.output_tokens,
                    call.cache_write_tokens,
                    call.cache_read_tokens,
                ),
                strict=True,
            ):
                counters.tokens[(task_id, model, kind)] += count  # 0: the series exists
            if call.cost_usd is not None:
                key = (task_id, model)
                counters.cost[key] = counters.cost.get(key, Decimal(0)) + call.cost_usd
            counters.calls[(task_id, model, call.outcome)] += 1

    def _model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) < MAX_MODEL_SERIES:
            self._models.add(model)
            return model
        return OTHER_MODELS

    # exposition ------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text. The database figures are read by one scrape at a time (on
        the admin pool, under its statement timeout); scrapes that arrive meanwhile share the
        next read, begun after they arrived, so any number of concurrent scrapers costs two
        reads at most and none sees figures older than its own request."""
        requested = time.monotonic()
        async with self._reading:
            if self._snapshot_at < requested:
                began = time.monotonic()
                queues = await self._store.queues.depths()
                tables = await self._store.retention.table_stats()
                self._snapshot = DatabaseSnapshot(queues, tables, datetime.now(UTC))
                self._snapshot_at = began
        self._counters = self._read_counters()  # also sets the pool and loop gauges
        return generate_latest(self.registry)

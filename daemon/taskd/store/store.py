"""The store: every read and write taskd makes, grouped by noun, each noun a module of its
own beside its SQL (``runs.py`` and ``runs.sql``, ...): ``store.runs.claim(...)``,
``store.workers.register(...)``.

The worker, the client and the CLI call these; none of them holds SQL. A verb that writes
for a producer takes an optional ``connection`` so it can run in the producer's transaction.
"""

from __future__ import annotations

import asyncpg

from taskd.store.attempts import AttemptStore
from taskd.store.error_groups import ErrorGroupStore
from taskd.store.events import EventStore
from taskd.store.failure_hooks import FailureHookStore
from taskd.store.llm import LLMStore
from taskd.store.llm_batches import LLMBatchStore
from taskd.store.llm_limits import LLMLimitStore
from taskd.store.logs import LogStore
from taskd.store.queues import QueueStore
from taskd.store.retention import RetentionStore
from taskd.store.run_scan import RunScanStore
from taskd.store.runs import RunStore
from taskd.store.schedules import ScheduleStore
from taskd.store.settings import SettingStore
from taskd.store.stats import StatsStore
from taskd.store.steps import StepStore
from taskd.store.tasks import TaskStore
from taskd.store.tokens import TokenStore
from taskd.store.waits import WaitStore
from taskd.store.webhooks import WebhookStore
from taskd.store.workers import WorkerStore


class Store:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        claim_pool: asyncpg.Pool | None = None,
        hold_claim_connection: bool = False,
    ) -> None:
        """``hold_claim_connection``: the claim pool serves one claimer, which keeps its
        connection between claims (``runs.release_claim_connection`` gives it back)."""
        self.pool = pool
        # Claims may go through a pool of their own (asynchronous commit; see create_pool).
        self.claim_pool = claim_pool or pool
        self.attempts = AttemptStore(pool)
        self.steps = StepStore(pool)
        self.waits = WaitStore(pool)
        self.runs = RunStore(
            pool,
            self.claim_pool,
            attempts=self.attempts,
            steps=self.steps,
            waits=self.waits,
            hold_claim_connection=hold_claim_connection and claim_pool is not None,
        )
        self.run_scan = RunScanStore(pool)
        self.error_groups = ErrorGroupStore(pool)
        self.tokens = TokenStore(pool)
        self.queues = QueueStore(pool)
        self.schedules = ScheduleStore(pool)
        self.events = EventStore(pool)
        self.workers = WorkerStore(pool)
        self.tasks = TaskStore(pool)
        self.settings = SettingStore(pool)
        self.logs = LogStore(pool)
        self.llm = LLMStore(pool)
        self.llm_batches = LLMBatchStore(pool)
        self.llm_limits = LLMLimitStore(pool)
        self.failure_hooks = FailureHookStore(pool)
        self.retention = RetentionStore(pool)
        self.stats = StatsStore(pool)
        self.webhooks = WebhookStore(pool)

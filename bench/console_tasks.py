"""The tasks of bench/console.py's seeded history, as the daemon it starts registers them (so
/api/tasks, /api/queues and /api/budgets list them): no-ops, the history is written in SQL."""

from __future__ import annotations

from typing import Any

from taskd import Budget, Context, Queue, task

AI = Queue("ai", concurrency=20, concurrency_limit_per_key=2, budget=Budget(usd=5, per="1d"))
WEBHOOKS = Queue("webhooks", concurrency=50, concurrency_limit_per_key=5)


@task(id="shop.send_invoice", queue="mail")
async def send_invoice(payload: Any, ctx: Context) -> None:
    return None


@task(id="shop.sync_inventory")
async def sync_inventory(payload: Any, ctx: Context) -> None:
    return None


@task(id="mail.digest", queue="mail")
async def digest(payload: Any, ctx: Context) -> None:
    return None


@task(id="ai.summarize", queue=AI, budget_usd=0.5)
async def summarize(payload: Any, ctx: Context) -> None:
    return None


@task(id="reports.nightly", queue="reports")
async def nightly(payload: Any, ctx: Context) -> None:
    return None


@task(id="webhooks.deliver", queue=WEBHOOKS)
async def deliver(payload: Any, ctx: Context) -> None:
    return None


TASKS = [
    "shop.send_invoice",
    "shop.sync_inventory",
    "mail.digest",
    "ai.summarize",
    "reports.nightly",
    "webhooks.deliver",
]
QUEUES = {
    "shop.send_invoice": "mail",
    "shop.sync_inventory": "default",
    "mail.digest": "mail",
    "ai.summarize": "ai",
    "reports.nightly": "reports",
    "webhooks.deliver": "webhooks",
}

"""The console pages whose API comes from other branches of issue 16, in real Chromium:
TaskInfo.payload_schema, PATCH /api/queues/{name} and its reset, GET /api/events,
GET /api/costs/daily and /api/budgets (branch console-fleet), GET /api/stats (branch
console-stats). These pass once both are merged with console-pages.

A second daemon of the fleet serves ``orders.charge`` (tests/support/console_page_tasks.py):
the daemon serving the console does not, so what the pages show comes from the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
from playwright.async_api import Page, expect

from taskd import RunStatus
from tests.support.browser import Console, axe_check, screenshot
from tests.support.console_page_tasks import PAGE_TASKS
from tests.support.in_process import running_daemon
from tests.support.waiting import wait_for_run


@asynccontextmanager
async def peer(database: str) -> AsyncIterator[None]:
    """Another daemon of the fleet, serving orders.charge (queue billing, event order.placed)."""
    async with running_daemon(database, PAGE_TASKS):
        yield


async def _runs_of(console: Console, task_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await console.call("GET", f"/api/runs?task={task_id}"))["runs"]
    return runs


async def _queue(console: Console, name: str) -> dict[str, Any]:
    queues = (await console.call("GET", "/api/queues"))["queues"]
    found: dict[str, Any] = next(q for q in queues if q["queue"] == name)
    return found


async def test_the_payload_schema_is_shown_and_a_payload_breaking_it_is_not_sent(
    page: Page, console: Console, database: str
) -> None:
    async with peer(database):
        await page.goto("/#/tasks")
        card = page.locator('[data-task="orders.charge"]')
        await expect(card).to_contain_text("An order to charge.")
        fields = card.locator("table")
        await expect(fields).to_contain_text("customer")
        await expect(fields).to_contain_text("min length 1; max length 40")
        await expect(fields).to_contain_text("Who pays")
        await expect(fields).to_contain_text("address.zip")
        await expect(card).to_contain_text("order.placed")  # its event subscription
        await expect(card).to_contain_text("no (registered by another daemon)")
        await axe_check(page)
        await screenshot(page, "tasks-schema")

        await page.goto("/#/tasks/orders.charge")
        payload = page.get_by_label("Payload (JSON)")
        assert await payload.input_value() == '{\n  "customer": "",\n  "amount": 1\n}'
        sent: list[str] = []
        page.on("request", lambda r: sent.append(r.url) if "/trigger" in r.url else None)
        await payload.fill(
            '{"customer": "", "amount": 0, "currency": "GBP",'
            ' "address": {"city": "Lyon", "zip": "6900"}, "extra": 1}'
        )
        await page.get_by_role("button", name="Trigger run").click()
        problems = page.locator("#payload-problems li")
        await expect(problems).to_have_count(5)
        # in the stored schema's order (jsonb orders an object's keys by length, then bytes)
        assert sorted(await problems.all_inner_texts()) == [
            "address.zip: must match the pattern ^[0-9]{5}$",
            "amount: must be ≥ 1",
            'currency: must be one of "EUR", "USD"',
            "customer: must have at least 1 character",
            "extra: is not an allowed property",
        ]
        await expect(payload).to_have_attribute("aria-invalid", "true")
        assert sent == []
        assert await _runs_of(console, "orders.charge") == []
        await axe_check(page)
        await screenshot(page, "task")

        await payload.fill('{"customer": "acme", "amount": 12}')
        await expect(problems).to_have_count(0)  # checked again as the operator types
        await page.get_by_role("button", name="Trigger run").click()
        link = page.locator(".trigger-result a")
        await expect(link).to_be_visible()
        run_id = uuid.UUID(await link.inner_text())
        assert await link.get_attribute("href") == f"#/runs/{run_id}"
        run = await wait_for_run(console.client, run_id)  # the peer runs it
        assert run.status == RunStatus.COMPLETED
        assert run.output == {"charged": 12}


async def test_queue_limits_are_set_and_reset_from_the_page(
    page: Page, console: Console, database: str
) -> None:
    async with peer(database):
        await page.goto("/#/queues")
        row = page.locator('tr[data-queue="billing"]')
        await expect(row).to_contain_text("concurrency 4")
        await expect(row).to_contain_text("$5")  # the LLM budget per key
        await page.get_by_role("button", name="Set limits of queue billing").click()
        form = page.get_by_role("form", name="Limits of queue billing")
        await expect(form.get_by_label("Concurrency", exact=True)).to_be_focused()
        await form.get_by_label("Concurrency", exact=True).fill("2")
        await form.get_by_label("Per concurrency key").fill("1")
        await axe_check(page)
        await screenshot(page, "queues-limits")
        await form.get_by_role("button", name="Save limits").click()
        await expect(row).to_contain_text("concurrency 2, 1 per key")
        await expect(row).to_contain_text("set by operator")
        billing = await _queue(console, "billing")
        assert (billing["concurrency"], billing["concurrency_limit_per_key"]) == (2, 1)
        assert billing["overridden"] is True

        await page.get_by_role("button", name="Set limits of queue billing").click()
        await form.get_by_role("button", name="Reset to declared").click()
        await expect(row).to_contain_text("concurrency 4")
        billing = await _queue(console, "billing")
        assert billing["concurrency"] == 4
        assert billing["overridden"] is False


async def test_events_show_the_runs_they_created(
    page: Page, console: Console, database: str
) -> None:
    async with peer(database):
        event_id = await console.client.send_event(
            "order.placed", {"customer": "acme", "amount": 3}
        )
        await console.client.send_event("nobody.listens", {"x": "<b>not bold</b>"})
        (run,) = await _runs_of(console, "orders.charge")
        await page.goto("/#/events")
        row = page.locator(f'tr[data-event="{event_id}"]')
        await expect(row).to_contain_text("order.placed")
        await expect(row.get_by_role("link", name=run["id"][:8], exact=False)).to_have_attribute(
            "href", f"#/runs/{run['id']}"
        )
        await expect(page.locator("tbody tr")).to_have_count(2)
        # a payload is text: its markup shows as written, never as elements
        await expect(page.get_by_text('{"x":"<b>not bold</b>"}')).to_be_visible()
        await expect(page.locator("main b")).to_have_count(0)
        await axe_check(page)
        await screenshot(page, "events")
        await page.get_by_label("Event name").fill("order.placed")
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("tbody tr")).to_have_count(1)


async def _spend(
    db: asyncpg.Connection,
    *,
    task_id: str,
    key: str | None,
    model: str,
    cost: str,
    days_ago: int = 0,
    run_id: uuid.UUID | None = None,
    queue: str = "billing",
) -> None:
    # what a call admitted through its queue's budget leaves (the budget's spend is read from
    # the admissions), then the call's record (what the costs are summed from)
    await db.execute(
        """INSERT INTO taskd.llm_admissions (queue, concurrency_key, run_id, admitted_at, input,
               output, cost, settled)
           VALUES ($1, coalesce($2, ''), $3, now() - make_interval(days => $4), 1000, 200, $5,
                   true)""",
        queue,
        key,
        run_id,
        days_ago,
        Decimal(cost),
    )
    await db.execute(
        """INSERT INTO taskd.llm_calls (run_id, task_id, queue, concurrency_key, tags, model,
               kind, outcome, input_tokens, output_tokens, cost_usd, started_at, at)
           VALUES ($1, $2, $3, $4, '{vip}', $5, 'message', 'ok', 1000, 200, $6,
                   now() - make_interval(days => $7), now() - make_interval(days => $7))""",
        run_id,
        task_id,
        queue,
        key,
        model,
        Decimal(cost),
        days_ago,
    )


async def test_costs_per_day_top_spenders_and_budgets(
    page: Page, console: Console, database: str, db: asyncpg.Connection
) -> None:
    async with peer(database):
        await console.call("POST", "/api/queues/billing/pause")  # its run stays unfinished
        waiting = await console.trigger("orders.charge", {"customer": "acme", "amount": 1})
        await _spend(
            db, task_id="orders.charge", key="acme", model="claude-x", cost="1.25", run_id=waiting
        )
        await _spend(db, task_id="orders.charge", key="acme", model="claude-x", cost="3.5")
        await _spend(db, task_id="orders.charge", key="globex", model="claude-y", cost="0.4")
        await _spend(
            db, task_id="orders.charge", key="acme", model="claude-x", cost="2", days_ago=3
        )
        await page.goto("/#/costs?days=7&by=task")
        daily = page.locator(
            "section", has=page.get_by_role("heading", name="Spend per day by task")
        )
        await expect(daily).to_contain_text("Total: $7.15 over 7 days.")
        await expect(daily.locator("svg.chart polyline")).to_have_count(1)
        keys = page.locator("section", has=page.get_by_role("heading", name="Top tenants"))
        await expect(keys.locator("tbody tr").first).to_contain_text("acme")
        await expect(keys.locator("tbody tr").first).to_contain_text("$6.75")
        tasks = page.locator("section", has=page.get_by_role("heading", name="Top tasks"))
        await expect(tasks).to_contain_text("orders.charge")
        budgets = page.locator("section", has=page.get_by_role("heading", name="Budgets"))
        acme = budgets.locator("tr", has_text="acme")
        await expect(acme).to_contain_text("$5.00 per 1d")
        await expect(acme.locator("meter")).to_have_attribute("value", "4.75")
        await expect(acme).to_contain_text("(95%)")
        # per run: the most an unfinished run spent (the queued one never started: nothing)
        await expect(budgets.locator("tr", has_text="per run")).to_contain_text("orders.charge")
        await expect(budgets.locator("tr", has_text="per run")).to_contain_text("$2.50 per run")
        await axe_check(page)
        await screenshot(page, "costs")
        await page.get_by_label("Per day by", exact=True).select_option("model")
        await expect(page).to_have_url(f"{console.url}/#/costs?days=7&by=model")
        await expect(page.locator("ul.legend").first).to_contain_text("claude-x")


async def test_charts_show_the_last_hour_and_day(page: Page, console: Console) -> None:
    runs = [await console.trigger("console.echo", {"n": n}) for n in range(3)]
    failed = await console.trigger("console.fails", {"order": 1})
    for run_id in [*runs, failed]:
        await wait_for_run(console.client, run_id)
    await page.goto("/#/charts")
    card = page.locator("section", has=page.get_by_role("heading", name="Runs per minute"))
    await expect(card).to_contain_text("4 started, 3 completed, 1 failed.")
    await expect(card.locator("svg[role=img]")).to_have_attribute(
        "aria-label", "Runs started, completed and failed per minute"
    )
    # the text alternative: the same numbers in a table
    await expect(card.locator("table caption")).to_have_text(
        "Runs started, completed and failed per minute"
    )
    assert await card.locator("table tbody tr").count() == 3 * 60
    await axe_check(page)
    await screenshot(page, "charts")
    await page.get_by_role("button", name="Last day").click()
    await expect(page.get_by_role("button", name="Last day")).to_have_attribute(
        "aria-pressed", "true"
    )
    # the day is read from per-minute roll-ups (written a minute later): its numbers lag
    await expect(page.get_by_role("heading", name="Runs per 15 minutes")).to_be_visible()
    await expect(page.get_by_role("heading", name="Queue depth (due runs)")).to_be_visible()
    await expect(page.get_by_role("heading", name="Wait from due to start")).to_be_visible()

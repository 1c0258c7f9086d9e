"""The Tasks page in real Chromium: every task with its settings, a run triggered from the
page (and a payload that is not JSON refused before anything is sent), and the JSON Schema
checker (js/jsonschema.js over the vendored @cfworker/json-schema) against pydantic's own
verdicts on the same payloads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import pydantic
from playwright.async_api import Page, expect
from pydantic import BaseModel, Field

from tests.support.browser import Console, axe_check, screenshot


async def _runs_of(console: Console, task_id: str) -> list[dict[str, Any]]:
    page = await console.call("GET", f"/api/runs?task={task_id}&limit=200")
    runs: list[dict[str, Any]] = page["runs"]
    return runs


async def test_the_page_lists_every_task_with_its_settings(page: Page, console: Console) -> None:
    await page.goto("/#/tasks")
    await expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    for task_id in ("console.echo", "console.fails", "console.progress", "console.sleeps"):
        await expect(page.get_by_role("heading", name=task_id)).to_be_visible()
    fails = page.locator('[data-task="console.fails"]')
    await expect(fails).to_contain_text("default")  # its queue
    await expect(fails).to_contain_text("1 attempt")  # Retry(max_attempts=1)
    await expect(fails).to_contain_text("Any JSON")  # no payload_schema before console-fleet
    await page.get_by_label("Filter tasks").fill("prog")
    await expect(page.get_by_role("heading", name="console.progress")).to_be_visible()
    await expect(page.get_by_role("heading", name="console.echo")).to_have_count(0)
    await page.get_by_label("Filter tasks").fill("")
    await axe_check(page)
    await screenshot(page, "tasks")


async def test_a_payload_that_is_not_json_is_refused_in_the_page(
    page: Page, console: Console
) -> None:
    await page.goto("/#/tasks/console.echo")
    await expect(page.get_by_role("heading", name="Trigger a run")).to_be_visible()
    payload = page.get_by_label("Payload (JSON)")
    await payload.fill('{"order": 12,\n "note": }')
    sent: list[str] = []
    page.on(
        "request", lambda request: sent.append(request.url) if "/trigger" in request.url else None
    )
    await page.get_by_role("button", name="Trigger run").click()
    problems = page.locator("#payload-problems")
    await expect(problems).to_contain_text("Not valid JSON")
    await expect(problems).to_contain_text("line 2")
    await expect(payload).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_role("status")).to_contain_text("Not sent")
    await page.get_by_label("Delay").fill("5 parsecs")
    await expect(page.locator("#delay-problem")).to_contain_text("Not a duration")
    assert sent == []
    assert await _runs_of(console, "console.echo") == []
    await axe_check(page)
    await screenshot(page, "task-refused")


async def test_a_run_triggered_from_the_page_is_created_and_linked(
    page: Page, console: Console
) -> None:
    await page.goto("/#/tasks/console.echo")
    payload = {"customer": "acme", "note": "<script>alert(1)</script>"}
    await page.get_by_label("Payload (JSON)").fill(
        '{"customer": "acme", "note": "<script>alert(1)</script>"}'
    )
    await page.get_by_label("Delay").fill("1h")
    await page.get_by_label("Tags").fill("vip, from-console")
    await page.get_by_label("Concurrency key").fill("acme")
    await page.get_by_label("Idempotency key").fill("order-77")
    await page.get_by_role("button", name="Trigger run").click()
    link = page.locator(".trigger-result a")
    await expect(link).to_be_visible()
    run_id = uuid.UUID(await link.inner_text())
    assert await link.get_attribute("href") == f"#/runs/{run_id}"
    run = await console.client.get_run(run_id)
    assert run is not None
    assert run.task_id == "console.echo"
    assert run.payload == payload
    assert sorted(run.tags) == ["from-console", "vip"]
    assert run.concurrency_key == "acme"
    assert run.status == "queued"  # delayed an hour
    await axe_check(page)
    await screenshot(page, "task-triggered")


# ---- the checker itself, unit by unit, in the browser ------------------------------------


class Address(BaseModel):
    city: str = Field(min_length=1)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Order(BaseModel):
    """An order to charge."""

    model_config = pydantic.ConfigDict(extra="forbid")
    customer: str = Field(min_length=1, max_length=40, description="Who pays")
    amount: int = Field(ge=1, le=10_000)
    currency: Literal["EUR", "USD"] = "EUR"
    note: str | None = None
    items: list[str] = Field(default_factory=list, max_length=3)
    address: Address | None = None
    counts: dict[str, int] = {}
    due: datetime | None = None
    ref: uuid.UUID | None = None


VALID: list[Any] = [
    {"customer": "a", "amount": 1},
    {"customer": "acme", "amount": 10_000, "currency": "USD", "note": None, "items": ["x"]},
    {"customer": "a", "amount": 5, "address": {"city": "Lyon", "zip": "69001"}},
    {"customer": "a", "amount": 5, "counts": {"x": 1}, "due": "2026-12-02T10:00:00"},
    {"customer": "a", "amount": 5, "ref": "12345678123456781234567812345678"},
]
INVALID: list[tuple[Any, list[list[str]]]] = [
    ({"amount": 0}, [["customer", "is required"], ["amount", "must be ≥ 1"]]),
    ({"customer": "", "amount": 2}, [["customer", "must have at least 1 character"]]),
    ({"customer": "a", "amount": "5x"}, [["amount", "must be an integer"]]),
    (
        {"customer": "a", "amount": 1, "currency": "GBP"},
        [["currency", 'must be one of "EUR", "USD"']],
    ),
    ({"customer": "a", "amount": 1, "note": 5}, [["note", "must be a string or null"]]),
    (
        {"customer": "a", "amount": 1, "items": ["a", 1, "b", "c"]},
        [["items", "must have at most 3 items"], ["items[1]", "must be a string"]],
    ),
    (
        {"customer": "a", "amount": 1, "address": {"city": "", "zip": "x"}},
        [
            ["address.city", "must have at least 1 character"],
            ["address.zip", "must match the pattern ^[0-9]{5}$"],
        ],
    ),
    ({"customer": "a", "amount": 1, "extra": True}, [["extra", "is not an allowed property"]]),
    (
        {"customer": "a", "amount": 1, "counts": {"a b": "x"}},
        [['counts["a b"]', "must be an integer"]],
    ),
    ([1], [["", "must be an object"]]),
]


async def test_the_checker_agrees_with_pydantic(page: Page) -> None:
    schema = Order.model_json_schema()
    adapter = pydantic.TypeAdapter(Order)
    for payload in VALID:
        adapter.validate_python(payload)  # the server takes it: the page must too
    for payload, _ in INVALID:
        try:
            adapter.validate_python(payload)
        except pydantic.ValidationError:
            pass
        else:
            raise AssertionError(f"pydantic takes {payload}")
    cases = VALID + [payload for payload, _ in INVALID]
    found = await page.evaluate(
        """async ([schema, cases]) => {
            const m = await import("/console/js/jsonschema.js");
            const checker = m.compile(schema);
            return cases.map((value) => checker.check(value).map((p) => [p.where, p.message]));
        }""",
        [schema, cases],
    )
    assert found[: len(VALID)] == [[] for _ in VALID]
    assert found[len(VALID) :] == [expected for _, expected in INVALID]


async def test_the_schema_is_described_field_by_field(page: Page) -> None:
    rows, skeleton, no_schema, bad_json = await page.evaluate(
        """async (schema) => {
            const m = await import("/console/js/jsonschema.js");
            return [m.describe(schema), m.skeleton(schema), m.compile(null).check([1, "x"]),
                    m.parseJson('{"a": 1,\\n "b": }')];
        }""",
        Order.model_json_schema(),
    )
    by_path = {row["path"]: row for row in rows}
    assert by_path["customer"]["required"] is True
    assert by_path["customer"]["notes"] == ["min length 1", "max length 40"]
    assert by_path["customer"]["description"] == "Who pays"
    assert by_path["amount"]["notes"] == ["≥ 1", "≤ 10000"]
    assert by_path["address"]["type"] == "Address or null"
    assert by_path["address.zip"]["required"] is True
    assert by_path["items"]["type"] == "array of string"
    assert by_path["counts"]["type"] == "object of integer"
    assert skeleton == {"customer": "", "amount": 1}
    assert no_schema == []
    assert bad_json["ok"] is False
    assert "line 2" in bad_json["message"]


async def test_what_the_daemon_refuses_is_shown_next_to_the_payload(
    page: Page, console: Console
) -> None:
    """console.progress takes an object (dict[str, Any]): a list is refused, by the page when
    it has the task's schema, by the daemon's 422 otherwise; either way under the payload."""
    await page.goto("/#/tasks/console.progress")
    await page.get_by_label("Payload (JSON)").fill("[1, 2]")
    await page.get_by_role("button", name="Trigger run").click()
    await expect(page.locator("#payload-problems li")).to_have_count(1)
    await expect(page.locator("#payload-problems")).to_contain_text("(the payload): ")
    await expect(page.get_by_label("Payload (JSON)")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".trigger-result")).to_contain_text("Not")
    assert await _runs_of(console, "console.progress") == []

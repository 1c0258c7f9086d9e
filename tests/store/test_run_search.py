"""The console's run reads (store/run_scan.py): search inside payloads, outputs and metadata,
the bounded scan and its continuation, the filters without an index, counts per status.

Budgets are made small here (a page's ``budget``, the counts' ``budget``) so that a few dozen
runs stand for a million: what a page returns when its budget runs out is what matters.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from taskd import Client, RunStatus
from taskd.store.run_scan import parse_search
from taskd.store.runs import RunFilter, RunSearch
from taskd.store.store import Store
from tests.support.runs import each, insert_run, insert_runs


@pytest.fixture
async def store(client: Client) -> AsyncIterator[Store]:
    yield Store(client.pool)


async def ids_of(store: Store, f: RunFilter, **page: object) -> list[uuid.UUID]:
    result = await store.run_scan.page(f, **page)  # type: ignore[arg-type]
    return [run.id for run in result.runs]


def test_what_an_operator_types_becomes_a_search() -> None:
    run_id = uuid.uuid4()
    assert parse_search(f" {run_id} ") == RunSearch(run_id=run_id)
    assert parse_search('{"customer":"acme"}').contains == '{"customer":"acme"}'
    assert parse_search("[1, 2]").contains == "[1,2]"
    assert parse_search("acme").value == '"acme"'  # not JSON: taken as a JSON string
    assert parse_search('"acme"').value == '"acme"'
    assert parse_search("42").value == "42"
    assert parse_search("acme", ["output"]).fields == ("output",)
    with pytest.raises(ValueError, match="search_in"):
        parse_search("acme", ["payload", "headers"])
    with pytest.raises(ValueError, match="empty"):
        parse_search("  ")


async def test_search_finds_a_run_by_what_its_payload_output_or_metadata_holds(
    db: asyncpg.Connection, store: Store
) -> None:
    await insert_runs(db, 30, task_id="orders", payload=each([f'{{"n": {i}}}' for i in range(30)]))
    acme = await insert_run(db, task_id="orders", payload='{"customer": "acme", "n": 700}')
    nested = await insert_run(
        db, task_id="orders", payload='{"order": {"customer": "acme", "items": ["a", "b"]}}'
    )
    by_output = await insert_run(
        db, task_id="orders", status="completed", output='{"invoice": "INV-9"}'
    )
    by_metadata = await insert_run(db, task_id="orders", metadata='{"stage": "acme"}')

    def search(text: str, fields: tuple[str, ...] = ("payload", "output", "metadata")) -> RunFilter:
        return RunFilter(search=parse_search(text, fields))

    # typed as JSON: containment from the top of the document
    assert await ids_of(store, search('{"customer":"acme"}')) == [acme]
    assert await ids_of(store, search('{"order": {"customer": "acme"}}')) == [nested]
    # a bare word: that value anywhere, at any depth, in any of the three
    assert await ids_of(store, search("acme")) == [by_metadata, nested, acme]
    assert await ids_of(store, search("acme", ("payload",))) == [nested, acme]
    assert await ids_of(store, search("INV-9", ("output",))) == [by_output]
    assert await ids_of(store, search("INV-9", ("payload",))) == []
    assert await ids_of(store, search('"b"')) == [nested]  # an array's element
    assert await ids_of(store, search("700")) == [acme]  # a number, not the text "700"
    assert await ids_of(store, search("acm")) == []  # equal values, not substrings
    # a run id: that run (and nothing when it does not exist)
    assert await ids_of(store, search(str(by_output))) == [by_output]
    assert await ids_of(store, search(str(uuid.uuid4()))) == []
    # combined with the other filters
    assert await ids_of(
        store, RunFilter(search=parse_search("acme"), statuses=[RunStatus.QUEUED])
    ) == [by_metadata, nested, acme]
    assert await ids_of(store, RunFilter(search=parse_search("acme"), task_id="other")) == []


async def test_a_page_that_runs_out_of_budget_says_so_and_its_cursor_continues(
    db: asyncpg.Connection, store: Store
) -> None:
    old = await insert_run(db, task_id="t", payload='{"customer": "acme"}')
    await insert_runs(db, 25, task_id="t", payload='{"customer": "other"}')
    recent = await insert_run(db, task_id="t", payload='{"customer": "acme"}')
    f = RunFilter(search=parse_search('{"customer": "acme"}'))

    first = await store.run_scan.page(f, limit=5, budget=10)
    assert [run.id for run in first.runs] == [recent]
    assert first.scanned == 10 and not first.complete and first.next_cursor is not None
    second = await store.run_scan.page(f, limit=5, budget=10, before=first.next_cursor)
    assert second.runs == [] and second.scanned == 10 and not second.complete
    third = await store.run_scan.page(f, limit=5, budget=10, before=second.next_cursor)
    # the rest of the table: 7 rows, the old match the last; nothing after it
    assert [run.id for run in third.runs] == [old]
    assert third.scanned == 7 and third.complete and third.next_cursor is None

    # a full page inside the budget: complete, the cursor after its last run
    everything = RunFilter(task_id="t")
    page = await store.run_scan.page(everything, limit=5, budget=10)
    assert len(page.runs) == 5 and page.complete and page.next_cursor == page.runs[-1].id
    assert page.scanned == 6  # one more than the page: is there a next one?


async def test_filters_without_an_index_page_through_every_match(
    db: asyncpg.Connection, store: Store
) -> None:
    statuses = ["completed", "expired", "completed", "failed"] * 10
    keys = ["tenant-1" if i % 3 == 0 else "" for i in range(40)]
    ids = await insert_runs(
        db, 40, task_id="t", queue="q", status=each(statuses), concurrency_key=each(keys)
    )
    newest_first = list(reversed(ids))
    expired = [i for i, s in zip(ids, statuses, strict=True) if s == "expired"][::-1]
    keyed = [i for i, k in zip(ids, keys, strict=True) if k][::-1]

    async def all_pages(f: RunFilter, budget: int) -> list[uuid.UUID]:
        found: list[uuid.UUID] = []
        cursor = None
        for _ in range(100):
            page = await store.run_scan.page(f, limit=3, budget=budget, before=cursor)
            found += [run.id for run in page.runs]
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor
        raise AssertionError("no end")

    for budget in (4, 7, 1000):
        assert await all_pages(RunFilter(statuses=[RunStatus.EXPIRED]), budget) == expired
        assert await all_pages(RunFilter(concurrency_key="tenant-1"), budget) == keyed
        assert await all_pages(RunFilter(queue="q"), budget) == newest_first
    summary = (await store.run_scan.page(RunFilter(concurrency_key="tenant-1"), limit=1)).runs[0]
    assert summary.concurrency_key == "tenant-1"


async def test_indexed_filters_with_few_runs_answer_complete_pages_at_once(
    db: asyncpg.Connection, store: Store
) -> None:
    await insert_runs(db, 30, task_id="t", status="completed")
    vip = await insert_run(db, task_id="t", status="completed", tags=["vip"])
    await insert_runs(db, 30, task_id="t", status="completed")
    queued = await insert_run(db, task_id="t")
    await insert_runs(db, 30, task_id="t", status="completed")

    tagged = await store.run_scan.page(RunFilter(tag="vip"), budget=5)
    assert [run.id for run in tagged.runs] == [vip] and tagged.complete
    waiting = await store.run_scan.page(RunFilter(statuses=[RunStatus.QUEUED]), budget=5)
    assert [run.id for run in waiting.runs] == [queued] and waiting.complete


async def test_counts_are_exact_when_narrow_and_estimated_when_they_would_read_the_history(
    db: asyncpg.Connection, store: Store
) -> None:
    await insert_runs(db, 30, task_id="a", status="completed")
    await insert_runs(db, 5, task_id="a", status="failed")
    await insert_runs(db, 4, task_id="a")
    await insert_runs(db, 2, task_id="b", status="waiting", concurrency_key="k")
    await db.execute("ANALYZE taskd.runs")

    exact = await store.run_scan.counts(RunFilter(task_id="a"), budget=100)
    assert exact.estimated == []
    assert exact.counts == {
        "queued": 4, "executing": 0, "waiting": 0, "completed": 30, "failed": 5,
        "canceled": 0, "expired": 0,
    }  # fmt: skip

    broad = await store.run_scan.counts(RunFilter(), budget=10)
    assert sorted(broad.estimated) == ["canceled", "completed", "expired", "failed"]
    assert broad.counts["queued"] == 4 and broad.counts["waiting"] == 2  # partial indexes
    assert broad.counts["completed"] == pytest.approx(30, abs=3)  # the statistics' estimate

    # a table young enough to count is counted: no "~1" for statuses nobody has
    young = await store.run_scan.counts(RunFilter(), budget=100)
    assert young.estimated == []
    assert young.counts == {
        "queued": 4, "executing": 0, "waiting": 2, "completed": 30, "failed": 5,
        "canceled": 0, "expired": 0,
    }  # fmt: skip

    keyed = await store.run_scan.counts(
        RunFilter(concurrency_key="k", statuses=[RunStatus.WAITING]), budget=10
    )
    assert keyed.counts["waiting"] == 2 and keyed.counts["completed"] == 0
    assert keyed.estimated == []


async def test_bulk_counts_and_batches_go_through_every_match(
    db: asyncpg.Connection, store: Store
) -> None:
    ids = await insert_runs(
        db, 60, task_id="t", status=each(["failed", "completed"] * 30), payload='{"x": 1}'
    )
    failed = [i for n, i in enumerate(ids) if n % 2 == 0][::-1]
    await db.execute("ANALYZE taskd.runs")  # the estimate's number of runs to read
    f = RunFilter(statuses=[RunStatus.FAILED])
    assert await store.run_scan.count_matching(f, 100, budget=1000) == (30, False, False)
    assert await store.run_scan.count_matching(f, 20, budget=1000) == (20, True, False)
    number, capped, estimated = await store.run_scan.count_matching(f, 100, budget=10)
    assert estimated and not capped and 20 <= number <= 40  # 5 of the newest 10, times 60/10
    # unfinished runs (a bulk cancel) are counted exactly through their partial indexes: the
    # newest runs hold most of them, an extrapolation from those would be far off
    await insert_runs(db, 12, task_id="t")
    unfinished = RunFilter(statuses=[RunStatus.QUEUED, RunStatus.WAITING])
    assert await store.run_scan.count_matching(unfinished, 100, budget=10) == (12, False, False)
    assert await store.run_scan.count_matching(unfinished, 5, budget=10) == (5, True, False)
    batches: list[uuid.UUID] = []
    cursor = None
    while batch := await store.run_scan.matching_ids(f, before=cursor, limit=7):
        batches += batch
        cursor = batch[-1]
    assert batches == failed


async def test_list_runs_takes_the_new_filters_too(db: asyncpg.Connection, client: Client) -> None:
    keyed = await insert_run(db, task_id="t", concurrency_key="tenant-9", payload='{"a": "z"}')
    await insert_run(db, task_id="t", payload='{"a": "z"}')
    found = await client.list_runs(key="tenant-9", search='{"a": "z"}')
    assert [run.id for run in found] == [keyed]
    assert len(await client.list_runs(search="z", search_in=["payload"])) == 2
    assert await client.list_runs(search="z", search_in=["output"]) == []

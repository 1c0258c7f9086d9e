"""The console's reads of runs: filtered pages answered by a bounded scan, counts per status,
and the runs a bulk action touches.

No index serves a search inside payloads (a GIN index would cost every enqueue), nor most
filters on finished runs (status, concurrency key, queue). So a page walks the runs newest
first by the primary key (ids are UUIDv7: creation order, the heap's order too) and examines
at most a scan budget of rows; it may come back with fewer runs than asked, ``complete``
false and a cursor that continues the scan. A filter an index answers with a small set
(unfinished statuses, a task, a tag, an event, a schedule, an error group, a run id) is
probed first: when the set holds at most ``CANDIDATE_CAP`` runs, those ids are the driving
set and the page is complete.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from taskd.ids import uuid_at
from taskd.models import RunStatus, RunSummary
from taskd.store.queries import load
from taskd.store.runs import RunFilter, RunSearch

SQL = load("run_scan")

SCAN_BUDGET = 30_000
"""Most rows one page examines (bench/console_runs_scan.py, 1,000,000 runs with payloads of
~300 bytes: 50,000 filtered by status, key or containment took 30-45 ms on an idle machine,
twice that on a loaded one; 30,000 leaves room under 100 ms)."""
VALUE_SEARCH_BUDGET = 12_000
"""The same for a search of a JSON scalar at any depth (a jsonpath walk of each document:
20,000 runs took ~45 ms idle)."""


def budget_for(f: RunFilter) -> int:
    """The scan budget of a page of ``f``."""
    if f.search is not None and f.search.value is not None:
        return VALUE_SEARCH_BUDGET
    return SCAN_BUDGET


CANDIDATE_CAP = 5_000
"""A filter an index answers drives the page when it matches at most this many runs."""
UNFINISHED = (RunStatus.QUEUED, RunStatus.EXECUTING, RunStatus.WAITING)
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.EXPIRED)
_STATUS_INDEXED = {
    RunStatus.QUEUED: "r.status = 'queued'",
    RunStatus.WAITING: "r.status = 'waiting'",
    RunStatus.EXECUTING: "r.lease_expires_at IS NOT NULL AND r.status = 'executing'",
}


@dataclass
class ScanPage:
    runs: list[RunSummary]
    next_cursor: uuid.UUID | None
    scanned: int
    complete: bool


@dataclass
class StatusCounts:
    counts: dict[str, int]
    estimated: list[str] = field(default_factory=list)


class _Conditions:
    """SQL conditions on ``r`` and their arguments, numbered after ``first`` parameters."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.args: list[Any] = []
        self.items: list[str] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${self.first + len(self.args)}"

    def add(self, condition: str, *values: Any) -> None:
        for value in values:
            condition = condition.replace("$?", self.param(value), 1)
        self.items.append(condition)

    def sql(self) -> str:
        return " AND ".join(f"({c})" for c in self.items) if self.items else "true"

    def after(self) -> int:
        """The number of the last parameter bound so far."""
        return self.first + len(self.args)


def _filter_conditions(
    f: RunFilter, c: _Conditions, *, statuses: bool = True, search: bool = True
) -> None:
    """Every filter of ``f`` but the id range (the driving part's) as conditions on ``r``."""
    if statuses and f.statuses:
        c.add("r.status = ANY($?::text[])", [RunStatus(s).value for s in f.statuses])
    if f.task_id is not None:
        c.add("r.task_id = $?", f.task_id)
    if f.tag is not None:
        c.add("r.tags @> ARRAY[$?::text] AND r.tags <> '{}'", f.tag)
    if f.queue is not None:
        c.add("r.queue = $?", f.queue)
    if f.schedule_id is not None:
        c.add("r.schedule_id = $?", f.schedule_id)
    # Event and error group: a lookup per run examined (the events' and the attempts' primary
    # keys), not `IN (SELECT ...)`: that reads every event of the name (or every attempt of the
    # group) for each page, and when they do not fit in work_mem to hash, scans them again for
    # each run examined (an event of 1,700,000 runs: past the statement timeout).
    if f.event is not None:
        c.add(
            "EXISTS (SELECT FROM taskd.events e WHERE e.id = r.event_id AND e.name = $?)",
            f.event,
        )
    if f.concurrency_key is not None:
        c.add("r.concurrency_key = $?", f.concurrency_key)
    if f.error_group is not None:
        c.add(
            "EXISTS (SELECT FROM taskd.attempts a WHERE a.run_id = r.id AND a.fingerprint = $?)",
            f.error_group,
        )
    if f.version is not None:
        c.add("r.version = $?", f.version)
    if search and f.search is not None:
        c.items.append(f.search.condition(c.param))


def _range_conditions(f: RunFilter, before: uuid.UUID | None, c: _Conditions) -> None:
    if f.created_after is not None:
        c.add("r.id >= $?", uuid_at(f.created_after))
    if f.created_before is not None:
        c.add("r.id < $?", uuid_at(f.created_before))
    if before is not None:
        c.add("r.id < $?", before)


def _in_range(run_id: uuid.UUID, f: RunFilter, before: uuid.UUID | None) -> bool:
    if f.created_after is not None and run_id < uuid_at(f.created_after):
        return False
    if f.created_before is not None and run_id >= uuid_at(f.created_before):
        return False
    return before is None or run_id < before


class RunScanStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # candidates -----------------------------------------------------------------------------

    async def candidates(
        self, f: RunFilter, cap: int = CANDIDATE_CAP
    ) -> builtins.list[uuid.UUID] | None:
        """The ids of a filter's small set (at most ``cap``) if one of the indexed filters
        has one: the intersection of every such set. None when none does."""
        found: set[uuid.UUID] | None = None

        def narrow(ids: Sequence[uuid.UUID] | None) -> None:
            nonlocal found
            if ids is not None:
                found = set(ids) if found is None else found & set(ids)

        if f.search is not None and f.search.run_id is not None:
            narrow([f.search.run_id])
        if f.error_group is not None:
            narrow(await self._probe(SQL["probe_error_group"], f.error_group, cap))
        if f.statuses and all(RunStatus(s) in UNFINISHED for s in f.statuses):
            narrow(await self._probe(SQL["probe_statuses"], [s.value for s in f.statuses], cap))
        # (a tag, an event or a schedule the statistics say is common is not probed: the
        # bitmap of a tag on 100,000 runs alone costs more than the page)
        if f.task_id is not None and await self._few(cap, "r.task_id = $?", f.task_id):
            narrow(await self._probe(SQL["probe_task"], f.task_id, cap))
        if f.tag is not None and await self._few(cap, "r.tags @> ARRAY[$?::text]", f.tag):
            narrow(await self._probe(SQL["probe_tag"], f.tag, cap))
        if f.event is not None and await self._few(
            cap, "r.event_id IN (SELECT e.id FROM taskd.events e WHERE e.name = $?)", f.event
        ):
            narrow(await self._probe(SQL["probe_event"], f.event, cap))
        if f.schedule_id is not None and await self._few(cap, "r.schedule_id = $?", f.schedule_id):
            narrow(await self._probe(SQL["probe_schedule"], f.schedule_id, cap))
        return sorted(found, reverse=True) if found is not None else None

    async def _few(self, cap: int, condition: str, value: Any) -> bool:
        c = _Conditions(0)
        c.add(condition, value)
        return await self._plan_rows(c) <= 4 * cap

    async def _probe(self, sql: str, value: Any, cap: int) -> builtins.list[uuid.UUID] | None:
        rows = await self.pool.fetch(sql, value, cap + 1)
        if len(rows) > cap:
            return None
        return [row[0] for row in rows]

    def _driving(
        self,
        f: RunFilter,
        before: uuid.UUID | None,
        candidates: Sequence[uuid.UUID] | None,
        first: int,
    ) -> _Conditions:
        """The driving set: candidate ids, or an id range of the primary key (its order is
        the heap's: neighbours share pages; a task's runs through runs_task_idx would not, and
        the planner may walk the primary key for them anyway, unbounded)."""
        driving = _Conditions(first)
        if candidates is not None:
            driving.add("r.id = ANY($?::uuid[])", list(candidates))
        else:
            _range_conditions(f, before, driving)
        return driving

    def _statement(
        self,
        name: str,
        f: RunFilter,
        before: uuid.UUID | None,
        candidates: Sequence[uuid.UUID] | None,
        first: int,
    ) -> tuple[str, list[Any]]:
        driving = self._driving(f, before, candidates, first)
        hit = _Conditions(driving.after())
        _filter_conditions(f, hit)
        sql = SQL[name].replace("{driving}", driving.sql()).replace("{hit}", hit.sql())
        return sql, [*driving.args, *hit.args]

    # the page ---------------------------------------------------------------------------------

    async def page(
        self,
        f: RunFilter,
        *,
        before: uuid.UUID | None = None,
        limit: int = 50,
        budget: int | None = None,
    ) -> ScanPage:
        """Up to ``limit`` runs matching ``f``, newest first, below ``before``; at most
        ``budget`` rows examined (``complete`` false when the budget ran out first)."""
        budget = budget or budget_for(f)
        candidates = await self.candidates(f)
        if candidates is not None:
            candidates = [i for i in candidates if _in_range(i, f, before)]
            if not candidates:
                return ScanPage([], None, 0, True)
            budget = len(candidates)
        sql, args = self._statement("scan_page", f, before, candidates, 2)
        rows = await self.pool.fetch(sql, budget, limit + 1, *args)
        hits = [row["id"] for row in rows if row["hit"]]
        last = rows[-1] if rows else None
        scanned = last["n"] if last is not None else 0
        if len(hits) > limit:
            listed, next_cursor, complete = hits[:limit], hits[limit - 1], True
            scanned = next(row["n"] for row in rows if row["id"] == hits[limit])
        elif last is not None and not last["last"] and last["n"] == budget:
            # the budget ran out: continue below the last row examined
            listed, next_cursor, complete = hits, last["id"], len(hits) == limit
        else:
            listed, next_cursor, complete = hits, None, True
        runs = [RunSummary(**dict(row)) for row in await self.pool.fetch(SQL["summaries"], listed)]
        return ScanPage(runs, next_cursor, scanned, complete)

    # counts -------------------------------------------------------------------------------------

    async def counts(self, f: RunFilter, *, budget: int | None = None) -> StatusCounts:
        """The runs matching ``f`` (its search aside) per status: exact when the filters
        narrow them to at most ``budget`` runs or to a small indexed set; otherwise exact for
        the unfinished statuses (their partial indexes, up to 100,000) and estimated by the
        planner's statistics for the finished ones."""
        f = _without_search(f)
        budget = budget or budget_for(f)
        wanted = [RunStatus(s) for s in f.statuses] if f.statuses else list(RunStatus)
        result = StatusCounts({s.value: 0 for s in RunStatus})
        candidates = await self.candidates(f)
        if candidates is not None:
            candidates = [i for i in candidates if _in_range(i, f, None)]
        if candidates is not None or await self._narrow(f, budget):
            sql, args = self._statement("count_scan", f, None, candidates, 1)
            row = await self.pool.fetchrow(sql, budget, *args)
            assert row is not None
            if candidates is not None or row["scanned"] <= budget:
                result.counts.update({s.value: row[s.value] for s in wanted})
                return result
        for status in wanted:
            if status in UNFINISHED:
                number = await self._count_unfinished(f, status, 100_000)
                if number is not None:
                    result.counts[status.value] = number
                    continue
            result.counts[status.value] = await self._estimate(f, status)
            result.estimated.append(status.value)
        return result

    async def _narrow(self, f: RunFilter, budget: int) -> bool:
        """Whether the driving set (an id range, or every run) is estimated to hold at most
        twice the budget: then an exact count is worth a scan (a young table's counts are
        exact, not the planner's floor of one row per status)."""
        c = _Conditions(0)
        _range_conditions(f, None, c)
        return await self._plan_rows(c) <= 2 * budget

    async def _count_unfinished(self, f: RunFilter, status: RunStatus, cap: int) -> int | None:
        c = _Conditions(1)
        _range_conditions(f, None, c)
        _filter_conditions(f, c, statuses=False)
        sql = (
            SQL["count_status"]
            .replace("{status}", _STATUS_INDEXED[status])
            .replace("{hit}", c.sql())
        )
        number: int = await self.pool.fetchval(sql, cap + 1, *c.args)
        return number if number <= cap else None

    async def _estimate(self, f: RunFilter, status: RunStatus) -> int:
        c = _Conditions(0)
        c.add("r.status = $?", status.value)
        _range_conditions(f, None, c)
        _filter_conditions(f, c, statuses=False)
        return await self._plan_rows(c)

    async def _plan_rows(self, c: _Conditions) -> int:
        plan = await self.pool.fetchval(SQL["estimate"].replace("{hit}", c.sql()), *c.args)
        parsed = orjson.loads(plan) if isinstance(plan, str | bytes) else plan
        return int(parsed[0]["Plan"]["Plan Rows"])

    # bulk -------------------------------------------------------------------------------------

    async def count_matching(
        self, f: RunFilter, cap: int, *, budget: int | None = None
    ) -> tuple[int, bool, bool]:
        """How many runs match ``f``, up to ``cap``: (number, capped, estimated). Exact when
        an indexed filter gives a small set or the driving set holds at most the scan budget
        (``budget``); else the matches among the newest ``budget`` runs, extrapolated to the
        planner's estimate of the driving set (estimated)."""
        budget = budget or budget_for(f)
        candidates = await self.candidates(f)
        if candidates is not None:
            candidates = [i for i in candidates if _in_range(i, f, None)]
            if not candidates:
                return 0, False, False
            sql, args = self._statement("count_matching", f, None, candidates, 1)
            number: int = await self.pool.fetchval(sql, cap + 1, *args)
            return min(number, cap), number > cap, False
        if f.statuses and all(RunStatus(s) in UNFINISHED for s in f.statuses):
            # (a bulk cancel) exact through the statuses' partial indexes: the newest runs
            # hold most of the unfinished ones, an extrapolation from them would be wrong
            total = 0
            for status in dict.fromkeys(RunStatus(s) for s in f.statuses):
                counted = await self._count_unfinished(f, status, cap)
                if counted is None:
                    return cap, True, False
                total += counted
            return min(total, cap), total > cap, False
        sql, args = self._statement("count_bounded", f, None, None, 1)
        row = await self.pool.fetchrow(sql, budget + 1, *args)
        assert row is not None
        scanned, hits = row["scanned"], row["hits"]
        if scanned <= budget or hits >= cap:
            return min(hits, cap), hits > cap or (hits == cap and scanned > budget), False
        c = _Conditions(0)
        _range_conditions(f, None, c)
        estimate = round(hits * max(await self._plan_rows(c), scanned) / scanned)
        return min(estimate, cap), estimate > cap, True

    async def matching_ids(
        self, f: RunFilter, *, before: uuid.UUID | None, limit: int
    ) -> builtins.list[uuid.UUID]:
        """The next ``limit`` runs matching ``f`` below ``before``, newest first (a full
        scan if need be: a bulk action goes through every match)."""
        candidates = await self.candidates(f)
        if candidates is not None:
            candidates = [i for i in candidates if _in_range(i, f, before)]
            if not candidates:
                return []
        sql, args = self._statement("matching_ids", f, before, candidates, 1)
        return [row[0] for row in await self.pool.fetch(sql, limit, *args)]


def _without_search(f: RunFilter) -> RunFilter:
    import dataclasses

    return dataclasses.replace(f, search=None) if f.search is not None else f


def parse_search(text: str, fields: Sequence[str] = ("payload", "output", "metadata")) -> RunSearch:
    """What an operator typed in the search box, as a RunSearch:

    * a run id (a UUID) -> that run;
    * JSON that is an object or an array (``{"customer": "acme"}``) -> runs whose payload,
      output or metadata contains it (jsonb ``@>``: the same keys with the same values, at
      the top level of the object, deeper objects contained in the same way);
    * a JSON scalar (``42``, ``true``, ``"acme"``), or any other text taken as a JSON string
      (``acme`` is ``"acme"``) -> runs where it is a value at any depth (equal, not a
      substring).
    """
    text = text.strip()
    if not text:
        raise ValueError("search: empty")
    unknown = [name for name in fields if name not in ("payload", "output", "metadata")]
    if unknown or not fields:
        raise ValueError(
            f"search_in: {', '.join(unknown) or 'empty'}: expected payload, output, metadata"
        )
    fields = tuple(dict.fromkeys(fields))
    try:
        return RunSearch(run_id=uuid.UUID(text), fields=fields)
    except ValueError:
        pass
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return RunSearch(value=orjson.dumps(text).decode(), fields=fields)
    encoded = orjson.dumps(value).decode()
    if isinstance(value, dict | list):
        return RunSearch(contains=encoded, fields=fields)
    return RunSearch(value=encoded, fields=fields)

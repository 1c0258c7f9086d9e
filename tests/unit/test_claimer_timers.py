"""The claimer's nudge timers (retries falling due, rate windows opening) under uvloop, the
loop `taskd run` uses: a delay below a millisecond must nudge the claimer, not crash it (uvloop
answers such a call_later with a plain Handle, which has no when())."""

from __future__ import annotations

import asyncio
import uuid

import uvloop

from taskd.config import WorkerSettings
from taskd.sdk.registry import Registry
from taskd.worker.claimer import Claimer


def test_nudge_timers_of_any_delay_nudge_the_claimer_under_uvloop() -> None:
    async def main() -> int:
        claimer = Claimer(None, Registry(), WorkerSettings(), uuid.uuid4())  # type: ignore[arg-type]
        before = claimer._nudges
        await asyncio.sleep(0)  # a fresh loop iteration: uvloop's clock is up to date
        # a timer below a millisecond, then others while it is pending: later, then earlier
        for delay in (0.0003, 0.02, 0.0001, 0.0002):
            claimer._nudge_in(delay)
        # until the four have fired (a slow machine takes longer), at most 10 s
        for _ in range(2000):
            if claimer._nudges - before >= 4:
                break
            await asyncio.sleep(0.005)
        return claimer._nudges - before

    assert uvloop.run(main()) == 4

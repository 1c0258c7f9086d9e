"""What a running daemon says about itself: readiness (/readyz), the STATUS= line systemd
shows, and the counters its parts keep for /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from taskd.store.database import DB_ERRORS
from taskd.store.store import Store

if TYPE_CHECKING:
    from taskd.admin.schemas import Readiness
    from taskd.app import Daemon


async def readiness(daemon: Daemon, store: Store) -> Readiness:
    from taskd.admin.schemas import Readiness  # loaded with the admin endpoint, its caller

    database = False
    with anyio.move_on_after(2):
        try:
            await store.pool.fetchval("SELECT 1")
            database = True
        except DB_ERRORS:
            pass
    listener = daemon.listener is not None and daemon.listener.up
    worker_lock = daemon.lock is not None and daemon.lock.held
    stopping = daemon.stopping
    ready = database and listener and worker_lock and daemon.reconciled and not stopping
    if daemon.metrics is not None:
        daemon.metrics.ready.set(1 if ready else 0)
    return Readiness(
        ready=ready,
        database=database,
        listener=listener,
        worker_lock=worker_lock,
        reconciled=daemon.reconciled,
        draining=stopping,
    )


def counters(daemon: Daemon) -> dict[str, float]:
    """Counters the parts keep themselves, for the metrics (read at scrape time)."""
    if daemon.metrics is not None:
        if daemon.in_flight is not None:
            daemon.metrics.pool_in_use.set(daemon.in_flight.in_use)
            daemon.metrics.pool_limit.set(daemon.in_flight.capacity)
        daemon.metrics.loop_lag.set(daemon.notifier.max_lag)
    return {
        "listener_reconnects": daemon.listener.reconnects if daemon.listener is not None else 0,
        "stream_clients_dropped": daemon.changes.dropped_total,
        "run_log_lines_dropped": daemon.log_writer.dropped if daemon.log_writer else 0,
        "pruned_runs": daemon.pruner.pruned["runs"] if daemon.pruner else 0,
    }


def status_line(daemon: Daemon) -> str:
    """Live counts for systemd's STATUS= (shown by `systemctl status taskd`)."""
    if daemon.in_flight is None or daemon.completer is None:
        return "starting"
    listener = "up" if daemon.listener is not None and daemon.listener.up else "DOWN"
    lock = "held" if daemon.lock is not None and daemon.lock.held else "LOST"
    return (
        f"{daemon.in_flight.in_use}/{daemon.in_flight.capacity} running, "
        f"{daemon.completer.completed_total} done; listener {listener}, worker lock {lock}, "
        f"loop lag max {daemon.notifier.max_lag * 1000:.0f} ms"
    )

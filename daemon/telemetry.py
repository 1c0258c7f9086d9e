"""What the daemon's parts report for its metrics, without depending on how they are exported.

The parts call these hooks on their paths; the admin server's metrics (daemon.admin.metrics)
override them. This base ignores everything, so a daemon without the admin endpoint pays
nothing for it.
"""

from __future__ import annotations


class Telemetry:
    def claimed(self, count: int) -> None:
        """A claim returned ``count`` runs."""

    def db_error(self, component: str) -> None:
        """A database call of ``component`` (claim, complete, heartbeat...) failed."""

    def log_lines_dropped(self, count: int) -> None:
        """Run log lines that could not be stored (the buffer was full)."""

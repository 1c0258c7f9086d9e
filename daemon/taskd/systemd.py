"""sd_notify spoken by the daemon itself: READY, STATUS, STOPPING and the watchdog.

systemd gives a ``Type=notify`` service the address of a unix datagram socket in
``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``) and, with
``WatchdogSec=``, the watchdog period in ``WATCHDOG_USEC``. Each notification is one datagram of
``KEY=value`` lines. No libsystemd: the protocol is a ``sendto`` on an ``AF_UNIX`` socket.

The watchdog is fed from the event loop (:meth:`SystemdNotifier.run_watchdog`), never from a
thread: a loop blocked by a task's synchronous code stops feeding it and systemd restarts the
daemon, which is the point. The same loop measures how late its own wake-ups are, so a block too
short for the watchdog is still logged and exposed (``max_lag``, ``last_lag``).

Outside systemd (no ``NOTIFY_SOCKET``) the notifier is disabled and every send is a no-op.
Sending never raises into the daemon: a missing socket is logged once and ignored.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import anyio

log = logging.getLogger("taskd.systemd")
loop_log = logging.getLogger("taskd.loop")

#: Wake-up period of :meth:`SystemdNotifier.run_watchdog` when the watchdog is off or slower.
#: A block is seen only when it covers a wake-up, and is measured short by up to one period,
#: so the period must stay small beside the 1 s warning threshold. A few wake-ups a second
#: cost nothing.
LAG_TICK = 0.25


class SystemdNotifier:
    """Sends sd_notify messages to systemd; every method is a no-op when disabled."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        """``address`` as in ``NOTIFY_SOCKET`` (``/path`` or ``@abstract``); None disables.

        ``watchdog_usec`` is systemd's ``WATCHDOG_USEC``; WATCHDOG=1 goes out at half of it.
        """
        self._address = _socket_address(address) if address else None
        self.enabled: bool = self._address is not None
        self.watchdog_interval: float | None = (
            watchdog_usec / 2_000_000 if self.enabled and watchdog_usec else None
        )
        #: How late the last wake-up of :meth:`run_watchdog` was, in seconds.
        self.last_lag: float = 0.0
        #: The latest wake-up seen so far, in seconds.
        self.max_lag: float = 0.0
        self._socket: socket.socket | None = None
        self._failing = False  # a send failed; logged once until one succeeds again

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """The notifier systemd asked for: disabled when ``NOTIFY_SOCKET`` is unset.

        The watchdog is off when ``WATCHDOG_USEC`` is unset or invalid, or when
        ``WATCHDOG_PID`` names another process (the variables were inherited, not meant for us).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        try:
            watchdog_usec = int(env.get("WATCHDOG_USEC", "")) or None
        except ValueError:
            pass
        if watchdog_usec is not None and watchdog_usec < 0:
            watchdog_usec = None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            watchdog_usec = None
        return cls(address, watchdog_usec)

    def ready(self, status: str | None = None) -> None:
        """Startup is complete (migrations, reconciliation, first LISTEN): READY=1."""
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """A one-line status shown by ``systemctl status``."""
        self._send(None, text)

    def stopping(self, status: str | None = None) -> None:
        """The daemon is draining: STOPPING=1."""
        self._send("STOPPING=1", status)

    def watchdog(self) -> None:
        """Feed the watchdog: WATCHDOG=1."""
        self._send("WATCHDOG=1", None)

    async def run_watchdog(
        self,
        status: Callable[[], str] | None = None,
        status_every: float = 5.0,
        *,
        lag_warning: float = 1.0,
    ) -> None:
        """Forever: feed the watchdog, send ``status()``, measure the event loop's lag.

        WATCHDOG=1 goes out every ``watchdog_interval`` seconds from this task, so a blocked
        loop misses it. Each wake-up later than ``lag_warning`` seconds is logged at warning on
        ``taskd.loop``. Runs (measuring lag, sending status) even when the watchdog is off.
        """
        watchdog_every = self.watchdog_interval
        tick = LAG_TICK if watchdog_every is None else min(LAG_TICK, watchdog_every)
        slack = tick / 2  # a wake-up a hair early must not skip a beat
        now = anyio.current_time()
        next_watchdog = now
        next_status = now
        while True:
            if watchdog_every is not None and now + slack >= next_watchdog:
                self.watchdog()
                next_watchdog = now + watchdog_every
            if status is not None and self.enabled and now + slack >= next_status:
                self._send_status(status)
                next_status = now + status_every
            due = now + tick
            await anyio.sleep(tick)
            now = anyio.current_time()
            self._record_lag(max(0.0, now - due), lag_warning)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _record_lag(self, lag: float, threshold: float) -> None:
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if lag > threshold:
            loop_log.warning(
                "event loop blocked for %.1f s: a task is running blocking code; "
                "use anyio.to_thread",
                lag,
            )

    def _send_status(self, status: Callable[[], str]) -> None:
        try:
            text = status()
        except Exception:  # the status line is cosmetic; the watchdog must go on
            log.warning("the sd_notify status callback failed", exc_info=True)
            return
        self.status(text)

    def _send(self, state: str | None, status: str | None) -> None:
        if self._address is None:
            return
        lines = [state] if state else []
        if status is not None:
            # One datagram is newline-separated KEY=value lines: a newline would end STATUS.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Never wait on systemd from the event loop: a full queue drops the message.
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "sd_notify to %s failed (%s); carrying on without telling systemd",
                    _printable(self._address),
                    exc,
                )
            return
        if self._failing:
            self._failing = False
            log.info("sd_notify to %s works again", _printable(self._address))


def _socket_address(value: str) -> str | None:
    """``NOTIFY_SOCKET`` as a socket address: ``@name`` is the abstract name ``\\0name``."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd 253+ may hand out vsock: addresses (for VMs); they are not spoken here.
    log.warning("NOTIFY_SOCKET=%s is not a unix socket; sd_notify is disabled", value)
    return None


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


__all__ = ["SystemdNotifier"]

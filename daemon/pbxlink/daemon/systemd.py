"""systemd's notify protocol (sd_notify(3)), written out: it is one datagram per message.

``READY=1`` once the daemon truly serves, ``WATCHDOG=1`` from the event loop every half
``WATCHDOG_USEC`` (sd_watchdog_enabled(3)), ``RELOADING=1`` + ``MONOTONIC_USEC`` around a SIGHUP
reload, ``STOPPING=1`` on shutdown, ``STATUS=…`` for ``systemctl status``. Outside systemd
(no ``$NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends state changes to the service manager. Build with :meth:`from_environment`."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Read ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``/``$WATCHDOG_PID`` (for this process)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | bytes | None = None
        if raw.startswith("@"):
            address = b"\0" + raw[1:].encode()  # abstract namespace
        elif raw.startswith("/"):
            address = raw
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the configured timeout), or None if off."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; return False if not under systemd or failed."""
        if self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), message=message.decode())
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


async def keep_watchdog_fed(notifier: SystemdNotifier, *, healthy: Callable[[], bool] = lambda: True) -> None:
    """Ping the watchdog from the event loop at half the interval, while ``healthy()``.

    When the loop is wedged nothing is sent, and systemd kills and restarts the daemon: that is
    the point of sending from the loop rather than from a thread. Returns at once when the
    watchdog is off.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        if healthy():
            notifier.watchdog()
        else:
            log.warning("watchdog_withheld", reason="health check failed")
        await asyncio.sleep(interval)

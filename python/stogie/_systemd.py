"""systemd's readiness protocol (sd_notify, `Type=notify`) without libsystemd.

The service manager passes `NOTIFY_SOCKET` (a datagram socket path, `@` for the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). The serving process
sends `READY=1` once it listens, `RELOADING=1` and then `READY=1` around a reload,
`STOPPING=1` when a graceful stop begins, and `WATCHDOG=1` at half the watchdog interval.
Worker processes never notify: `forget()` drops the variables in them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

logger = logging.getLogger("stogie")

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Messages to the service manager; every method is a no-op outside systemd."""

    def __init__(self) -> None:
        path = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = self._watchdog_interval()
        self._next_ping = 0.0
        self._warned = False

    @staticmethod
    def _watchdog_interval() -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), when the watchdog is meant for us."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:                   # once: a broken socket would repeat forever
                self._warned = True
                logger.warning("cannot notify systemd through %r: %s", self.address, exc)

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def ping_if_due(self) -> None:
        """`WATCHDOG=1` when half the watchdog interval has passed since the last one."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_interval
            self.send("WATCHDOG=1")

    def watchdog_thread(self) -> threading.Event | None:
        """Pings from a daemon thread (for the single process); set the event to stop."""
        if self.watchdog_interval is None or not self.address:
            return None
        done = threading.Event()
        interval = self.watchdog_interval

        def loop() -> None:
            while not done.is_set():
                self.ping_if_due()
                done.wait(interval)

        threading.Thread(target=loop, name="stogie-watchdog", daemon=True).start()
        return done


def forget() -> None:
    """In a worker process: only the supervisor talks to systemd."""
    for name in _VARIABLES:
        os.environ.pop(name, None)

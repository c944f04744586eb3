"""sd_notify without libsystemd: datagrams to ``$NOTIFY_SOCKET`` (path or abstract ``@name``).

Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock:… and anything else: not supported here


class Notifier:
    """One connection to the service manager's notification socket.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._addr = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = 0
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_usec = max(0, int(usec))
            except ValueError:
                self.watchdog_usec = 0
        self._last_watchdog = 0.0
        self.sent = 0

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self._addr is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the timeout), ``None`` without watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, state: str) -> bool:
        """Send one notification (``"READY=1"``, ``"STATUS=…"``, several lines allowed)."""
        if self._addr is None:
            return False
        data = state.encode()
        with self._lock:
            try:
                if self._sock is None:
                    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    self._sock = socket.socket(socket.AF_UNIX, kind)
                    self._sock.connect(self._addr)
                self._sock.sendall(data)
                self.sent += 1
                return True
            except OSError as exc:
                log.debug("sd_notify %r failed: %s", state, exc)
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and a status line)."""
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        """``STATUS=`` line shown by ``systemctl status``."""
        return self.notify("STATUS=" + text.replace("\n", " "))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``."""
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up/stop time (long model loads)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self, force: bool = False) -> bool:
        """``WATCHDOG=1``, rate-limited to a quarter of the timeout unless ``force``."""
        if self._addr is None or not self.watchdog_usec:
            return False
        now = time.monotonic()
        if not force and now - self._last_watchdog < self.watchdog_usec / 4e6:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

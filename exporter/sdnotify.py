"""sd_notify(3) without libsystemd: one datagram of KEY=VALUE lines to $NOTIFY_SOCKET.

Hand-written so readiness and the watchdog work whether or not systemd-python is installed.
A path socket and an abstract one (written ``@name``; the leading ``@`` stands for a NUL
byte) are both supported.  Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``READY=1``-style fields; True if delivered.  Never raises."""
        if self.address is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall(message)
            return True
        except OSError as e:
            log.warning("sd_notify to %r failed: %s", self.address.replace("\0", "@"), e)
            return False

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status, MAINPID=os.getpid())

    def reloading(self) -> bool:
        return self.notify(RELOADING=1, STATUS="reloading configuration")

    def stopping(self) -> bool:
        return self.notify(STOPPING=1, STATUS="stopping")

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def watchdog_seconds(self) -> float | None:
        """The watchdog period systemd asks for (WatchdogSec=), if it is meant for us."""
        if not self._watchdog_usec.isdigit() or int(self._watchdog_usec) == 0:
            return None
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None
        return int(self._watchdog_usec) / 1_000_000

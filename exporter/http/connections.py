"""The open connections and which one goes when there is no room for another.

At ``max_connections`` a new client is not refused: the connection idle the longest is
closed (one waiting for its next request, or one that connected and sent nothing), else the
one whose request has dragged on longest; only if every connection is busy being answered
does the newcomer get a 503.  Running out of descriptors closes idle ones the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


class Conn:
    """One client connection and the state eviction looks at."""

    __slots__ = ("peer", "phase", "raw", "since", "task", "transport")
    IDLE, READING, BUSY = "idle", "reading", "busy"

    def __init__(self, transport: asyncio.Transport, peer: str) -> None:
        self.transport = transport  # over TLS, once set up, the TLS transport
        self.raw = transport  # the TCP transport under it
        self.peer = peer
        self.phase = Conn.IDLE
        self.since = time.monotonic()
        self.task: asyncio.Task[None] | None = None  # a coroutine the connection waits on

    def has_input(self) -> bool:
        """Bytes (or the end) wait unread: the request has arrived, nobody has read it."""
        return False


class ConnectionTable:
    def __init__(self) -> None:
        self._conns: dict[Conn, None] = {}
        self._idle: dict[Conn, None] = {}  # insertion order = oldest idle first
        self._reading: dict[Conn, None] = {}
        self.evicted = 0  # connections closed to make room (for tests and the log)

    def __len__(self) -> int:
        return len(self._conns)

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns))

    def admit(self, conn: Conn, limit: int) -> bool:
        """Make room for ``conn`` (closing others if need be) and count it in; False if
        every connection is busy being answered."""
        while len(self._conns) >= limit and self.evict_one():
            pass
        if len(self._conns) >= limit:
            return False
        self._conns[conn] = None
        self.set_phase(conn, Conn.IDLE)
        return True

    def remove(self, conn: Conn) -> None:
        self._idle.pop(conn, None)
        self._reading.pop(conn, None)
        self._conns.pop(conn, None)

    def set_phase(self, conn: Conn, phase: str) -> None:
        self._idle.pop(conn, None)
        self._reading.pop(conn, None)
        conn.phase = phase
        conn.since = time.monotonic()
        if phase == Conn.IDLE:
            self._idle[conn] = None
        elif phase == Conn.READING:
            self._reading[conn] = None

    def evict_one(self) -> bool:
        """Close the connection idle the longest, else the slowest request; False if none."""
        for group in (self._idle, self._reading):
            for conn in group:
                if group is self._idle and conn.has_input():
                    continue
                self.set_phase(conn, Conn.BUSY)  # out of both groups: never picked twice
                self._conns.pop(conn, None)  # counted out now; its task ends on the abort
                conn.transport.abort()
                if conn.task is not None:  # a task waiting on no stream of its own (TLS not
                    conn.task.cancel()  # yet set up) would not notice the abort
                self.evicted += 1
                kind = "idle" if group is self._idle else "slow"
                log.debug("connection limit: closed the oldest %s connection (%s)", kind,
                          conn.peer)
                return True
        return False

"""Giving freed memory back to the system (glibc), after a crowd of connections has left.

What a burst of hostile clients made the daemon allocate is freed when they leave, but
glibc keeps it for reuse (in the heap of whichever thread allocated it), and a closed
connection's objects form reference cycles that only the cycle collector frees.
Measured (tests/bench/bench_hostile.py): RSS stayed at its peak after every round.  So
after many connections have closed, the cycle collector and ``malloc_trim`` run, and once
more when the closes stop (the crowd's last connections, fewer than a batch, would
otherwise wait for the next batch of closes, which may never come).

What stays after that is mostly Python's own small-object allocator: an arena (1 MiB)
goes back to the system only when every object in it is gone, and a handful of long-lived
objects made while a crowd was connected (a handler thread it started, the caches, the
recorder's values) keep the arenas its objects needed.  Measured after a round of 1,000
TLS non-readers: +12 MiB with asyncio streams (~9 KiB of Python objects a connection),
+7-9 MiB since a connection is one protocol object (connection.py); ``malloc_trim``
cannot reach those, nor does limiting glibc's arenas (``M_ARENA_MAX`` 1 or 2: the same RSS
after). ``PYTHONMALLOC=malloc`` in the environment would (a few MiB less) but cost 7-13% of
scrape throughput under wrk, so it is not set. Pinning glibc's mmap threshold, so that big
buffers are unmapped on free, made every answer over 128 KiB a fresh mapping and cut scrape
throughput: 1,136 against 1,240-1,340 requests/s without it, the same hour.  Elsewhere
than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time

log = logging.getLogger(__name__)

TRIM_AFTER_CLOSES = 64
TRIM_EVERY_S = 1.0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only: raises elsewhere
    except (OSError, AttributeError):
        return None
    return libc


class MemoryTrimmer:
    """Counts closed connections; ``maybe_trim()``, called about once a second, gives
    memory back after a batch of closes, and once more when a crowd's closes stop."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._closes = 0  # since the last trim
        self._closes_seen = 0  # at the previous maybe_trim()
        self._crowd_leaving = False  # a batch was trimmed; its stragglers may follow
        self._last = 0.0
        self.trims = 0

    def connection_closed(self) -> None:
        self._closes += 1

    def maybe_trim(self) -> bool:
        """Trim if many connections closed since the last time, or if a crowd's closes
        have just stopped with some not yet trimmed; True if it trimmed."""
        if self._libc is None:
            return False
        quiet = self._closes == self._closes_seen  # no close since the previous call
        self._closes_seen = self._closes
        if self._closes >= TRIM_AFTER_CLOSES:
            if time.monotonic() - self._last < TRIM_EVERY_S:
                return False
            self._crowd_leaving = True
        elif self._crowd_leaving and quiet:
            self._crowd_leaving = False
            if self._closes == 0:
                return False  # the batch's trim came after the last close
        else:
            return False
        self._trim()
        return True

    def _trim(self) -> None:
        assert self._libc is not None
        self._closes = self._closes_seen = 0
        self._last = time.monotonic()
        started = time.perf_counter()
        # A closed connection's transport, protocol, streams and the exception that ended
        # it form reference cycles: what they hold (buffers) is freed by the cycle
        # collector, whose oldest generation may not run for a long time on its own.
        gc.collect()
        self._libc.malloc_trim(0)
        self.trims += 1
        log.debug("gave freed memory back (malloc_trim) in %.1f ms",
                  (time.perf_counter() - started) * 1e3)

"""Giving freed memory back to the system (glibc), after a crowd of connections has left.

What a burst of hostile clients made the daemon allocate is freed when they leave, but
glibc keeps it: in the heap of whichever thread allocated it (a handler thread's arena),
and, after a big buffer is freed, with its mmap threshold raised so that the next big
buffers come from the heap too.  Measured (tests/bench/bench_hostile.py): RSS stayed at
its peak after every round.  So the threshold is pinned at its default (big buffers are
always their own mapping, returned on free) and, after many connections have closed, the
cycle collector and ``malloc_trim`` run.  Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default, pinned: no longer raised by frees
TRIM_AFTER_CLOSES = 64
TRIM_EVERY_S = 1.0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc only: raises elsewhere
    except (OSError, AttributeError):
        return None
    return libc


class MemoryTrimmer:
    def __init__(self) -> None:
        self._libc = _libc()
        self._closes = 0
        self._last = 0.0
        self.trims = 0
        if self._libc is not None:
            self._libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)

    def connection_closed(self) -> None:
        self._closes += 1

    def maybe_trim(self) -> bool:
        """Trim if many connections closed since the last time (call it now and then)."""
        if self._libc is None or self._closes < TRIM_AFTER_CLOSES:
            return False
        now = time.monotonic()
        if now - self._last < TRIM_EVERY_S:
            return False
        self._closes = 0
        self._last = now
        started = time.perf_counter()
        # A closed connection's transport, protocol, streams and the exception that ended
        # it form reference cycles: what they hold (buffers) is freed by the cycle
        # collector, whose oldest generation may not run for a long time on its own.
        gc.collect()
        self._libc.malloc_trim(0)
        self.trims += 1
        log.debug("gave freed memory back (malloc_trim) in %.1f ms",
                  (time.perf_counter() - started) * 1e3)
        return True

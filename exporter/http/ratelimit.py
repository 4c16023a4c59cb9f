"""The web config's ``rate_limit``: a token bucket over every request, as exporter-toolkit's
(golang.org/x/time/rate): a token every ``interval``, at most ``burst`` saved up, a request
without one answered 429 before anything else is done for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, interval_s: float, burst: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self._monotonic = monotonic
        self._tokens = float(burst)  # full at start, as golang's limiter
        self._last = monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take a token if there is one."""
        with self._lock:
            now = self._monotonic()
            elapsed = max(now - self._last, 0.0)
            self._last = now
            self._tokens = min(float(self.burst), self._tokens + elapsed / self.interval_s)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def wait_s(self) -> float:
        """How long until the next token (for Retry-After)."""
        with self._lock:
            return max(0.0, (1.0 - self._tokens) * self.interval_s)

"""Single flight: concurrent callers share one in-progress computation.

Under a burst of concurrent scrapes each request would render the same exposition again,
all competing for the GIL; instead, requests that arrive while a render is running wait for
it and send its result.  That result is at most one render (about a millisecond) older than
their arrival, which no scraper can tell apart from arriving a moment earlier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "followers", "result")

    def __init__(self) -> None:
        self.followers = 0
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[T]):
    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._flight: _Flight[T] | None = None

    def followers(self) -> int:
        """Callers waiting on the computation in progress (0 if none runs)."""
        with self._lock:
            return 0 if self._flight is None else self._flight.followers

    def __call__(self) -> T:
        with self._lock:
            flight = self._flight
            leader = flight is None
            if flight is None:
                flight = self._flight = _Flight()
            else:
                flight.followers += 1
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            flight.result = self._compute()
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()
        return flight.result

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
    __slots__ = ("done", "error", "followers", "result", "retry")

    def __init__(self) -> None:
        self.followers = 0
        self.retry = False  # the leader gave up without a result: followers compute
        # Made by the first follower (under the coalescer's lock): a render nobody joins,
        # the usual case, allocates no Event.
        self.done: threading.Event | None = None
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
        while True:
            with self._lock:
                flight = self._flight
                if flight is None:
                    flight = self._flight = _Flight()
                    break
                flight.followers += 1
                if flight.done is None:
                    flight.done = threading.Event()
                done = flight.done
            done.wait()
            if flight.retry:  # its leader would not wait: this caller may, and computes
                continue
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        return self._lead(flight, self._compute)

    def now(self, compute: Callable[[], T], would_wait: type[Exception]) -> T | None:
        """``compute()`` (a variant that raises ``would_wait`` rather than wait), unless
        another computation is in progress: None then, or if it raised ``would_wait``.
        For the event loop, which must not wait; callers that joined meanwhile compute
        for themselves."""
        with self._lock:
            if self._flight is not None:
                return None
            flight = self._flight = _Flight()
        try:
            return self._lead(flight, compute, would_wait)
        except would_wait:
            return None

    def _lead(self, flight: _Flight[T], compute: Callable[[], T],
              gives_up: type[Exception] | None = None) -> T:
        try:
            flight.result = compute()
        except BaseException as e:
            flight.error = e
            flight.retry = gives_up is not None and isinstance(e, gives_up)
            raise
        finally:
            with self._lock:
                self._flight = None
                done = flight.done
            if done is not None:
                done.set()
        return flight.result

"""A render made after a request arrived answers that request too.

A crowd asking for the same large JSON document at once (1,000 clients and
``/metrics?last_n=1440``, 0.3 MB each) made 1,000 renders of ~1.5 ms each, one at a time
under the recorder's lock, and the handler threads' CPU kept the event loop waiting for
the GIL: a scrape arriving then waited 1.0-2.3 s (tests/bench/bench_hostile.py).  A
request that waited in the queue while a render of its document began can take that
render: it shows the state after the request arrived, as its own render would have.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

KEEP = 4  # documents kept (by the parameters that made them); the oldest goes first


class FreshRenders:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._made: dict[Hashable, tuple[float, bytes]] = {}  # key: (render started, body)
        self.shared = 0  # answers taken from a render another request made (for tests)

    def get(self, key: Hashable, arrived: float, render: Callable[[], bytes]) -> bytes:
        """``render()``'s result, or the result of one that started after ``arrived``."""
        with self._lock:
            made = self._made.get(key)
            if made is not None and made[0] >= arrived:
                self.shared += 1
                return made[1]
        started = self._monotonic()
        body = render()
        with self._lock:
            made = self._made.pop(key, None)
            if made is None or made[0] < started:
                made = (started, body)
            self._made[key] = made
            while len(self._made) > KEEP:
                del self._made[next(iter(self._made))]
        return body

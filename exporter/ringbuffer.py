"""Fixed-capacity history of (timestamp, value) samples.

Two preallocated ``array('d')`` columns hold the samples, so a stored sample costs exactly
16 bytes (two float64) however long the daemon runs; the Python objects for a sample exist
only while a reader looks at it.  Timestamps are milliseconds since the epoch, exact in a
float64 for the next quarter of a million years.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeriesStats:
    """Statistics over a window of samples; all ``None`` when the window is empty."""

    sample_count: int
    latest: float | None
    average: float | None
    min: float | None
    max: float | None


EMPTY_STATS = SeriesStats(0, None, None, None, None)


class RingBuffer:
    """Circular buffer of the newest ``capacity`` samples.  Not locked: the store locks."""

    __slots__ = ("_capacity", "_count", "_head", "_times", "_values", "appended")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        # Repetition allocates exactly; array("d", bytes(n)) over-allocates by about 1/16.
        self._times = array("d", [0.0]) * capacity
        self._values = array("d", [0.0]) * capacity
        self._head = 0  # index the next sample is written to
        self._count = 0
        # Samples are numbered by this count: the stored ones are the newest len(self) before
        # it, whatever clear() or resize() did, which lets renderers cache per-sample work.
        self.appended = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the sample columns (the per-sample storage cost)."""
        return (len(self._times) + len(self._values)) * self._times.itemsize

    def append(self, timestamp_ms: float, value: float) -> None:
        head = self._head
        self._times[head] = timestamp_ms
        self._values[head] = value
        head += 1
        self._head = 0 if head == self._capacity else head
        if self._count < self._capacity:
            self._count += 1
        self.appended += 1

    def load(self, timestamps: array[float], values: array[float]) -> None:
        """Replace the contents with these samples (oldest first), keeping the newest that
        fit: how a restored history comes back without one append per sample."""
        if len(timestamps) != len(values):
            raise ValueError("timestamps and values differ in length")
        keep = min(len(timestamps), self._capacity)
        start = len(timestamps) - keep
        self._times[:keep] = timestamps[start:]
        self._values[:keep] = values[start:]
        self._count = keep
        self._head = keep % self._capacity
        self.appended += keep  # new numbers: nothing cached for the old ones matches

    def clear(self) -> None:
        self._head = 0
        self._count = 0

    def _window(self, column: array[float], last_n: int | None) -> array[float]:
        """The newest ``last_n`` entries of a column (all if None/negative), oldest first."""
        n = self._count if last_n is None or last_n < 0 else min(last_n, self._count)
        if n == 0:
            return array("d")
        start = self._head - n
        if start >= 0:
            return column[start : self._head]
        return column[start + self._capacity :] + column[: self._head]

    def values(self, last_n: int | None = None) -> array[float]:
        return self._window(self._values, last_n)

    def timestamps(self, last_n: int | None = None) -> array[float]:
        return self._window(self._times, last_n)

    def samples(self, last_n: int | None = None) -> list[tuple[float, float]]:
        return list(zip(self.timestamps(last_n), self.values(last_n), strict=True))

    def latest(self) -> tuple[float, float] | None:
        if self._count == 0:
            return None
        i = self._head - 1
        return self._times[i], self._values[i]

    def values_since(self, since_ms: float) -> array[float]:
        """Values whose timestamp is at or after ``since_ms`` (timestamps are appended in order)."""
        return self.values()[bisect_left(self.timestamps(), since_ms) :]

    def resize(self, capacity: int) -> None:
        """Change capacity, keeping the newest samples that still fit."""
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be at least 1, got {capacity}")
        if capacity == self._capacity:
            return
        keep = min(self._count, capacity)
        times, values = self.timestamps(keep), self.values(keep)
        self._times = times + array("d", [0.0]) * (capacity - keep)
        self._values = values + array("d", [0.0]) * (capacity - keep)
        self._capacity = capacity
        self._count = keep
        self._head = keep % capacity

    def stats(self, last_n: int | None = None) -> SeriesStats:
        return stats_of(self.values(last_n))


def stats_of(values: array[float]) -> SeriesStats:
    """Stats of a window; fsum keeps the average exact-rounded whatever the magnitudes."""
    if not values:
        return EMPTY_STATS
    lo, hi = min(values), max(values)
    # fsum/n can round past the extremes (3x/3 != x for some x): keep the mean between them.
    average = min(max(math.fsum(values) / len(values), lo), hi)
    return SeriesStats(len(values), values[-1], average, lo, hi)

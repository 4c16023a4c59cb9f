"""Per-endpoint request latency: exact percentiles over a sliding window, plus histogram buckets.

The seed reports p50/p95/p99 per endpoint; Prometheus needs a histogram to aggregate across
instances.  Both come from one ``observe`` call: the observation goes into a bounded window
(for exact percentiles of recent traffic) and into cumulative-since-start bucket counters
(for ``histogram_quantile``).  The number of endpoints is capped so that a client inventing
endpoint names cannot grow memory or Prometheus cardinality without bound.
"""

from __future__ import annotations

import itertools
import math
from array import array
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from itertools import accumulate

from exporter.labels import check_name
from exporter.series import SeriesSpec

#: The seed's latency series: the mean of each interval's observations.
REQUEST_LATENCY = SeriesSpec(
    key="request_latency",
    metric="crankshaft_request_latency_ms",
    help="Average request latency in milliseconds",
    unit="ms",
    json_key="latency",
    csv_column="request_latency_ms",
)
DEFAULT_WINDOW = 1000
DEFAULT_MAX_ENDPOINTS = 100
DEFAULT_QUIET_AFTER_S = 300.0  # no observation for this long: "no traffic"
DEFAULT_EVICT_AFTER_S = 900.0  # an endpoint idle this long may give its slot to a new one

# Prometheus' default buckets (seconds): the seed's 500 ms / 1000 ms thresholds are bounds.
DEFAULT_BUCKETS_SECONDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
MAX_ENDPOINT_LENGTH = 256


def percentile(sorted_values: list[float] | tuple[float, ...], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, R type 7); ``q`` in [0, 1]."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    h = (n - 1) * q
    lo = math.floor(h)
    if lo >= n - 1:
        return sorted_values[-1]
    below = sorted_values[lo]
    return below + (h - lo) * (sorted_values[lo + 1] - below)


@dataclass(frozen=True, slots=True)
class LatencyPercentiles:
    p50: float
    p95: float
    p99: float
    count: int  # observations since start, not only those in the window


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative bucket counts aligned with ``bounds_seconds`` (+Inf last), in seconds."""

    bounds_seconds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    count: int
    sum_seconds: float
    serial: int = 0  # which endpoint slot: (serial, count) identifies the content


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One endpoint as kept across a restart (see :mod:`exporter.history`)."""

    name: str
    window: array[float]  # the window's observations in ms, oldest first
    buckets: tuple[int, ...]  # non-cumulative counts, +Inf last
    count: int
    sum_ms: float
    last_ms: float


@dataclass(frozen=True, slots=True)
class LatencyState:
    """Everything a :class:`LatencyTracker` holds, for the history file.  ``interval_*``
    are the observations not yet averaged into a sample: they join the first tick after a
    restart instead of being lost."""

    bounds_seconds: tuple[float, ...]
    endpoints: tuple[EndpointState, ...]
    total_count: int = 0
    dropped_observations: int = 0
    evicted: int = 0
    last_observation_ms: float | None = None
    interval_sum: float = 0.0
    interval_count: int = 0


_serials = itertools.count(1)


class _Endpoint:
    __slots__ = ("buckets", "count", "histogram", "last_ms", "serial", "sorted_cache", "sum_ms",
                 "window")

    def __init__(self, window_size: int, n_buckets: int) -> None:
        self.serial = next(_serials)  # a re-admitted endpoint is a new one
        self.window: deque[float] = deque(maxlen=window_size)
        self.buckets = [0] * (n_buckets + 1)  # non-cumulative; last is +Inf
        self.count = 0
        self.sum_ms = 0.0
        self.sorted_cache: list[float] | None = None
        self.last_ms = 0.0  # when it was last observed
        # The last snapshot handed out: still this endpoint's while its count is the same
        # (every observation adds to it), so scrapes between observations share one object.
        self.histogram: HistogramSnapshot | None = None


def validate_latency(endpoint: object, latency_ms: object) -> tuple[str, float]:
    """Return the checked pair or raise ValueError naming what is wrong."""
    name = check_name("endpoint", endpoint, MAX_ENDPOINT_LENGTH)
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, int | float):
        raise ValueError("latency must be a number of milliseconds")
    value = float(latency_ms) if abs(latency_ms) < 1e300 else math.inf  # no OverflowError
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"latency must be a finite number >= 0, got {latency_ms!r:.40}")
    return name, value


class LatencyTracker:
    """Not locked: the store serialises access.

    At the endpoint cap a new endpoint takes the slot of the one observed least recently,
    if that one has been idle for ``evict_after_ms``; otherwise its observations are
    counted as dropped.  So invented names can hold the slots for ``evict_after`` at most.
    """

    def __init__(
        self,
        window_size: int = DEFAULT_WINDOW,
        max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
        buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS,
        evict_after_ms: float = DEFAULT_EVICT_AFTER_S * 1000.0,
    ) -> None:
        if window_size < 1:
            raise ValueError("latency window size must be at least 1")
        if max_endpoints < 1:
            raise ValueError("max endpoints must be at least 1")
        bounds = tuple(sorted(set(buckets_seconds)))
        if not bounds or not all(math.isfinite(b) and b > 0 for b in bounds):
            raise ValueError("histogram buckets must be positive finite numbers of seconds")
        self.window_size = window_size
        self.max_endpoints = max_endpoints
        self.evict_after_ms = evict_after_ms
        self.evicted = 0  # endpoints that gave their slot to a new one
        self.last_observation_ms: float | None = None
        self.bounds_seconds = bounds
        self._endpoints: dict[str, _Endpoint] = {}
        self.dropped_observations = 0  # observations of endpoints beyond the cap
        self.total_count = 0
        self._interval_sum = 0.0
        self._interval_count = 0

    def _admit(self, endpoint: str, now_ms: float) -> _Endpoint | None:
        """A slot for a new endpoint, freeing the least recently observed idle one at the cap."""
        if len(self._endpoints) >= self.max_endpoints:
            oldest = min(self._endpoints, key=lambda name: self._endpoints[name].last_ms)
            if now_ms - self._endpoints[oldest].last_ms < self.evict_after_ms:
                return None
            del self._endpoints[oldest]
            self.evicted += 1
        ep = self._endpoints[endpoint] = _Endpoint(self.window_size, len(self.bounds_seconds))
        return ep

    def observe(self, endpoint: str, latency_ms: float, now_ms: float = 0.0) -> bool:
        """Record one checked observation; False if the endpoint cap dropped it."""
        ep = self._endpoints.get(endpoint)
        if ep is None:
            ep = self._admit(endpoint, now_ms)
            if ep is None:
                self.dropped_observations += 1
                return False
        ep.last_ms = now_ms
        self.last_observation_ms = now_ms
        ep.window.append(latency_ms)
        ep.sorted_cache = None
        # Compare in seconds: 1.001 * 1000.0 is 1000.9999999999999, 1001 / 1000 is 1.001.
        ep.buckets[bisect_left(self.bounds_seconds, latency_ms / 1000.0)] += 1
        ep.count += 1
        ep.sum_ms += latency_ms
        self.total_count += 1
        self._interval_sum += latency_ms
        self._interval_count += 1
        return True

    def observe_many(self, endpoint: str, latencies_ms: list[float], now_ms: float = 0.0) -> int:
        """Record checked observations of one endpoint; returns how many the cap dropped."""
        if not latencies_ms:
            return 0
        ep = self._endpoints.get(endpoint)
        if ep is None:
            ep = self._admit(endpoint, now_ms)
            if ep is None:
                self.dropped_observations += len(latencies_ms)
                return len(latencies_ms)
        ep.last_ms = now_ms
        self.last_observation_ms = now_ms
        ep.window.extend(latencies_ms)
        ep.sorted_cache = None
        buckets, bounds = ep.buckets, self.bounds_seconds
        for ms in latencies_ms:
            buckets[bisect_left(bounds, ms / 1000.0)] += 1
        n, total = len(latencies_ms), sum(latencies_ms)
        ep.count += n
        ep.sum_ms += total
        self.total_count += n
        self._interval_sum += total
        self._interval_count += n
        return 0

    def take_interval_average(self) -> float | None:
        """Mean of the observations since the last call (the seed's latency sample), or None."""
        if self._interval_count == 0:
            return None
        mean = self._interval_sum / self._interval_count
        self._interval_sum = 0.0
        self._interval_count = 0
        return mean

    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def percentiles(self, endpoint: str) -> LatencyPercentiles | None:
        ep = self._endpoints.get(endpoint)
        if ep is None or not ep.window:
            return None
        ordered = ep.sorted_cache
        if ordered is None:
            ordered = ep.sorted_cache = sorted(ep.window)
        return LatencyPercentiles(
            p50=percentile(ordered, 0.50),
            p95=percentile(ordered, 0.95),
            p99=percentile(ordered, 0.99),
            count=ep.count,
        )

    def breakdown(self) -> dict[str, LatencyPercentiles]:
        out = {}
        for name in self._endpoints:
            p = self.percentiles(name)
            if p is not None:
                out[name] = p
        return out

    def histograms(self) -> dict[str, HistogramSnapshot]:
        out = {}
        bounds = self.bounds_seconds
        for name, ep in self._endpoints.items():
            hist = ep.histogram
            if hist is None or hist.count != ep.count or hist.bounds_seconds is not bounds:
                hist = ep.histogram = HistogramSnapshot(
                    bounds,
                    tuple(accumulate(ep.buckets)),
                    ep.count,
                    ep.sum_ms / 1000.0,
                    ep.serial,
                )
            out[name] = hist
        return out

    def export_state(self) -> LatencyState:
        """A copy of everything held (caller holds the store's lock; copies are cheap)."""
        return LatencyState(
            self.bounds_seconds,
            tuple(
                EndpointState(name, array("d", ep.window), tuple(ep.buckets), ep.count,
                              ep.sum_ms, ep.last_ms)
                for name, ep in self._endpoints.items()
            ),
            self.total_count,
            self.dropped_observations,
            self.evicted,
            self.last_observation_ms,
            self._interval_sum,
            self._interval_count,
        )

    def restore_state(self, state: LatencyState) -> list[str]:
        """Take over a saved state within today's limits: the newest window entries, the
        most recently observed endpoints up to the cap.  Histogram counts come back only if
        the buckets are the same (a count in another bucket layout means nothing); the
        list says what could not be kept."""
        notes = []
        same_buckets = state.bounds_seconds == self.bounds_seconds
        if not same_buckets and state.endpoints:
            notes.append("histogram buckets changed: per-endpoint counts start from 0")
        endpoints = sorted(state.endpoints, key=lambda e: e.last_ms)
        if len(endpoints) > self.max_endpoints:
            notes.append(f"{len(endpoints) - self.max_endpoints} endpoints beyond "
                         f"latency.max_endpoints not restored")
            endpoints = endpoints[-self.max_endpoints:]
        self._endpoints = {}
        order = {e.name: i for i, e in enumerate(state.endpoints)}
        for saved in sorted(endpoints, key=lambda e: order[e.name]):
            ep = _Endpoint(self.window_size, len(self.bounds_seconds))
            ep.window.extend(saved.window)
            ep.last_ms = saved.last_ms
            if same_buckets:
                ep.buckets = list(saved.buckets)
                ep.count, ep.sum_ms = saved.count, saved.sum_ms
            self._endpoints[saved.name] = ep
        self.total_count = state.total_count
        self.dropped_observations = state.dropped_observations
        self.evicted = state.evicted
        self.last_observation_ms = state.last_observation_ms
        self._interval_sum, self._interval_count = state.interval_sum, state.interval_count
        return notes

    def reconfigure(
        self, window_size: int, max_endpoints: int, evict_after_ms: float | None = None
    ) -> None:
        """Apply new limits on reload, keeping what is recorded (newest window entries)."""
        if window_size < 1 or max_endpoints < 1:
            raise ValueError("window size and max endpoints must be at least 1")
        if window_size != self.window_size:
            for ep in self._endpoints.values():
                ep.window = deque(ep.window, maxlen=window_size)
                ep.sorted_cache = None
            self.window_size = window_size
        self.max_endpoints = max_endpoints
        if evict_after_ms is not None:
            self.evict_after_ms = evict_after_ms

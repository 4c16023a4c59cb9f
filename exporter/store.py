"""Everything recorded: one ring buffer per seed series, latency windows, extension states.

The store is a plain container; :class:`exporter.endpoint.MetricsEndpoint` holds the one lock
that guards it together with the alert evaluator, so a reader sees one consistent moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.extensions import ExtensionRegistry
from exporter.latency import DEFAULT_BUCKETS_SECONDS, LatencyTracker
from exporter.ringbuffer import RingBuffer


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    key: str  # the seed's metric name, also what alert rules name
    json_key: str  # the key of the series in the seed's /metrics document
    unit: str
    csv_column: str


SERIES: tuple[SeriesInfo, ...] = (
    SeriesInfo("memory_usage", "memory", "MB", "memory_mb"),
    SeriesInfo("cpu_usage", "cpu", "%", "cpu_percent"),
    SeriesInfo("active_connections", "websocket_active", "count", "active_connections"),
    SeriesInfo("total_connections", "websocket_total", "count", "total_connections"),
    SeriesInfo("request_latency", "latency", "ms", "request_latency_ms"),
)
SERIES_KEYS = tuple(s.key for s in SERIES)
DEFAULT_CAPACITY = 1440  # 24 h at the seed's 1-minute interval


class MetricStore:
    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        latency_window: int = 1000,
        max_endpoints: int = 100,
        max_extensions: int = 100,
        buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS,
    ) -> None:
        self.series: dict[str, RingBuffer] = {key: RingBuffer(capacity) for key in SERIES_KEYS}
        self.latency = LatencyTracker(latency_window, max_endpoints, buckets_seconds)
        self.extensions = ExtensionRegistry(max_extensions)

    @property
    def capacity(self) -> int:
        return self.series[SERIES_KEYS[0]].capacity

    def append(self, key: str, timestamp_ms: float, value: float) -> None:
        self.series[key].append(timestamp_ms, value)

    def latest(self, key: str) -> float | None:
        sample = self.series[key].latest()
        return None if sample is None else sample[1]

    def resize(self, capacity: int) -> None:
        for buf in self.series.values():
            buf.resize(capacity)

    def nbytes(self) -> int:
        """Bytes of sample storage across all series (what the 24 h history costs)."""
        return sum(buf.nbytes() for buf in self.series.values())

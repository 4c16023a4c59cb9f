"""Everything recorded: one ring buffer per declared series, the values present now,
latency windows and extension states.

The store is a plain container; :class:`exporter.recording.Recorder` holds the one lock that
guards it together with the alert evaluator, so a reader sees one consistent moment.

``current`` holds what is known *now*: a series whose source ran and could not read it
(a target that exited), or latency after ``quiet_after`` without traffic, is missing from
it, while its history keeps the samples it had.  Outputs show ``current``, never the last
sample of a series that went away.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from exporter.extensions import DEFAULT_EVICT_AFTER_S as EXTENSION_EVICT_AFTER_S
from exporter.extensions import DEFAULT_MAX_EXTENSIONS, ExtensionRegistry
from exporter.latency import (
    DEFAULT_BUCKETS_SECONDS,
    DEFAULT_EVICT_AFTER_S,
    DEFAULT_MAX_ENDPOINTS,
    DEFAULT_QUIET_AFTER_S,
    DEFAULT_WINDOW,
    LatencyTracker,
)
from exporter.ringbuffer import RingBuffer
from exporter.series import STATESET, SeriesSpec

DEFAULT_CAPACITY = 1440  # 24 h at the seed's 1-minute interval


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """How much is kept, and for how long names and values count as live."""

    capacity: int = DEFAULT_CAPACITY
    latency_window: int = DEFAULT_WINDOW
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS
    latency_quiet_after_s: float = DEFAULT_QUIET_AFTER_S
    latency_evict_after_s: float = DEFAULT_EVICT_AFTER_S
    extensions_evict_after_s: float = EXTENSION_EVICT_AFTER_S


def seed_catalog() -> tuple[SeriesSpec, ...]:
    """The series every store keeps: the seed's five (memory, CPU, connections, latency)."""
    from exporter.sources.registry import catalog  # the registry imports the sources

    return catalog(())


class MetricStore:
    def __init__(
        self,
        catalog: Iterable[SeriesSpec] | None = None,
        settings: StoreSettings | None = None,
        *,
        capacity: int | None = None,
    ) -> None:
        """``catalog`` defaults to the seed's series; ``capacity`` overrides the settings'."""
        settings = settings or StoreSettings()
        if capacity is not None:
            settings = replace(settings, capacity=capacity)
        if catalog is None:
            catalog = seed_catalog()
        self.settings = settings
        self._index(catalog)
        self.series: dict[str, RingBuffer] = {
            spec.key: RingBuffer(settings.capacity) for spec in self.catalog
        }
        self.current: dict[str, float] = {}
        self.latency = LatencyTracker(
            settings.latency_window,
            settings.max_endpoints,
            settings.buckets_seconds,
            settings.latency_evict_after_s * 1000.0,
        )
        self.extensions = ExtensionRegistry(
            settings.max_extensions, settings.extensions_evict_after_s * 1000.0
        )

    @property
    def capacity(self) -> int:
        return self.settings.capacity

    def append(self, key: str, timestamp_ms: float, value: float) -> None:
        """Store a sample of a declared series and make it the current value."""
        self.series[key].append(timestamp_ms, value)
        self.current[key] = value

    def latest(self, key: str) -> float | None:
        """The value known now (None when absent), not the last stored sample."""
        return self.current.get(key)

    def _index(self, catalog: Iterable[SeriesSpec]) -> None:
        self.catalog: tuple[SeriesSpec, ...] = tuple(catalog)
        self.specs = {spec.key: spec for spec in self.catalog}
        self.stateset_keys = frozenset(s.key for s in self.catalog if s.kind == STATESET)

    def set_catalog(self, catalog: Iterable[SeriesSpec]) -> None:
        """Keep the series still declared (with their history), add new ones, drop the rest."""
        self._index(catalog)
        self.series = {
            spec.key: self.series.get(spec.key) or RingBuffer(self.settings.capacity)
            for spec in self.catalog
        }
        self.current = {k: v for k, v in self.current.items() if k in self.specs}

    def resize(self, capacity: int) -> None:
        """Change every series' capacity, keeping the newest samples that still fit."""
        self.reconfigure(replace(self.settings, capacity=capacity))

    def reconfigure(self, settings: StoreSettings) -> None:
        """New limits, keeping what is recorded (the newest samples that still fit)."""
        for buf in self.series.values():
            buf.resize(settings.capacity)
        self.latency.reconfigure(
            settings.latency_window, settings.max_endpoints, settings.latency_evict_after_s * 1000.0
        )
        self.extensions.max_extensions = settings.max_extensions
        self.extensions.evict_after_ms = settings.extensions_evict_after_s * 1000.0
        # Buckets need a restart (the daemon says so): keep the ones in use.
        self.settings = replace(settings, buckets_seconds=self.settings.buckets_seconds)

    def nbytes(self) -> int:
        """Bytes of sample storage across all series (what the 24 h history costs)."""
        return sum(buf.nbytes() for buf in self.series.values())

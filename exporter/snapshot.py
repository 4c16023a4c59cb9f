"""What the exposition renders: one consistent moment of the monitor, taken under its lock,
plus the families that status providers add about the exporter's own machinery."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.alerts.rules import AlertRule
from exporter.latency import HistogramSnapshot
from exporter.sampling import SourceHealth
from exporter.series import SeriesSpec


@dataclass(frozen=True, slots=True)
class StatusFamily:
    """One metric family about the exporter itself; ``kind`` is gauge or counter (samples
    of a counter are named without the ``_total`` the exposition adds)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]]


@dataclass(frozen=True, slots=True)
class ExpositionSnapshot:
    """What the Prometheus collectors render, taken in one moment under the lock."""

    catalog: tuple[SeriesSpec, ...]
    current: dict[str, float]  # values present now; a declared series missing here is absent
    histograms: dict[str, HistogramSnapshot]
    extensions: dict[str, str]
    firing: list[tuple[str, str, str]]  # (metric, label, level) of every firing level
    rules: list[AlertRule]
    target_up: bool | None
    collections: int
    last_collection_seconds: float | None
    collection_errors: dict[str, int]
    dropped_latency_observations: int
    dropped_extension_updates: int
    evicted_endpoints: int
    evicted_extensions: int
    status: list[StatusFamily]  # from the registered status providers
    # source name -> how its last collection went (sources not yet run are left out)
    source_health: dict[str, SourceHealth] = field(default_factory=dict)
    last_collection_ms: float | None = None  # when the last tick ran (unix ms)

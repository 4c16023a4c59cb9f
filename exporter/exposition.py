"""Prometheus exposition of a MetricsEndpoint, as a prometheus_client custom collector.

The seed's four gauges keep their names and HELP texts exactly.  Beside them, families in
Prometheus style: a real counter for connections, a histogram per endpoint (aggregatable
across instances, unlike the seed's percentiles), extension states, alert state and
thresholds, and the exporter's own health.  Series without data are left out, never shown
as 0.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.alerts.rules import LEVELS
from exporter.extensions import EXTENSION_STATES

if TYPE_CHECKING:
    from exporter.endpoint import ExpositionSnapshot, MetricsEndpoint

# (series key, metric name, HELP) of the seed's gauges, spelled as the seed spells them.
SEED_GAUGES = (
    ("memory_usage", "crankshaft_memory_usage_mb", "Process memory usage in megabytes"),
    ("cpu_usage", "crankshaft_cpu_usage_percent", "Process CPU usage percentage"),
    (
        "active_connections",
        "crankshaft_websocket_active_connections",
        "Active WebSocket connections",
    ),
    ("request_latency", "crankshaft_request_latency_ms", "Average request latency in milliseconds"),
)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    if value is not None:
        g.add_metric([], value)
    return g


class EndpointCollector(Collector):
    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        snap = self._endpoint.exposition_snapshot()
        for key, name, doc in SEED_GAUGES:
            yield _gauge(name, doc, snap.latest[key])
        yield from _connections(snap)
        yield _histogram(snap)
        yield _extensions(snap)
        yield from _alerts(snap)
        yield from _health(snap)
        yield InfoMetricFamily(
            "crankshaft_exporter_build",
            "Version of crankshaft-exporter and of the Python running it",
            value={"version": __version__, "python_version": platform.python_version()},
        )


def _connections(snap: ExpositionSnapshot) -> Iterator[Metric]:
    total = snap.latest["total_connections"]
    c = CounterMetricFamily(
        "crankshaft_websocket_connections",
        "WebSocket connections established since the monitored service started",
    )
    if total is not None:
        c.add_metric([], total)
    yield c


def _histogram(snap: ExpositionSnapshot) -> HistogramMetricFamily:
    h = HistogramMetricFamily(
        "crankshaft_request_duration_seconds",
        "Request latency per endpoint, as recorded by the monitored service",
        labels=["endpoint"],
    )
    for endpoint, hist in sorted(snap.histograms.items()):
        bounds = [*(repr(b) for b in hist.bounds_seconds), "+Inf"]
        h.add_metric(
            [endpoint], list(zip(bounds, hist.cumulative_counts, strict=True)), hist.sum_seconds
        )
    return h


def _extensions(snap: ExpositionSnapshot) -> GaugeMetricFamily:
    g = GaugeMetricFamily(
        "crankshaft_extension_status",
        "Extension lifecycle state: 1 for the state the extension is in, 0 for the others",
        labels=["extension", "status"],
    )
    for ext, current in sorted(snap.extensions.items()):
        for state in EXTENSION_STATES:
            g.add_metric([ext, state], 1.0 if state == current else 0.0)
    return g


def _alerts(snap: ExpositionSnapshot) -> Iterator[Metric]:
    active = GaugeMetricFamily(
        "crankshaft_alert_active",
        "Alerts of the exporter's own evaluator active at this level (instances per rule)",
        labels=["metric", "level"],
    )
    counts: dict[tuple[str, str], int] = {}
    for a in snap.active_alerts:
        k = (a.metric, a.level.lower())
        counts[k] = counts.get(k, 0) + 1
    thresholds = GaugeMetricFamily(
        "crankshaft_alert_threshold",
        "Configured alert thresholds, in the unit of the metric they watch",
        labels=["metric", "level", "selector"],
    )
    seen = set()
    for rule in snap.rules:
        if not rule.enabled:
            continue
        for level in LEVELS:
            threshold = rule.threshold(level)
            if threshold is None:
                continue
            k = (rule.metric, level.lower())
            if k not in seen:
                seen.add(k)
                active.add_metric(list(k), float(counts.get(k, 0)))
            thresholds.add_metric([*k, rule.selector or ""], threshold)
    yield active
    yield thresholds


def _health(snap: ExpositionSnapshot) -> Iterator[Metric]:
    if snap.target_up is not None:
        yield _gauge(
            "crankshaft_target_up",
            "1 if a target process was found at the last collection, else 0",
            1.0 if snap.target_up else 0.0,
        )
    yield CounterMetricFamily(
        "crankshaft_collections", "Collection cycles run", value=snap.collections
    )
    yield _gauge(
        "crankshaft_collection_duration_seconds",
        "Duration of the last collection cycle",
        snap.last_collection_seconds,
    )
    errors = CounterMetricFamily(
        "crankshaft_collection_errors",
        "Collection failures, by source",
        labels=["source"],
    )
    for source, n in sorted(snap.collection_errors.items()):
        errors.add_metric([source], n)
    yield errors
    yield CounterMetricFamily(
        "crankshaft_latency_dropped_observations",
        "Latency observations dropped because the endpoint cap was reached",
        value=snap.dropped_latency_observations,
    )
    yield CounterMetricFamily(
        "crankshaft_extension_dropped_updates",
        "Extension status updates dropped because the extension cap was reached",
        value=snap.dropped_extension_updates,
    )


def build_registry(endpoint: MetricsEndpoint) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EndpointCollector(endpoint))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, openmetrics: bool = False) -> bytes:
    return (generate_openmetrics if openmetrics else generate_latest)(registry)

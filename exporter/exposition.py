"""Prometheus exposition of a MetricsEndpoint: text format 0.0.4 and OpenMetrics 1.0.

This writer is the one definition of every family the exporter exposes.  It writes the text
directly because prometheus_client's ``generate_latest`` costs ~20 µs per sample here (about
20 ms for 100 endpoints of histograms, far over a 2 ms budget); per-endpoint label prefixes
are cached, so a scrape is mostly string joins.  For programs that already run a
prometheus_client registry, :class:`EndpointCollector` offers the same families as a custom
collector by parsing this text back, so the two can never drift apart.

The seed's four gauges keep its names and HELP texts.  Series without data are left out,
never shown as 0.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.alerts.rules import LEVELS
from exporter.extensions import EXTENSION_STATES

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from exporter.endpoint import MetricsEndpoint
    from exporter.latency import HistogramSnapshot
    from exporter.snapshot import ExpositionSnapshot

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# (series key, metric name, HELP) of the seed's gauges, spelled as the seed spells them.
SEED_GAUGES = (
    ("memory_usage", "crankshaft_memory_usage_mb", "Process memory usage in megabytes"),
    ("cpu_usage", "crankshaft_cpu_usage_percent", "Process CPU usage percentage"),
    (
        "active_connections",
        "crankshaft_websocket_active_connections",
        "Active WebSocket connections",
    ),
    (
        "request_latency",
        "crankshaft_request_latency_ms",
        "Average request latency in milliseconds",
    ),
)
HISTOGRAM = "crankshaft_request_duration_seconds"


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items()) + "}"


def number(value: float) -> str:
    """Go-style float text, as Prometheus parses it; whole numbers without exponent noise."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Writer:
    def __init__(self, openmetrics: bool) -> None:
        self.om = openmetrics
        self.parts: list[str] = []

    def header(self, name: str, kind: str, doc: str) -> None:
        # 0.0.4 names a counter family by its sample (x_total); OpenMetrics by its base (x).
        family = name + "_total" if kind == "counter" and not self.om else name
        if kind == "info" and not self.om:
            family, kind = name + "_info", "gauge"
        doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.parts.append(f"# HELP {family} {doc}\n# TYPE {family} {kind}\n")

    def sample(self, name: str, label_text: str, value: float) -> None:
        self.parts.append(f"{name}{label_text} {number(value)}\n")

    def gauge(self, name: str, doc: str, value: float | None, label_text: str = "") -> None:
        self.header(name, "gauge", doc)
        if value is not None:
            self.sample(name, label_text, value)

    def counter(self, name: str, doc: str, value: float | None) -> None:
        self.header(name, "counter", doc)
        if value is not None:
            self.sample(name + "_total", "", value)


class _HistogramLines:
    """Pre-rendered line prefixes of one endpoint's histogram series."""

    __slots__ = ("buckets", "count", "rendered", "rendered_count", "sum")

    def __init__(self, endpoint: str, bounds: tuple[float, ...]) -> None:
        ep = escape_label(endpoint)
        les = [number(b) for b in bounds] + ["+Inf"]
        self.buckets = tuple(f'{HISTOGRAM}_bucket{{endpoint="{ep}",le="{le}"}} ' for le in les)
        self.count = f'{HISTOGRAM}_count{{endpoint="{ep}"}} '
        self.sum = f'{HISTOGRAM}_sum{{endpoint="{ep}"}} '
        self.rendered_count = -1  # observation count the cached block was rendered at
        self.rendered = ""

    def block(self, hist: HistogramSnapshot) -> str:
        """The endpoint's lines; re-rendered only if it saw observations since last time."""
        if hist.count != self.rendered_count:
            parts = [f"{p}{c}\n" for p, c in zip(self.buckets, hist.cumulative_counts, strict=True)]
            parts.append(f"{self.count}{hist.count}\n{self.sum}{number(hist.sum_seconds)}\n")
            self.rendered = "".join(parts)
            self.rendered_count = hist.count
        return self.rendered


class ExpositionRenderer:
    """Renders snapshots; holds the label-prefix cache, so keep one per endpoint."""

    def __init__(self) -> None:
        self._histogram_lines: dict[tuple[str, tuple[float, ...]], _HistogramLines] = {}
        self._process = ProcessCollector(registry=None)

    def render(self, snap: ExpositionSnapshot, openmetrics: bool = False) -> bytes:
        w = _Writer(openmetrics)
        for key, name, doc in SEED_GAUGES:
            w.gauge(name, doc, snap.latest[key])
        w.counter(
            "crankshaft_websocket_connections",
            "WebSocket connections established since the monitored service started",
            snap.latest["total_connections"],
        )
        self._histogram(w, snap)
        _extensions(w, snap)
        _alerts(w, snap)
        _health(w, snap)
        w.header(
            "crankshaft_exporter_build",
            "info",
            "Version of crankshaft-exporter and of the Python running it",
        )
        w.sample(
            "crankshaft_exporter_build_info",
            labels(version=__version__, python_version=platform.python_version()),
            1,
        )
        for family in snap.status:
            w.header(family.name, family.kind, family.help)
            sample = family.name + "_total" if family.kind == "counter" else family.name
            for label_pairs, value in family.samples:
                w.sample(sample, labels(**label_pairs) if label_pairs else "", value)
        self._process_metrics(w)
        if openmetrics:
            w.parts.append("# EOF\n")
        return "".join(w.parts).encode()

    def _histogram(self, w: _Writer, snap: ExpositionSnapshot) -> None:
        w.header(
            HISTOGRAM,
            "histogram",
            "Request latency per endpoint, as recorded by the monitored service",
        )
        parts = w.parts
        cache = self._histogram_lines
        for endpoint, hist in sorted(snap.histograms.items()):
            key = (endpoint, hist.bounds_seconds)
            lines = cache.get(key)
            if lines is None:
                lines = cache[key] = _HistogramLines(endpoint, hist.bounds_seconds)
            parts.append(lines.block(hist))

    def _process_metrics(self, w: _Writer) -> None:
        """The exporter's own process_* families, read by prometheus_client's collector."""
        for metric in self._process.collect():
            w.header(metric.name, metric.type, metric.documentation)
            for s in metric.samples:
                w.sample(s.name, "", s.value)


def _extensions(w: _Writer, snap: ExpositionSnapshot) -> None:
    w.header(
        "crankshaft_extension_status",
        "gauge",
        "Extension lifecycle state: 1 for the state the extension is in, 0 for the others",
    )
    for ext, current in sorted(snap.extensions.items()):
        for state in EXTENSION_STATES:
            w.sample(
                "crankshaft_extension_status",
                labels(extension=ext, status=state),
                1 if state == current else 0,
            )


def _alerts(w: _Writer, snap: ExpositionSnapshot) -> None:
    counts: dict[tuple[str, str], int] = {}
    for metric, _, level in snap.firing:
        k = (metric, level.lower())
        counts[k] = counts.get(k, 0) + 1
    active: dict[str, int] = {}  # one series per (metric, level) with an enabled rule
    thresholds: list[tuple[str, float, float]] = []
    for rule in snap.rules:
        if not rule.enabled:
            continue
        for level in LEVELS:
            threshold = rule.threshold(level)
            if threshold is None:
                continue
            lvl = level.lower()
            active.setdefault(
                labels(metric=rule.metric, level=lvl), counts.get((rule.metric, lvl), 0)
            )
            thresholds.append(
                (
                    labels(metric=rule.metric, level=lvl, selector=rule.selector or ""),
                    threshold,
                    rule.clear_threshold(level),
                )
            )
    w.header(
        "crankshaft_alert_active",
        "gauge",
        "Alert levels firing in the exporter's own evaluator (instances per rule and level)",
    )
    for label_text, n in active.items():
        w.sample("crankshaft_alert_active", label_text, n)
    w.header(
        "crankshaft_alert_threshold",
        "gauge",
        "Configured alert thresholds, in the unit of the metric they watch",
    )
    for label_text, value, _ in thresholds:
        w.sample("crankshaft_alert_threshold", label_text, value)
    # Beside each threshold, the value a firing level must drop to before it clears (the
    # threshold itself without hysteresis): Prometheus rules compare each instance with its
    # own pair (exporter/promrules.py), so one rules file serves a fleet.
    w.header(
        "crankshaft_alert_clear_threshold",
        "gauge",
        "Configured clear thresholds (hysteresis): a firing level holds while the value is above",
    )
    for label_text, _, clear in thresholds:
        w.sample("crankshaft_alert_clear_threshold", label_text, clear)
    # What GET /metrics/alerts lists: one alert per instance at its highest firing level
    # (crankshaft_alert_active counts every firing level, so a critical alert is there twice).
    highest: dict[tuple[str, str], str] = {}
    for metric, label, level in snap.firing:
        if LEVELS.index(level) >= LEVELS.index(highest.get((metric, label), LEVELS[0])):
            highest[(metric, label)] = level
    w.header(
        "crankshaft_active_alerts",
        "gauge",
        "Alerts listed by GET /metrics/alerts, by the level they are listed at",
    )
    for level in LEVELS:
        n = sum(1 for lvl in highest.values() if lvl == level)
        w.sample("crankshaft_active_alerts", labels(level=level.lower()), n)


def _health(w: _Writer, snap: ExpositionSnapshot) -> None:
    if snap.target_up is not None:
        w.gauge(
            "crankshaft_target_up",
            "1 if a target process was found at the last collection, else 0",
            1 if snap.target_up else 0,
        )
    w.counter("crankshaft_collections", "Collection cycles run", snap.collections)
    w.gauge(
        "crankshaft_collection_duration_seconds",
        "Duration of the last collection cycle",
        snap.last_collection_seconds,
    )
    w.header("crankshaft_collection_errors", "counter", "Collection failures, by source")
    for source, n in sorted(snap.collection_errors.items()):
        w.sample("crankshaft_collection_errors_total", labels(source=source), n)
    w.counter(
        "crankshaft_latency_dropped_observations",
        "Latency observations dropped because the endpoint cap was reached",
        snap.dropped_latency_observations,
    )
    w.counter(
        "crankshaft_extension_dropped_updates",
        "Extension status updates dropped because the extension cap was reached",
        snap.dropped_extension_updates,
    )


class EndpointCollector(Collector):
    """The same families for a prometheus_client registry (``REGISTRY.register(...)``)."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        text = self._endpoint.export_prometheus()
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("process_"):  # the host registry has its own
                yield family

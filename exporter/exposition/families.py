"""Every family the exporter exposes, as prometheus_client metric families built from one
snapshot: the reference model of the exposition.

prometheus_client's encoders over these families are the reference output; the fast
renderer (:mod:`exporter.exposition.fast`) must produce the same bytes (a property test
holds it to that).  The seed's four gauges keep its names and HELP texts.  A series with no
value now is left out, never shown as 0 (its family's HELP and TYPE stay).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter import metric_names as names
from exporter.alerts.rules import LEVELS
from exporter.extensions import EXTENSION_STATES
from exporter.series import COUNTER, GAUGE, SeriesSpec
from exporter.snapshot import ExpositionSnapshot, StatusFamily

HISTOGRAM = names.REQUEST_DURATION
HISTOGRAM_HELP = "Request latency per endpoint, as recorded by the monitored service"
EXTENSION_HELP = (
    "Extension lifecycle state: 1 for the state the extension is in, 0 for the others"
)


def series_groups(catalog: tuple[SeriesSpec, ...]) -> list[list[SeriesSpec]]:
    """Declared series grouped into families, in catalog order."""
    groups: dict[str, list[SeriesSpec]] = {}
    for spec in catalog:
        groups.setdefault(spec.metric, []).append(spec)
    return list(groups.values())


def state_values(spec: SeriesSpec, value: float) -> dict[str, bool]:
    mask = int(value)
    return {state: bool(mask >> i & 1) for i, state in enumerate(spec.states)}


def series_family(specs: list[SeriesSpec], current: dict[str, float]) -> Metric:
    first = specs[0]
    labelnames = [k for k, _ in first.labels]
    family: GaugeMetricFamily | CounterMetricFamily | StateSetMetricFamily
    if first.kind == GAUGE:
        family = GaugeMetricFamily(first.metric, first.help, labels=labelnames,
                                   unit=first.prom_unit)
    elif first.kind == COUNTER:
        family = CounterMetricFamily(first.metric, first.help, labels=labelnames,
                                     unit=first.prom_unit)
    else:
        family = StateSetMetricFamily(first.metric, first.help, labels=labelnames)
    for spec in specs:
        value = current.get(spec.key)
        if value is None:
            continue
        label_values = [v for _, v in spec.labels]
        if isinstance(family, StateSetMetricFamily):
            family.add_metric(label_values, state_values(spec, value))
        else:
            family.add_metric(label_values, value)
    return family


def series_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    for specs in series_groups(snap.catalog):
        yield series_family(specs, snap.current)


def histogram_family(snap: ExpositionSnapshot) -> Metric:
    family = HistogramMetricFamily(HISTOGRAM, HISTOGRAM_HELP, labels=["endpoint"], unit="seconds")
    for endpoint, hist in sorted(snap.histograms.items()):
        les = [floatToGoString(b) for b in hist.bounds_seconds] + ["+Inf"]
        family.add_metric(
            [endpoint], list(zip(les, hist.cumulative_counts, strict=True)), hist.sum_seconds
        )
    return family


def other_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    """Everything after the histogram: extensions, alerts, health, build, status."""
    ext = GaugeMetricFamily(names.EXTENSION_STATUS, EXTENSION_HELP,
                            labels=["extension", "status"])
    for name, current in sorted(snap.extensions.items()):
        for state in EXTENSION_STATES:
            ext.add_metric([name, state], 1 if state == current else 0)
    yield ext
    yield from _alert_families(snap)
    yield from _health_families(snap)
    yield InfoMetricFamily(
        names.BUILD,
        "Version of crankshaft-exporter and of the Python running it",
        value={"version": __version__, "python_version": platform.python_version()},
    )
    for status in snap.status:
        yield status_family(status)


def all_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    yield from series_families(snap)
    yield histogram_family(snap)
    yield from other_families(snap)


def _alert_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    counts: dict[tuple[str, str], int] = {}
    for metric, _, level in snap.firing:
        k = (metric, level.lower())
        counts[k] = counts.get(k, 0) + 1
    active = GaugeMetricFamily(
        "crankshaft_alert_active",
        "Alert levels firing in the exporter's own evaluator (instances per rule and level)",
        labels=["metric", "level"],
    )
    thresholds = GaugeMetricFamily(
        names.ALERT_THRESHOLD,
        "Configured alert thresholds, in the unit of the metric they watch",
        labels=["metric", "level", "selector"],
    )
    # Beside each threshold, the value a firing level must drop to before it clears (the
    # threshold itself without hysteresis): Prometheus rules compare each instance with its
    # own pair (exporter/promrules.py), so one rules file serves a fleet.
    clears = GaugeMetricFamily(
        names.ALERT_CLEAR_THRESHOLD,
        "Configured clear thresholds (hysteresis): a firing level holds while the value is above",
        labels=["metric", "level", "selector"],
    )
    seen: set[tuple[str, str]] = set()  # one active series per (metric, level) with a rule
    for rule in snap.rules:
        if not rule.enabled:
            continue
        for level in LEVELS:
            threshold = rule.threshold(level)
            if threshold is None:
                continue
            lvl = level.lower()
            if (rule.metric, lvl) not in seen:
                seen.add((rule.metric, lvl))
                active.add_metric([rule.metric, lvl], counts.get((rule.metric, lvl), 0))
            label_values = [rule.metric, lvl, rule.selector or ""]
            thresholds.add_metric(label_values, threshold)
            clears.add_metric(label_values, rule.clear_threshold(level))  # type: ignore[arg-type]
    yield active
    yield thresholds
    yield clears
    yield listed_alerts_family(snap)


def listed_alerts_family(snap: ExpositionSnapshot) -> Metric:
    """What GET /metrics/alerts lists: one alert per instance at its highest firing level
    (crankshaft_alert_active counts every firing level, so a critical alert is there twice)."""
    highest: dict[tuple[str, str], str] = {}
    for metric, label, level in snap.firing:
        if LEVELS.index(level) >= LEVELS.index(highest.get((metric, label), LEVELS[0])):
            highest[(metric, label)] = level
    family = GaugeMetricFamily(
        "crankshaft_active_alerts",
        "Alerts listed by GET /metrics/alerts, by the level they are listed at",
        labels=["level"],
    )
    for level in LEVELS:
        family.add_metric([level.lower()], sum(1 for lvl in highest.values() if lvl == level))
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _health_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    if snap.target_up is not None:
        yield GaugeMetricFamily(
            names.TARGET_UP,
            "1 if a target process was found at the last collection, else 0",
            value=1 if snap.target_up else 0,
        )
    yield _counter("crankshaft_collections", "Collection cycles run", snap.collections)
    if snap.last_collection_ms is not None:
        yield GaugeMetricFamily(
            names.LAST_COLLECTION,
            "When the last collection ran (unix time): a car's last-seen time",
            value=snap.last_collection_ms / 1000.0,
        )
    duration = GaugeMetricFamily(
        "crankshaft_collection_duration_seconds",
        "Duration of the last collection cycle",
        unit="seconds",
    )
    if snap.last_collection_seconds is not None:
        duration.add_metric([], snap.last_collection_seconds)
    yield duration
    errors = CounterMetricFamily(
        names.COLLECTION_ERRORS, "Collection failures, by source", labels=["source"]
    )
    for source, n in sorted(snap.collection_errors.items()):
        errors.add_metric([source], n)
    yield errors
    yield from _source_families(snap)
    yield _counter(
        names.LATENCY_DROPPED,
        "Latency observations dropped because the endpoint cap was reached",
        snap.dropped_latency_observations,
    )
    yield _counter(
        "crankshaft_latency_evicted_endpoints",
        "Idle endpoints that gave their slot to a new one at the endpoint cap",
        snap.evicted_endpoints,
    )
    yield _counter(
        names.EXTENSION_DROPPED,
        "Extension status updates dropped because the extension cap was reached",
        snap.dropped_extension_updates,
    )
    yield _counter(
        "crankshaft_extension_evicted",
        "Extensions not reported for extensions.evict_after that gave their slot to a new one",
        snap.evicted_extensions,
    )


def _source_families(snap: ExpositionSnapshot) -> Iterator[Metric]:
    """Each source's last collection, as node_exporter shows each collector's."""
    up = GaugeMetricFamily(
        names.SOURCE_UP, "1 if the source's last collection read without error, else 0",
        labels=["source"],
    )
    duration = GaugeMetricFamily(
        names.SOURCE_DURATION, "Duration of the source's last collection",
        labels=["source"], unit="seconds",
    )
    series = GaugeMetricFamily(
        names.SOURCE_SERIES,
        "Series the source read at its last collection (0: nothing to read, e.g. no target)",
        labels=["source"],
    )
    for source, health in sorted(snap.source_health.items()):
        up.add_metric([source], 1 if health.up else 0)
        duration.add_metric([source], health.seconds)
        series.add_metric([source], health.series)
    yield up
    yield duration
    yield series


def status_family(status: StatusFamily) -> Metric:
    labelnames = list(status.samples[0][0]) if status.samples else []
    family: CounterMetricFamily | GaugeMetricFamily
    if status.kind == "counter":
        family = CounterMetricFamily(status.name, status.help, labels=labelnames)
    else:
        family = GaugeMetricFamily(status.name, status.help, labels=labelnames)
    for label_pairs, value in status.samples:
        family.add_metric([label_pairs[k] for k in labelnames], value)
    return family

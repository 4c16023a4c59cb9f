"""MetricsEndpoint: the seed's monitor, for Python programs that embed it and for the daemon.

A thin facade of the seed's API over smaller parts: the sources (:mod:`exporter.sampling`),
the collector thread (:mod:`exporter.scheduler`), recording under one lock
(:mod:`exporter.recording`, with :mod:`exporter.alert_inputs`) and reading
(:mod:`exporter.rendering`).  The seed's four signals are callback lists; every alert
transition is logged here and handed to them outside the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.events import RESOLVED, ActiveAlert, AlertEvent
from exporter.alerts.rules import DEFAULT_RULES, AlertRule
from exporter.extensions import DEFAULT_MAX_EXTENSIONS, validate_extension
from exporter.ingest import Batch
from exporter.latency import (
    DEFAULT_BUCKETS_SECONDS,
    DEFAULT_MAX_ENDPOINTS,
    DEFAULT_WINDOW,
    validate_latency,
)
from exporter.recording import BatchOutcome, Recorder
from exporter.rendering import Renderer, StatusProvider
from exporter.sampling import SourceSet
from exporter.scheduler import Scheduler
from exporter.series import SeriesSpec
from exporter.signals import Signal
from exporter.snapshot import ExpositionSnapshot
from exporter.sources import registry
from exporter.sources.base import Source
from exporter.sources.process import ProcessSource
from exporter.sources.targets import SelfFinder, TargetMiss
from exporter.store import DEFAULT_CAPACITY, MetricStore, StoreSettings
from exporter.values import DEFAULT_INTERVAL_MS, check_count, check_gauge

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def catalog_for(sources: Iterable[Source]) -> tuple[SeriesSpec, ...]:
    """The series to keep: the seed's (always shown) and what these sources declare."""
    return registry.catalog_with(spec for source in sources for spec in source.series)


class MetricsEndpoint:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        rules: Iterable[AlertRule] = DEFAULT_RULES,
        sources: Iterable[Source] | None = None,
        latency_window: int = DEFAULT_WINDOW,
        max_endpoints: int = DEFAULT_MAX_ENDPOINTS,
        max_extensions: int = DEFAULT_MAX_EXTENSIONS,
        buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS,
        settings: StoreSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``settings`` (all limits at once, as the daemon passes them) wins over the
        individual limits, which keep the seed-style constructor short."""
        if settings is None:
            settings = StoreSettings(
                capacity, latency_window, max_endpoints, max_extensions, buckets_seconds
            )
        self.sources = SourceSet(
            [ProcessSource(SelfFinder())] if sources is None else list(sources)
        )
        self.store = MetricStore(catalog_for(self.sources.sources), settings)
        self.recorder = Recorder(
            self.store, AlertEvaluator(rules), self.sources.target_up, clock
        )
        self.scheduler = Scheduler(
            self.collect_now,
            lambda: self.sources.count_error("collector"),
            self.sources.warmup_seconds,
            interval_ms,
        )
        self._tick_lock = threading.Lock()  # one tick at a time; sources change between
        self.renderer = Renderer(
            self.recorder, self.sources, self.is_collecting, lambda: self.scheduler.interval_ms
        )
        # The seed's four signals, plus every alert transition for notifiers.
        self.metrics_collected = Signal("metrics_collected")
        self.alert_triggered = Signal("alert_triggered")
        self.collection_started = Signal("collection_started")
        self.collection_stopped = Signal("collection_stopped")
        self.alert_event = Signal("alert_event")

    # --- signal registration (the seed's connect(...)) ------------------------------------

    def on_metrics_collected(self, callback: F) -> F:
        return self.metrics_collected.connect(callback)

    def on_alert_triggered(self, callback: F) -> F:
        """``callback(metric, level, value)`` when an alert fires or changes level."""
        return self.alert_triggered.connect(callback)

    def on_collection_started(self, callback: F) -> F:
        return self.collection_started.connect(callback)

    def on_collection_stopped(self, callback: F) -> F:
        return self.collection_stopped.connect(callback)

    def on_alert_event(self, callback: F) -> F:
        """``callback(AlertEvent)`` on every transition, resolutions included."""
        return self.alert_event.connect(callback)

    # --- collection control ----------------------------------------------------------------

    def start_collection(self, interval_ms: int = DEFAULT_INTERVAL_MS) -> None:
        """Collect now and then every ``interval_ms``; if already running, change the interval."""
        self.scheduler.set_interval(interval_ms)
        with self.recorder.lock:
            self.recorder.collecting = True
        if self.scheduler.start():
            self.collection_started.emit()

    def stop_collection(self) -> None:
        if not self.scheduler.stop():
            return
        with self.recorder.lock:
            self.recorder.collecting = False
        self._dispatch(self.recorder.flush_pushed())  # values pushed since the last tick
        self.collection_stopped.emit()

    def is_collecting(self) -> bool:
        return self.scheduler.running

    def set_collection_interval(self, interval_ms: int) -> None:
        self.scheduler.set_interval(interval_ms)

    @property
    def collection_interval_ms(self) -> int:
        return self.scheduler.interval_ms

    def set_heartbeat(self, callback: Callable[[], object] | None, every_seconds: float) -> None:
        """Call ``callback`` from the collector loop at least every ``every_seconds``."""
        self.scheduler.set_heartbeat(callback, every_seconds)

    def collect_now(self) -> list[AlertEvent]:
        """One collection tick: read sources, store samples, evaluate alerts, notify."""
        with self._tick_lock:
            started = time.perf_counter()
            readings = self.sources.read()
            events = self.recorder.apply_tick(readings, time.perf_counter() - started)
        self._dispatch(events)
        self.metrics_collected.emit()
        return events

    def seconds_since_last_collection(self) -> float | None:
        at = self.recorder.last_collection_at
        return None if at is None else time.monotonic() - at

    def target_up(self) -> bool | None:
        """Whether a sampled target process exists; None if no process is sampled."""
        return self.sources.target_up()

    def measured_by(self) -> dict[str, str]:
        """Series key -> the running source that measures it (a push of it is refused over
        HTTP: see :meth:`exporter.http.app.App.record`)."""
        return self.sources.measured_by()

    def target_miss(self) -> TargetMiss | None:
        """Why the target process is not found (what was looked for, the nearest names)."""
        return self.sources.target_miss()

    def _dispatch(self, events: list[AlertEvent]) -> None:
        for event in events:
            getattr(log, "info" if event.kind == RESOLVED else event.level.lower())(
                "alert %s: %s%s %s (value %g%s)",
                event.kind,
                event.metric,
                "".join(f" {k}={v}" for k, v in event.labels.items()),
                event.level,
                event.value,
                "".join(
                    f", {name} {threshold:g}"
                    for name, threshold in (
                        ("warning", event.warning_threshold),
                        ("critical", event.critical_threshold),
                    )
                    if threshold is not None
                ),
                extra={"alert_event": event},
            )
            if event.kind != RESOLVED:
                self.alert_triggered.emit(event.metric, event.level, event.value)
            self.alert_event.emit(event)

    # --- recording -------------------------------------------------------------------------

    def record_memory_usage(self, memory_mb: float) -> None:
        self._dispatch(self.recorder.push({"memory_usage": check_gauge("memory usage", memory_mb)}))

    def record_cpu_usage(self, cpu_percent: float) -> None:
        self._dispatch(self.recorder.push({"cpu_usage": check_gauge("CPU usage", cpu_percent)}))

    def record_websocket_connections(self, active: int, total: int) -> None:
        values = {
            "active_connections": check_count("active connections", active),
            "total_connections": check_count("total connections", total),
        }
        self._dispatch(self.recorder.push(values))

    def record_extension_status(self, extension_id: str, status: str) -> None:
        """Status is one of running, stopped, crashed, starting; anything else: ValueError."""
        extension_id, status = validate_extension(extension_id, status)
        self._dispatch(self.recorder.set_extension(extension_id, status))

    def record_request_latency(self, endpoint: str, latency_ms: float) -> None:
        """Thread-safe and cheap: called on every request of the monitored service."""
        endpoint, latency_ms = validate_latency(endpoint, latency_ms)
        self._dispatch(self.recorder.observe_latency(endpoint, latency_ms))

    def record_batch(self, batch: Batch) -> BatchOutcome:
        """Apply a validated ingest batch atomically; says what each cap dropped."""
        outcome, events = self.recorder.apply_batch(batch)
        self._dispatch(events)
        return outcome

    # --- retrieval -------------------------------------------------------------------------

    def get_metrics(self, last_n: int = -1) -> dict[str, Any]:
        """The seed's /metrics document; ``last_n`` < 0 means every stored sample."""
        return self.renderer.metrics(None if last_n < 0 else last_n)

    def render_metrics_json(self, last_n: int = -1) -> bytes:
        """``get_metrics(last_n)`` as JSON text, from incrementally cached sample text."""
        return self.renderer.metrics_json(None if last_n < 0 else last_n)

    def get_metrics_summary(self) -> dict[str, Any]:
        return self.renderer.summary()

    def get_alerts(self) -> list[dict[str, Any]]:
        """The seed's getAlerts(): the active alerts as JSON objects."""
        return self.renderer.alerts()

    def get_active_alerts(self) -> list[ActiveAlert]:
        return self.renderer.active_alerts()

    def firing_alerts(self) -> list[ActiveAlert]:
        """One record per firing level (a WARNING stays listed while CRITICAL fires, as two
        Prometheus rules would); what the Alertmanager notifier keeps in sync."""
        return self.renderer.active_alerts(per_level=True)

    def exposition_snapshot(self) -> ExpositionSnapshot:
        return self.renderer.snapshot()

    # --- alert management ------------------------------------------------------------------

    def add_alert(self, rule: AlertRule) -> None:
        """Add a rule, replacing any for the same metric (and endpoint/extension selector)."""
        ev = self.recorder.evaluator
        self._dispatch(self.recorder.change_rules(lambda now: ev.add_rule(rule, now)))

    def remove_alert(self, metric_name: str) -> None:
        ev = self.recorder.evaluator
        self._dispatch(self.recorder.change_rules(lambda now: ev.remove_rules(metric_name, now)))

    def enable_alert(self, metric_name: str, enabled: bool = True) -> None:
        ev = self.recorder.evaluator
        self._dispatch(
            self.recorder.change_rules(lambda now: ev.set_enabled(metric_name, enabled, now))
        )

    def set_alert_rules(self, rules: Iterable[AlertRule]) -> None:
        """Replace every rule (config reload); alerts of rules that went away resolve."""
        self._dispatch(self.recorder.set_rules(rules))

    def alert_rules(self) -> list[AlertRule]:
        with self.recorder.lock:
            return self.recorder.evaluator.rules()

    # --- exports ---------------------------------------------------------------------------

    def export_prometheus(self, openmetrics: bool = False) -> str:
        """Prometheus text format 0.0.4, or OpenMetrics 1.0 when asked for."""
        return self.renderer.exposition(openmetrics).decode()

    def render_exposition(self, openmetrics: bool = False, wait: bool = True) -> bytes:
        """The exposition as bytes, as the HTTP server sends it; with ``wait`` False,
        :class:`~exporter.rendering.WouldWait` rather than wait on a lock or on I/O."""
        return self.renderer.exposition(openmetrics, wait)

    def export_json(self) -> dict[str, Any]:
        """Everything kept: the /metrics document over the whole history."""
        return self.get_metrics(-1)

    def export_csv(self, last_n: int = -1) -> str:
        return self.renderer.csv(None if last_n < 0 else last_n)

    # --- reconfiguration (config reload) ----------------------------------------------------

    def set_sources(self, sources: Iterable[Source]) -> None:
        """Replace the sources between ticks; their series join or leave the catalog (kept
        series keep their history); the old sources are closed."""
        new = list(sources)
        with self._tick_lock, self.recorder.lock:
            old = self.sources.replace(new)
            self.store.set_catalog(catalog_for(new))
        for source in old:
            source.close()

    def reconfigure_storage(self, settings: StoreSettings) -> None:
        """Apply new limits keeping what is recorded (the newest samples that still fit)."""
        self.recorder.reconfigure(settings)

    def add_status_provider(self, provider: StatusProvider, may_wait: bool = False) -> None:
        """Metrics about the exporter's own machinery (config reloads, notifier queues), in
        the spirit of a prometheus_client custom collector: called at every scrape.
        ``may_wait``: it may wait on file I/O (then scrapes never render on the event loop)."""
        self.renderer.status_providers.append(provider)
        if may_wait:
            self.renderer.waiting_providers.append(provider)

    def remove_status_provider(self, provider: StatusProvider) -> None:
        self.renderer.status_providers.remove(provider)
        if provider in self.renderer.waiting_providers:
            self.renderer.waiting_providers.remove(provider)

    def close(self) -> None:
        self.stop_collection()
        self.sources.close()
        self.renderer.close()

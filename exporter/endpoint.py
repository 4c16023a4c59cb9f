"""MetricsEndpoint: the seed's monitor, for Python programs that embed it and for the daemon.

One lock guards the store, the alert evaluator and the values pushed since the last tick, so
every reader sees one consistent moment and any number of threads may record at once.
Source I/O and callbacks run outside the lock.

Recording follows the seed's two modes.  While collection runs, pushed gauge values
(memory, CPU, connections) are folded into the next tick's sample, overriding what the
sources read, and latency observations are averaged over the interval: the history keeps
one sample per interval, so 1440 samples stay 24 hours.  While collection is stopped, each
call records a sample at once (the seed's "Manual Recording") and alerts are evaluated on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.events import RESOLVED, ActiveAlert, AlertEvent
from exporter.alerts.rules import DEFAULT_RULES, ENDPOINT_METRICS, AlertRule
from exporter.documents import (
    Meta,
    alerts_document,
    csv_rows,
    metrics_document,
    render_csv,
    summary_document,
)
from exporter.extensions import validate_extension
from exporter.ingest import Batch
from exporter.latency import DEFAULT_BUCKETS_SECONDS, validate_latency
from exporter.signals import Signal
from exporter.snapshot import ExpositionSnapshot, StatusFamily
from exporter.sources.base import Source
from exporter.sources.process import ProcessSource
from exporter.sources.targets import SelfFinder
from exporter.store import DEFAULT_CAPACITY, SERIES_KEYS, MetricStore
from exporter.values import DEFAULT_INTERVAL_MS, check_count, check_gauge, check_interval_ms

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class MetricsEndpoint:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        rules: Iterable[AlertRule] = DEFAULT_RULES,
        sources: Iterable[Source] | None = None,
        latency_window: int = 1000,
        max_endpoints: int = 100,
        max_extensions: int = 100,
        buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = time.monotonic()
        self._interval_ms = check_interval_ms(interval_ms)
        self.store = MetricStore(
            capacity, latency_window, max_endpoints, max_extensions, buckets_seconds
        )
        self._status_providers: list[Callable[[], Iterable[StatusFamily]]] = []
        self._evaluator = AlertEvaluator(rules)
        self._sources: list[Source] = (
            [ProcessSource(SelfFinder())] if sources is None else list(sources)
        )
        self._pending: dict[str, float] = {}
        self._collections = 0
        self._last_collection_seconds: float | None = None
        self._last_collection_at: float | None = None
        self._errors: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._heartbeat: tuple[Callable[[], None] | None, float] = (None, 0.0)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._collect_lock = threading.Lock()  # one tick at a time, whoever calls it
        self._renderer: Any = None
        self._json_renderer: Any = None
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
        self.set_collection_interval(interval_ms)
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="crankshaft-collector", daemon=True
            )
            self._thread.start()
        self.collection_started.emit()

    def stop_collection(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join()
        # Values pushed since the last tick are recorded now rather than lost.
        with self._lock:
            values = self._take_pushed()
            events = self._append_and_evaluate(values) if values else []
        self._dispatch(events)
        self.collection_stopped.emit()

    def is_collecting(self) -> bool:
        return self._thread is not None

    def set_collection_interval(self, interval_ms: int) -> None:
        self._interval_ms = check_interval_ms(interval_ms)
        self._wake.set()

    @property
    def collection_interval_ms(self) -> int:
        return self._interval_ms

    def _run(self) -> None:
        # A first tick right after start would read CPU over a window too short to mean
        # anything (or the exporter's own start-up burst): wait for the sources to warm up.
        warmup = max((s.warmup_seconds() for s in self._sources), default=0.0)
        if warmup and self._stop.wait(warmup):
            return
        last: float | None = None
        beat = -math.inf
        while not self._stop.is_set():
            interval = self._interval_ms / 1000.0
            now = time.monotonic()
            if last is None or now - last >= interval:
                # Keep to the schedule (no drift) unless a tick ran over a whole interval.
                last = now if last is None or now - last >= 2 * interval else last + interval
                try:
                    self.collect_now()
                except Exception:  # never let the loop die: the watchdog would restart us
                    log.exception("collection failed")
                    with self._lock:
                        self._errors["collector"] += 1
            heartbeat, every = self._heartbeat
            if heartbeat is not None and time.monotonic() - beat >= every:
                beat = time.monotonic()
                try:
                    heartbeat()
                except Exception:
                    log.exception("heartbeat failed")
            due = last + self._interval_ms / 1000.0
            if heartbeat is not None:
                due = min(due, beat + every)
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def set_heartbeat(self, callback: Callable[[], None] | None, every_seconds: float) -> None:
        """Call ``callback`` from the collector loop at least every ``every_seconds``.

        The systemd watchdog is fed this way: if the loop hangs, the pings stop.
        """
        self._heartbeat = (callback, every_seconds)
        self._wake.set()

    def collect_now(self) -> list[AlertEvent]:
        """One collection tick: read sources, store samples, evaluate alerts, notify."""
        with self._collect_lock:
            started = time.perf_counter()
            values: dict[str, float] = {}
            failed: list[str] = []
            for source in self._sources:
                try:
                    values.update(source.collect())
                except Exception as e:  # a broken source must not stop the others
                    log.warning("source %s: %s", source.name, e)
                    failed.append(source.name)
            with self._lock:
                values.update(self._take_pushed())  # pushed values override what was read
                events = self._append_and_evaluate(values)
                self._errors.update(failed)
                self._collections += 1
                self._last_collection_seconds = time.perf_counter() - started
                self._last_collection_at = time.monotonic()
        self._dispatch(events)
        self.metrics_collected.emit()
        return events

    def seconds_since_last_collection(self) -> float | None:
        at = self._last_collection_at
        return None if at is None else time.monotonic() - at

    def target_up(self) -> bool | None:
        """Whether a sampled target process exists; None if no process is sampled."""
        procs = [s for s in self._sources if isinstance(s, ProcessSource)]
        return any(s.up for s in procs) if procs else None

    def _alert_inputs(self, values: Mapping[str, float]) -> dict[tuple[str, str], float]:
        """Values the evaluator sees now (under the lock).  Absent means "hold state"."""
        inputs = {(key, ""): v for key, v in values.items()}
        up = self.target_up()
        if up is not None:
            inputs[("target_down", "")] = 0.0 if up else 1.0
        for ext, status in self.store.extensions.statuses().items():
            inputs[("extension_crashed", ext)] = 1.0 if status == "crashed" else 0.0
        wanted = {r.metric for r in self._evaluator.rules() if r.enabled} & set(ENDPOINT_METRICS)
        if wanted:  # sorting windows costs; only when a rule looks at percentiles
            for endpoint, p in self.store.latency.breakdown().items():
                if "request_latency_p95" in wanted:
                    inputs[("request_latency_p95", endpoint)] = p.p95
                if "request_latency_p99" in wanted:
                    inputs[("request_latency_p99", endpoint)] = p.p99
        return inputs

    def _dispatch(self, events: list[AlertEvent]) -> None:
        for event in events:
            level = "warning" if event.level == "WARNING" else "critical"
            subject = "".join(f" {k}={v}" for k, v in event.labels.items())
            getattr(log, "info" if event.kind == RESOLVED else level)(
                "alert %s: %s%s %s (value %g, warning %s, critical %s)",
                event.kind,
                event.metric,
                subject,
                event.level,
                event.value,
                event.warning_threshold,
                event.critical_threshold,
                extra={"alert_event": event},
            )
            if event.kind != RESOLVED:
                self.alert_triggered.emit(event.metric, event.level, event.value)
            self.alert_event.emit(event)

    # --- recording -------------------------------------------------------------------------

    def _now_ms(self) -> float:
        """Whole milliseconds, as every document prints them (so equal means equal)."""
        return float(int(self._clock() * 1000.0))

    def _take_pushed(self) -> dict[str, float]:
        """What was pushed since the last sample (caller holds the lock): the gauges, and
        the interval's mean latency if anything was observed.  Clears both."""
        values = self._pending
        self._pending = {}
        latency = self.store.latency.take_interval_average()
        if latency is not None:
            values["request_latency"] = latency
        return values

    def _append_and_evaluate(self, values: Mapping[str, float]) -> list[AlertEvent]:
        """Record samples at once and evaluate alerts on them (caller holds the lock)."""
        now_ms = self._now_ms()
        for key, value in values.items():
            self.store.append(key, now_ms, value)
        return self._evaluator.evaluate(now_ms, self._alert_inputs(values))

    def _record(self, values: Mapping[str, float]) -> None:
        with self._lock:
            if self._thread is not None:
                self._pending.update(values)
                return
            events = self._append_and_evaluate(values)
        self._dispatch(events)

    def record_memory_usage(self, memory_mb: float) -> None:
        self._record({"memory_usage": check_gauge("memory usage", memory_mb)})

    def record_cpu_usage(self, cpu_percent: float) -> None:
        self._record({"cpu_usage": check_gauge("CPU usage", cpu_percent)})

    def record_websocket_connections(self, active: int, total: int) -> None:
        self._record(
            {
                "active_connections": check_count("active connections", active),
                "total_connections": check_count("total connections", total),
            }
        )

    def record_extension_status(self, extension_id: str, status: str) -> None:
        """Status is one of running, stopped, crashed, starting; anything else: ValueError."""
        extension_id, status = validate_extension(extension_id, status)
        events: list[AlertEvent] = []
        with self._lock:
            now_ms = self._now_ms()
            self.store.extensions.set(extension_id, status, now_ms)
            if self._thread is None:
                key = ("extension_crashed", extension_id)
                events = self._evaluator.evaluate(
                    now_ms, {key: 1.0 if status == "crashed" else 0.0}
                )
        self._dispatch(events)

    def record_request_latency(self, endpoint: str, latency_ms: float) -> None:
        """Thread-safe and cheap: called on every request of the monitored service."""
        endpoint, latency_ms = validate_latency(endpoint, latency_ms)
        with self._lock:
            self.store.latency.observe(endpoint, latency_ms)
            if self._thread is not None:
                return
            values = self._take_pushed()
            if not values:  # dropped by the endpoint cap
                return
            events = self._append_and_evaluate(values)
        self._dispatch(events)

    def record_batch(self, batch: Batch) -> int:
        """Apply a validated ingest batch atomically; returns latency observations dropped
        by the endpoint cap."""
        events: list[AlertEvent] = []
        dropped = 0
        with self._lock:
            now_ms = self._now_ms()
            for ext, status in batch.extensions:
                self.store.extensions.set(ext, status, now_ms)
            for endpoint, values in batch.latencies:
                dropped += self.store.latency.observe_many(endpoint, values)
            if self._thread is not None:
                self._pending.update(batch.gauges)
            else:
                events = self._append_and_evaluate({**batch.gauges, **self._take_pushed()})
        self._dispatch(events)
        return dropped

    # --- retrieval -------------------------------------------------------------------------

    def _meta(self) -> Meta:
        return Meta(
            timestamp_ms=self._now_ms(),
            uptime_ms=(time.monotonic() - self._started) * 1000.0,
            is_collecting=self._thread is not None,
            collection_interval_ms=self._interval_ms,
        )

    def get_metrics(self, last_n: int = -1) -> dict[str, Any]:
        """The seed's /metrics document; ``last_n`` < 0 means every stored sample."""
        with self._lock:
            return metrics_document(self.store, self._meta(), None if last_n < 0 else last_n)

    def render_metrics_json(self, last_n: int = -1) -> bytes:
        """``get_metrics(last_n)`` as JSON text, from incrementally cached sample text."""
        from exporter.json_render import MetricsJsonRenderer

        with self._lock:
            if self._json_renderer is None:
                self._json_renderer = MetricsJsonRenderer()
            return self._json_renderer.render(
                self.store, self._meta(), None if last_n < 0 else last_n
            )

    def get_metrics_summary(self) -> dict[str, Any]:
        with self._lock:
            return summary_document(self.store, self._meta(), self._evaluator.active())

    def get_alerts(self) -> list[dict[str, Any]]:
        """The seed's getAlerts(): the active alerts as JSON objects."""
        with self._lock:
            return alerts_document(self._evaluator.active())

    def get_active_alerts(self) -> list[ActiveAlert]:
        with self._lock:
            return self._evaluator.active()

    def firing_alerts(self) -> list[ActiveAlert]:
        """One record per firing level (a WARNING stays listed while CRITICAL fires, as two
        Prometheus rules would); ``since_ms`` is when the instance reached its current level.
        What the Alertmanager notifier keeps in sync."""
        with self._lock:
            return self._evaluator.active(per_level=True)

    def exposition_snapshot(self) -> ExpositionSnapshot:
        status: list[StatusFamily] = []
        for provider in list(self._status_providers):  # outside the lock: they have their own
            try:
                status.extend(provider())
            except Exception:
                log.exception("status provider %r failed", provider)
        with self._lock:
            return ExpositionSnapshot(
                latest={key: self.store.latest(key) for key in SERIES_KEYS},
                histograms=self.store.latency.histograms(),
                extensions=self.store.extensions.statuses(),
                firing=self._evaluator.firing(),
                rules=self._evaluator.rules(),
                target_up=self.target_up(),
                collections=self._collections,
                last_collection_seconds=self._last_collection_seconds,
                # every source listed, 0 until it fails: rate() works from the start
                collection_errors={**{s.name: 0 for s in self._sources}, **self._errors},
                dropped_latency_observations=self.store.latency.dropped_observations,
                dropped_extension_updates=self.store.extensions.dropped_updates,
                status=status,
            )

    # --- alert management ------------------------------------------------------------------

    def _change_rules(self, change: Callable[[float], list[AlertEvent]]) -> None:
        with self._lock:
            events = change(self._now_ms())
        self._dispatch(events)

    def add_alert(self, rule: AlertRule) -> None:
        """Add a rule, replacing any for the same metric (and endpoint/extension selector)."""
        self._change_rules(lambda now: self._evaluator.add_rule(rule, now))

    def remove_alert(self, metric_name: str) -> None:
        self._change_rules(lambda now: self._evaluator.remove_rules(metric_name, now))

    def enable_alert(self, metric_name: str, enabled: bool = True) -> None:
        self._change_rules(lambda now: self._evaluator.set_enabled(metric_name, enabled, now))

    def set_alert_rules(self, rules: Iterable[AlertRule]) -> None:
        """Replace every rule (config reload); alerts of rules that went away resolve."""
        rules = list(rules)
        self._change_rules(lambda now: self._evaluator.set_rules(rules, now))

    def alert_rules(self) -> list[AlertRule]:
        with self._lock:
            return self._evaluator.rules()

    # --- exports ---------------------------------------------------------------------------

    def export_prometheus(self, openmetrics: bool = False) -> str:
        """Prometheus text format 0.0.4, or OpenMetrics 1.0 when asked for."""
        return self.render_exposition(openmetrics).decode()

    def render_exposition(self, openmetrics: bool = False) -> bytes:
        """The exposition as bytes, as the HTTP server sends it."""
        from exporter.exposition import ExpositionRenderer  # prometheus_client is heavy

        if self._renderer is None:
            self._renderer = ExpositionRenderer()
        return self._renderer.render(self.exposition_snapshot(), openmetrics)

    def export_json(self) -> dict[str, Any]:
        """Everything kept: the /metrics document over the whole history."""
        return self.get_metrics(-1)

    def export_csv(self, last_n: int = -1) -> str:
        with self._lock:
            header, rows = csv_rows(self.store, None if last_n < 0 else last_n)
        return render_csv(header, rows)

    # --- reconfiguration (config reload) ----------------------------------------------------

    def set_sources(self, sources: Iterable[Source]) -> None:
        """Replace the sources; the old ones are closed after the current tick."""
        new = list(sources)
        with self._collect_lock:
            old, self._sources = self._sources, new
        for source in old:
            if source not in new:
                source.close()

    def reconfigure_storage(
        self, capacity: int, latency_window: int, max_endpoints: int, max_extensions: int
    ) -> None:
        """Apply new limits keeping what is recorded (the newest samples that still fit)."""
        with self._lock:
            self.store.resize(capacity)
            self.store.latency.reconfigure(latency_window, max_endpoints)
            self.store.extensions.max_extensions = max_extensions

    def add_status_provider(self, provider: Callable[[], Iterable[StatusFamily]]) -> None:
        """Metrics about the exporter's own machinery (config reloads, notifier queues), in
        the spirit of a prometheus_client custom collector: called at every scrape."""
        self._status_providers.append(provider)

    def remove_status_provider(self, provider: Callable[[], Iterable[StatusFamily]]) -> None:
        self._status_providers.remove(provider)

    def close(self) -> None:
        self.stop_collection()
        for source in self._sources:
            source.close()

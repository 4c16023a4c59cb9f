"""Recording: every change to what the monitor knows, under its one lock.

One lock guards the store, the alert evaluator and the values pushed since the last tick,
so every reader sees one consistent moment and any number of threads may record at once.
Methods return the alert transitions they caused; the caller dispatches them outside the
lock.

The seed's two modes: while collection runs, pushed gauge values (memory, CPU,
connections) are folded into the next tick's sample, overriding what the sources read,
and latency observations are averaged over the interval, so the history keeps one sample
per interval.  While it is stopped, each call records a sample at once (the seed's "Manual
Recording") and alerts are evaluated on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.alert_inputs import alert_inputs
from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.events import AlertEvent
from exporter.alerts.rules import LATENCY_METRICS, AlertRule
from exporter.config.durations import format_duration
from exporter.ingest import Batch
from exporter.sampling import Readings
from exporter.store import MetricStore, StoreSettings

log = logging.getLogger(__name__)

LATENCY_KEY = "request_latency"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What an ingest batch changed, per kind: accepted, and dropped by a cap."""

    gauges: int
    extensions: int
    extensions_dropped: int
    observations: int
    observations_dropped: int


class Recorder:
    def __init__(
        self,
        store: MetricStore,
        evaluator: AlertEvaluator,
        target_up: Callable[[], bool | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.Lock()
        self.store = store
        self.evaluator = evaluator
        self._target_up = target_up
        self._clock = clock
        self._pending: dict[str, float] = {}
        self.collecting = False  # set by the facade: pushes wait for the next tick
        self.collections = 0
        self.last_collection_seconds: float | None = None
        self.last_collection_at: float | None = None  # monotonic
        self.last_collection_ms: float | None = None  # the tick's own timestamp
        self._quiet_said = False

    def now_ms(self) -> float:
        """Whole milliseconds, as every document prints them (so equal means equal)."""
        return float(int(self._clock() * 1000.0))

    # --- what is known now (caller holds the lock) -----------------------------------------

    def latency_live(self, now_ms: float) -> bool:
        """Whether a latency observation arrived within ``latency.quiet_after``."""
        last = self.store.latency.last_observation_ms
        quiet_ms = self.store.settings.latency_quiet_after_s * 1000.0
        return last is not None and now_ms - last < quiet_ms

    def current(self, now_ms: float) -> dict[str, float]:
        """The values present now: latency is absent once traffic has been quiet."""
        values = dict(self.store.current)
        if LATENCY_KEY in values and not self.latency_live(now_ms):
            del values[LATENCY_KEY]
        return values

    # --- recording (caller holds the lock) --------------------------------------------------

    def _take_pushed(self, now_ms: float) -> tuple[dict[str, float], list[AlertEvent]]:
        """What was pushed since the last sample: the gauges, and the interval's mean
        latency if anything was observed (both cleared); or, once latency has been quiet
        for ``quiet_after``, its alerts resolved."""
        values, self._pending = self._pending, {}
        latency = self.store.latency.take_interval_average()
        if latency is not None:
            values[LATENCY_KEY] = latency
            self._quiet_said = False
            return values, []
        if self.latency_live(now_ms) or self.store.latency.last_observation_ms is None:
            return values, []
        self.store.current.pop(LATENCY_KEY, None)
        events = self.evaluator.resolve_metrics(LATENCY_METRICS, now_ms)
        if not self._quiet_said:
            self._quiet_said = True
            log.info(
                "no latency observation for %s (latency.quiet_after): request latency is "
                "absent and its alerts resolve until traffic comes back",
                format_duration(self.store.settings.latency_quiet_after_s),
            )
        return values, events

    def _append_and_evaluate(self, values: Mapping[str, float], now_ms: float) -> list[AlertEvent]:
        for key, value in values.items():
            self.store.append(key, now_ms, value)
        inputs = alert_inputs(
            self.store, self.evaluator, values, self._target_up(), self.latency_live(now_ms)
        )
        return self.evaluator.evaluate(now_ms, inputs)

    def apply_tick(self, readings: Readings, seconds: float) -> list[AlertEvent]:
        """Store one tick's readings with what was pushed since, and evaluate alerts."""
        with self.lock:
            now = self.now_ms()
            for key in readings.owned - readings.values.keys():
                self.store.current.pop(key, None)  # its source ran and could not read it
            pushed, events = self._take_pushed(now)
            events += self._append_and_evaluate({**readings.values, **pushed}, now)
            self.collections += 1
            self.last_collection_ms = now
            self.last_collection_seconds = seconds
            self.last_collection_at = time.monotonic()
        return events

    def flush_pushed(self) -> list[AlertEvent]:
        """Record what was pushed since the last tick (collection stops: nothing is lost)."""
        with self.lock:
            now = self.now_ms()
            pushed, events = self._take_pushed(now)
            if pushed:
                events += self._append_and_evaluate(pushed, now)
        return events

    def push(self, values: Mapping[str, float]) -> list[AlertEvent]:
        """Checked gauge values (series key -> value) from the program or a client."""
        with self.lock:
            if self.collecting:
                self._pending.update(values)
                return []
            return self._append_and_evaluate(values, self.now_ms())

    def observe_latency(self, endpoint: str, latency_ms: float) -> list[AlertEvent]:
        with self.lock:
            now = self.now_ms()
            self.store.latency.observe(endpoint, latency_ms, now)
            if self.collecting:
                return []
            values, events = self._take_pushed(now)
            if not values:  # dropped by the endpoint cap
                return events
            return events + self._append_and_evaluate(values, now)

    def set_extension(self, extension_id: str, status: str) -> list[AlertEvent]:
        with self.lock:
            now = self.now_ms()
            self.store.extensions.set(extension_id, status, now)
            if self.collecting:
                return []
            key = ("extension_crashed", extension_id)
            return self.evaluator.evaluate(now, {key: 1.0 if status == "crashed" else 0.0})

    def apply_batch(self, batch: Batch) -> tuple[BatchOutcome, list[AlertEvent]]:
        """A validated ingest batch, applied atomically."""
        events: list[AlertEvent] = []
        dropped_ext = dropped_obs = 0
        with self.lock:
            now = self.now_ms()
            for ext, status in batch.extensions:
                dropped_ext += not self.store.extensions.set(ext, status, now)
            for endpoint, values in batch.latencies:
                dropped_obs += self.store.latency.observe_many(endpoint, values, now)
            if self.collecting:
                self._pending.update(batch.gauges)
            else:
                pushed, events = self._take_pushed(now)
                events += self._append_and_evaluate({**batch.gauges, **pushed}, now)
        outcome = BatchOutcome(
            gauges=len(batch.gauges),
            extensions=len(batch.extensions) - dropped_ext,
            extensions_dropped=dropped_ext,
            observations=batch.observation_count - dropped_obs,
            observations_dropped=dropped_obs,
        )
        return outcome, events

    # --- rules and limits -------------------------------------------------------------------

    def change_rules(self, change: Callable[[float], list[AlertEvent]]) -> list[AlertEvent]:
        with self.lock:
            return change(self.now_ms())

    def set_rules(self, rules: Iterable[AlertRule]) -> list[AlertEvent]:
        rules = list(rules)
        return self.change_rules(lambda now: self.evaluator.set_rules(rules, now))

    def reconfigure(self, settings: StoreSettings) -> None:
        with self.lock:
            self.store.reconfigure(settings)

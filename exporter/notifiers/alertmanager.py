"""Alertmanager: keep it in sync with the firing alert levels, the way Prometheus does.

Each firing level is one Alertmanager alert, exactly as the rules of ``crankshaft-exporter
alert-rules`` would make Prometheus send it (a WARNING keeps firing while CRITICAL does;
route or inhibit on ``severity``)::

    labels:      alertname (CrankshaftActiveConnections ...), severity (warning|critical),
                 metric, instance (this host's name), job ("crankshaft-exporter"),
                 and endpoint or extension for per-endpoint/per-extension alerts
    annotations: summary (the rule's description), description (value and thresholds)
    startsAt:    when the level was first seen firing
    endsAt:      now + 4 x resend_interval while firing (Alertmanager resolves the alert by
                 itself if the exporter goes away); the resolution time once it stopped

The whole state (every firing level, plus the levels that stopped and whose resolution has
not reached Alertmanager yet) is rendered when it is sent, and POSTed to
``{url}/api/v2/alerts`` on every alert transition and every ``resend_interval``.  A failed
POST is retried with backoff; since the next attempt renders the state again, nothing is
lost while Alertmanager is down: firing alerts are re-sent as long as they fire, and a
resolution is re-sent until one POST carrying it succeeds or it is older than
``retry_window`` (then it is counted as dropped, reason ``expired``, and Alertmanager
resolves the alert by itself when its last ``endsAt`` passes).  At most one POST is waiting
at any time, so an outage costs no memory beyond the alerts themselves.

``startsAt`` is exact when the notifier is running as the level starts firing; for a level
already firing when the notifier starts (a daemon restart, a reload that changed the
Alertmanager settings) it is when its alert instance reached its current level.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from exporter.alerts.events import ActiveAlert, AlertEvent
from exporter.alerts.rules import LEVELS
from exporter.config.model import AlertmanagerConfig
from exporter.notifiers.delivery import EXPIRED, Clock, DeliveryWorker, SystemClock, Transport
from exporter.notifiers.outbox import Outbox
from exporter.promrules import alert_name, unit_text

JOB = "crankshaft-exporter"
API_PATH = "/api/v2/alerts"
SYNC_KEY = "sync"

AlertKey = tuple[str, str, tuple[tuple[str, str], ...]]  # metric, level, labels


def rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def alert_key(alert: ActiveAlert) -> AlertKey:
    return (alert.metric, alert.level, tuple(sorted(alert.labels.items())))


class _Sync:
    """The one payload that stands for "send Alertmanager the current state"."""

    __slots__ = ("_notifier",)

    def __init__(self, notifier: AlertmanagerNotifier) -> None:
        self._notifier = notifier

    def render(self) -> bytes | None:
        return self._notifier.render()

    def delivered(self) -> None:
        self._notifier.delivered()


class AlertmanagerNotifier:
    kind = "alertmanager"

    def __init__(
        self,
        config: AlertmanagerConfig,
        firing_alerts: Callable[[], list[ActiveAlert]],
        *,
        name: str = "alertmanager",
        instance: str | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox  # resolutions not yet delivered, kept across restarts
        self.instance = instance or socket.gethostname()
        self._firing_alerts = firing_alerts
        self._clock = clock or SystemClock()
        self._wall = wall_clock
        self.worker = DeliveryWorker(
            name,
            config.url.rstrip("/") + API_PATH,
            timeout=config.timeout,
            max_retries=None,  # bounded by retry_window; state is re-rendered anyway
            retry_window=config.retry_window,
            max_queue=2,  # one sync waiting (keyed) is all it takes
            transport=transport,
            clock=self._clock,
        )
        self._lock = threading.Lock()
        # Firing levels last seen: key -> (the alert, startsAt in ms since the epoch).
        self._firing: dict[AlertKey, tuple[ActiveAlert, float]] = {}
        # Levels that stopped: key -> (alert document with endsAt, monotonic time resolved).
        self._resolved: dict[AlertKey, tuple[dict[str, Any], float]] = {}
        self._included: dict[AlertKey, float] = {}  # resolutions in the last rendered body
        self._kept: dict[AlertKey, int] = {}  # resolution -> its id in the outbox
        if outbox is not None:  # resolutions from before a restart, sent with the next sync
            for ident, doc in outbox.items():
                key = ("restored", str(ident), ())
                self._resolved[key] = (doc, self._clock.monotonic())
                self._kept[key] = ident
        self._sync = _Sync(self)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.worker.name

    def start(self) -> AlertmanagerNotifier:
        self.worker.start()
        self._ticker = threading.Thread(target=self._tick, name=f"resend-{self.name}", daemon=True)
        self._ticker.start()
        self.sync()  # whatever already fires
        return self

    def _tick(self) -> None:
        while not self._clock.wait(self._stop, self.config.resend_interval):
            self.sync()

    # --- state -------------------------------------------------------------------------------

    def on_event(self, event: AlertEvent) -> None:
        """The endpoint's alert_event callback: note the change, queue a sync (no I/O)."""
        self.observe()
        self.sync()

    def sync(self) -> None:
        self.worker.submit(self._sync, key=SYNC_KEY)

    def observe(self) -> list[tuple[ActiveAlert, float]]:
        """Compare the firing levels with the last ones seen; the ones gone are resolved."""
        alerts = self._firing_alerts()
        now_s, now_mono = self._wall(), self._clock.monotonic()
        with self._lock:
            current: dict[AlertKey, tuple[ActiveAlert, float]] = {}
            for alert in alerts:
                key = alert_key(alert)
                seen = self._firing.get(key)
                current[key] = (alert, alert.since_ms if seen is None else seen[1])
                if self._resolved.pop(key, None) is not None:  # firing again: no resolution
                    self._forget([key])
            for key, (alert, starts_ms) in self._firing.items():
                if key not in current:
                    doc = self.document(alert, starts_ms, max(now_s, starts_ms / 1000.0))
                    self._resolved[key] = (doc, now_mono)
                    if self.outbox is not None:
                        self._forget([key])
                        self._kept[key] = self.outbox.add(doc)
            self._firing = current
            return list(current.values())

    def render(self) -> bytes | None:
        """The body of a POST now: every firing level and every undelivered resolution."""
        firing = self.observe()
        now_s, now_mono = self._wall(), self._clock.monotonic()
        ends = now_s + 4 * self.config.resend_interval
        window = self.config.retry_window
        with self._lock:
            expired = [k for k, (_, at) in self._resolved.items() if now_mono - at >= window]
            for key in expired:
                del self._resolved[key]
            self._forget(expired)
            self._included = {key: at for key, (_, at) in self._resolved.items()}
            docs = [self.document(alert, starts_ms, ends) for alert, starts_ms in firing]
            docs.extend(doc for doc, _ in self._resolved.values())
        if expired:
            self.worker.count_dropped(EXPIRED, len(expired))
        if not docs:
            return None
        return json.dumps(docs, separators=(",", ":"), allow_nan=False).encode()

    def delivered(self) -> None:
        """The last rendered body reached Alertmanager: its resolutions are done."""
        with self._lock:
            done = []
            for key, at in self._included.items():
                entry = self._resolved.get(key)
                if entry is not None and entry[1] == at:
                    del self._resolved[key]
                    done.append(key)
            self._forget(done)
            self._included = {}

    def _forget(self, keys: list[AlertKey]) -> None:
        """These resolutions are settled: out of the outbox (called with the lock held)."""
        idents = [self._kept.pop(k) for k in keys if k in self._kept]
        if idents and self.outbox is not None:
            self.outbox.done(idents)

    def pending_resolutions(self) -> int:
        with self._lock:
            return len(self._resolved)

    def document(self, alert: ActiveAlert, starts_ms: float, ends_s: float) -> dict[str, Any]:
        severity = alert.level.lower()
        labels = {
            **alert.labels,
            "alertname": alert_name(alert.metric),
            "severity": severity,
            "metric": alert.metric,
            "instance": self.instance,
            "job": JOB,
        }
        unit = unit_text(alert.metric)
        subject = "".join(f" {k}={v}" for k, v in sorted(alert.labels.items()))
        limits = ", ".join(
            f"{lvl.lower()} above {t:g}{unit}"
            for lvl, t in zip(
                LEVELS, (alert.warning_threshold, alert.critical_threshold), strict=True
            )
            if t is not None
        )
        return {
            "labels": labels,
            "annotations": {
                "summary": alert.description or f"{alert.metric} above {severity} threshold",
                "description": (
                    f"{alert.metric}{subject} on {self.instance} is "
                    f"{alert.current_value:g}{unit} ({limits})."
                ),
            },
            "startsAt": rfc3339(starts_ms / 1000.0),
            "endsAt": rfc3339(ends_s),
        }

    # --- closing -----------------------------------------------------------------------------

    def begin_close(self) -> None:
        self._stop.set()
        self.worker.begin_close()

    def finish_close(self, deadline: float) -> list[Any]:
        ticker = self._ticker
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(max(0.0, deadline - time.monotonic()))
        return self.worker.finish_close(deadline)

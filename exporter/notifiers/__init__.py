"""Notifiers: alert transitions to webhooks and to a Prometheus Alertmanager.

``build_notifiers(config, endpoint)`` returns a :class:`Notifiers` that is subscribed to the
endpoint's alert events and reports its delivery counters as exporter self-metrics::

    crankshaft_notifications_sent_total{notifier}            delivered (2xx)
    crankshaft_notifications_failed_total{notifier}          attempts that did not deliver
    crankshaft_notifications_dropped_total{notifier,reason}  given up: queue_full,
                                                             retries_exhausted, expired, rejected
    crankshaft_notifications_queue_length{notifier}          waiting to be delivered

``notifier`` is ``alertmanager`` or ``webhook:`` and the webhook's URL without credentials
or query (``#2``, ``#3`` ... appended for the same URL configured twice).  For the
Alertmanager one notification is one POST of the whole alert state.

Each notifier delivers from its own thread; the alert callback only queues, so a dead
receiver never delays collection or HTTP requests.

Reload: :meth:`Notifiers.reconfigure` keeps every running notifier whose settings did not
change, with its queue (pending events carry over, in order) and its counters; it closes
the ones removed or changed (their undelivered events are logged as lost and dropped) and
starts the new ones.  An Alertmanager whose settings changed is re-synced from the current
firing state by its replacement.

Outages and restarts: with a state directory, each notifier keeps what it has not delivered
(webhook events; Alertmanager resolutions) in an outbox file there, and delivers it after a
restart, each with the time it happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from typing import Any, Protocol

from exporter.alerts.events import AlertEvent
from exporter.config.model import NotifiersConfig
from exporter.endpoint import MetricsEndpoint
from exporter.metric_names import NOTIFICATIONS_DROPPED, NOTIFICATIONS_FAILED
from exporter.notifiers.alertmanager import AlertmanagerNotifier
from exporter.notifiers.delivery import (
    DROP_REASONS,
    Clock,
    DeliveryWorker,
    Pending,
    SystemClock,
    Transport,
    redact_url,
)
from exporter.notifiers.outbox import Outbox
from exporter.notifiers.webhook import WebhookNotifier
from exporter.snapshot import StatusFamily

__all__ = [
    "AlertmanagerNotifier",
    "Clock",
    "DeliveryWorker",
    "Notifiers",
    "SystemClock",
    "WebhookNotifier",
    "build_notifiers",
]

log = logging.getLogger("exporter.notifiers")

SENT = "crankshaft_notifications_sent"
FAILED = NOTIFICATIONS_FAILED
DROPPED = NOTIFICATIONS_DROPPED
QUEUE_LENGTH = "crankshaft_notifications_queue_length"
CLOSE_TIMEOUT_S = 5.0


class _Notifier(Protocol):
    worker: DeliveryWorker

    @property
    def name(self) -> str: ...

    def on_event(self, event: AlertEvent) -> None: ...
    def begin_close(self) -> None: ...
    def finish_close(self, deadline: float) -> list[Any]: ...


class Notifiers:
    """The running notifiers of one endpoint; see the module docstring."""

    def __init__(
        self,
        endpoint: MetricsEndpoint,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        state_dir: str | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._state_dir = state_dir
        self._transport = transport
        self._clock = clock
        self._reconfigure_lock = threading.Lock()
        self.config = NotifiersConfig()
        self.webhooks: tuple[WebhookNotifier, ...] = ()
        self.alertmanager: AlertmanagerNotifier | None = None
        self._closed = False
        endpoint.on_alert_event(self._on_event)
        endpoint.add_status_provider(self.status)

    @property
    def all(self) -> tuple[_Notifier, ...]:
        am = self.alertmanager
        return (*self.webhooks, *((am,) if am is not None else ()))

    def _on_event(self, event: AlertEvent) -> None:
        for notifier in self.all:  # a snapshot: reconfigure swaps whole tuples
            try:
                notifier.on_event(event)
            except Exception:
                log.exception("notifier %s failed to queue an alert event", notifier.name)

    def reconfigure(self, config: NotifiersConfig, close_timeout: float = 1.0) -> None:
        """Apply new settings: keep what is unchanged (queues included), replace the rest."""
        with self._reconfigure_lock:
            if self._closed:
                raise RuntimeError("notifiers are closed")
            unused = list(self.webhooks)
            webhooks: list[WebhookNotifier] = []
            started: list[WebhookNotifier] = []
            seen: list[str] = []
            for wc in config.webhooks:
                seen.append(wc.url)
                same = next((h for h in unused if h.config == wc), None)
                if same is not None:
                    unused.remove(same)
                    webhooks.append(same)
                else:
                    hook = WebhookNotifier(
                        wc, name="", transport=self._transport, clock=self._clock,
                        outbox=self._outbox(f"webhook {wc.url} #{seen.count(wc.url)}"),
                    )
                    webhooks.append(hook)
                    started.append(hook)
            taken = {h.name for h in webhooks if h not in started}
            for hook in started:
                hook.worker.name = _unique(f"webhook:{redact_url(hook.config.url)}", taken)
                taken.add(hook.name)
                hook.start()
            retired: list[_Notifier] = list(unused)
            am = self.alertmanager
            if config.alertmanager != (am.config if am is not None else None):
                if am is not None:
                    retired.append(am)
                am = None
                if config.alertmanager is not None:
                    am = AlertmanagerNotifier(
                        config.alertmanager,
                        self._endpoint.firing_alerts,
                        transport=self._transport,
                        clock=self._clock,
                        outbox=self._outbox(f"alertmanager {config.alertmanager.url}"),
                    )
            new_am = am is not None and am is not self.alertmanager
            self.webhooks, self.alertmanager, self.config = tuple(webhooks), am, config
            if new_am and am is not None:
                am.start()
            _close_all(retired, close_timeout)
            for gone in retired:  # no longer configured: what it kept goes with it
                outbox = getattr(gone, "outbox", None)
                if outbox is not None:
                    outbox.discard()

    def _outbox(self, identity: str) -> Outbox | None:
        """The notifier's outbox file in the state directory (none without one)."""
        if self._state_dir is None:
            return None
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return Outbox(os.path.join(self._state_dir, "notifications", f"{digest}.json"))

    def status(self) -> list[StatusFamily]:
        """The delivery counters, as a status provider of the endpoint."""
        notifiers = self.all
        if not notifiers:
            return []
        sent, failed, dropped, queued = [], [], [], []
        for n in notifiers:
            st = n.worker.stats()
            who = {"notifier": n.name}
            sent.append((who, float(st.sent)))
            failed.append((who, float(st.failed)))
            queued.append((who, float(st.queue_length)))
            for reason in DROP_REASONS:
                dropped.append(({**who, "reason": reason}, float(st.dropped[reason])))
        return [
            StatusFamily(
                SENT,
                "counter",
                "Notifications delivered (2xx answer), per notifier; "
                "for the Alertmanager, POSTs of the alert state",
                sent,
            ),
            StatusFamily(
                FAILED,
                "counter",
                "Notification delivery attempts that failed "
                "(error status, timeout, connection error)",
                failed,
            ),
            StatusFamily(
                DROPPED,
                "counter",
                "Notifications given up, by reason: queue_full, "
                "retries_exhausted, expired, rejected",
                dropped,
            ),
            StatusFamily(QUEUE_LENGTH, "gauge", "Notifications waiting to be delivered", queued),
        ]

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> dict[str, list[Pending]]:
        """Unsubscribe, stop every thread (delivering what is ready within ``timeout``) and
        return what each notifier still had pending."""
        with self._reconfigure_lock:
            if self._closed:
                return {}
            self._closed = True
            notifiers = self.all
            with contextlib.suppress(ValueError):  # already gone
                self._endpoint.alert_event.disconnect(self._on_event)
            with contextlib.suppress(ValueError):
                self._endpoint.remove_status_provider(self.status)
            self.webhooks, self.alertmanager = (), None
        return _close_all(notifiers, timeout)


def _close_all(
    notifiers: list[_Notifier] | tuple[_Notifier, ...], timeout: float
) -> dict[str, list[Pending]]:
    deadline = time.monotonic() + timeout
    for n in notifiers:
        n.begin_close()
    return {n.name: n.finish_close(deadline) for n in notifiers}


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    i = 2
    while f"{name}#{i}" in taken:
        i += 1
    return f"{name}#{i}"


def build_notifiers(
    config: NotifiersConfig,
    endpoint: MetricsEndpoint,
    *,
    transport: Transport | None = None,
    clock: Clock | None = None,
    state_dir: str | None = None,
) -> Notifiers:
    """The notifiers of ``config``, started and subscribed to ``endpoint``'s alert events;
    with ``state_dir``, what they have not delivered is kept there across restarts."""
    notifiers = Notifiers(endpoint, transport=transport, clock=clock, state_dir=state_dir)
    notifiers.reconfigure(config)
    return notifiers

"""Webhooks: every alert transition POSTed as JSON, in order, retried in the background.

The body is the transition as :meth:`AlertEvent.to_json` gives it (``kind`` fired /
escalated / de-escalated / resolved, ``metric``, ``level``, ``previous_level``, ``value``,
the thresholds, ``description``, ``timestamp`` in ms since the epoch, and ``endpoint`` or
``extension`` for per-endpoint/per-extension alerts), plus ``"source": "crankshaft-exporter"``
and ``"instance"``, the host name.  Headers: ``Content-Type: application/json``, a
``User-Agent``, and the configured ones (which win).  With a state directory, events not
yet delivered are kept in an outbox file and delivered after a restart.  Delivery: see
:mod:`exporter.notifiers.delivery` (at least once; exactly once unless a receiver takes
longer than ``timeout`` to answer a request it did accept).
"""

from __future__ import annotations

import json
import socket
from typing import Any

from exporter.alerts.events import AlertEvent
from exporter.config.model import WebhookConfig
from exporter.notifiers.delivery import DEFAULT_MAX_QUEUE, Clock, DeliveryWorker, Transport
from exporter.notifiers.outbox import Outbox

SOURCE = "crankshaft-exporter"


class _EventBody:
    """Serialised on the delivery thread, not on the collector thread that reports it; once
    delivered or given up, it leaves the outbox (if there is one)."""

    __slots__ = ("doc", "ident", "outbox")

    def __init__(self, doc: dict[str, Any], outbox: Outbox | None = None,
                 ident: int | None = None) -> None:
        self.doc = doc
        self.outbox = outbox
        self.ident = ident

    def render(self) -> bytes:
        return json.dumps(self.doc, separators=(",", ":"), allow_nan=False).encode()

    def delivered(self) -> None:
        if self.outbox is not None and self.ident is not None:
            self.outbox.done([self.ident])

    dropped = delivered


class WebhookNotifier:
    kind = "webhook"

    def __init__(
        self,
        config: WebhookConfig,
        *,
        name: str | None = None,
        instance: str | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        transport: Transport | None = None,
        clock: Clock | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.instance = instance or socket.gethostname()
        self.outbox = outbox
        self.worker = DeliveryWorker(
            name or f"webhook {config.url}",
            config.url,
            headers=dict(config.headers),
            timeout=config.timeout,
            max_retries=config.max_retries,
            retry_window=config.retry_window,
            max_queue=max_queue,
            transport=transport,
            clock=clock,
        )

    @property
    def name(self) -> str:
        return self.worker.name

    def start(self) -> WebhookNotifier:
        """Start delivering, first what the outbox kept from before a restart."""
        if self.outbox is not None:
            for ident, doc in self.outbox.items():
                self.worker.submit(_EventBody(doc, self.outbox, ident))
        self.worker.start()
        return self

    def body(self, event: AlertEvent) -> dict[str, Any]:
        return {**event.to_json(), "source": SOURCE, "instance": self.instance}

    def on_event(self, event: AlertEvent) -> None:
        """The endpoint's alert_event callback: queue the transition (no I/O)."""
        doc = self.body(event)
        ident = None if self.outbox is None else self.outbox.add(doc)
        self.worker.submit(_EventBody(doc, self.outbox, ident))

    def begin_close(self) -> None:
        self.worker.begin_close()

    def finish_close(self, deadline: float) -> list[Any]:
        return self.worker.finish_close(deadline)

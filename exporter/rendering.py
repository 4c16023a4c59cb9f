"""Rendering: every way of reading the monitor, each from one consistent moment.

Documents are built under the recorder's lock and serialised after it is released.  The
exposition comes from one snapshot, rendered by the fast renderer (byte-identical to
prometheus_client's encoders, see :mod:`exporter.exposition.fast`); status providers (config
reloads, notifier queues) add families about the exporter itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import Metric

from exporter.alerts.events import ActiveAlert
from exporter.documents import (
    Meta,
    alerts_document,
    csv_rows,
    metrics_document,
    render_csv,
    summary_document,
)
from exporter.exposition.families import all_families
from exporter.exposition.fast import FastRenderer
from exporter.exposition.process import ProcessFamilies
from exporter.json_render import MetricsJsonRenderer
from exporter.recording import Recorder
from exporter.sampling import SourceSet
from exporter.snapshot import ExpositionSnapshot, StatusFamily

log = logging.getLogger(__name__)

StatusProvider = Callable[[], Iterable[StatusFamily]]


class WouldWait(Exception):
    """A render asked not to wait would have had to (see :meth:`Renderer.snapshot`)."""


class Renderer:
    def __init__(
        self,
        recorder: Recorder,
        sources: SourceSet,
        is_collecting: Callable[[], bool],
        interval_ms: Callable[[], int],
    ) -> None:
        self._recorder = recorder
        self._sources = sources
        self._is_collecting = is_collecting
        self._interval_ms = interval_ms
        self._started = time.monotonic()
        self._json = MetricsJsonRenderer()
        self._fast = FastRenderer()
        self._process = ProcessFamilies()  # prometheus_client's process_*, fewer syscalls
        self.status_providers: list[StatusProvider] = []
        self.waiting_providers: list[StatusProvider] = []  # those that may wait on I/O

    def meta(self) -> Meta:
        return Meta(
            timestamp_ms=self._recorder.now_ms(),
            uptime_ms=(time.monotonic() - self._started) * 1000.0,
            is_collecting=self._is_collecting(),
            collection_interval_ms=self._interval_ms(),
        )

    # --- the seed's documents ---------------------------------------------------------------

    def metrics(self, last_n: int | None) -> dict[str, Any]:
        rec = self._recorder
        with rec.lock:
            meta = self.meta()
            return metrics_document(
                rec.store, meta, last_n, current=rec.current(meta.timestamp_ms)
            )

    def metrics_json(self, last_n: int | None) -> bytes:
        """The ``/metrics`` document as JSON text, from incrementally cached sample text."""
        rec = self._recorder
        with rec.lock:
            meta = self.meta()
            return self._json.render(rec.store, meta, last_n, rec.current(meta.timestamp_ms))

    def summary(self) -> dict[str, Any]:
        rec = self._recorder
        with rec.lock:
            meta = self.meta()
            current = rec.current(meta.timestamp_ms)
            return summary_document(rec.store, meta, rec.evaluator.active(), current)

    def alerts(self) -> list[dict[str, Any]]:
        with self._recorder.lock:
            return alerts_document(self._recorder.evaluator.active())

    def active_alerts(self, per_level: bool = False) -> list[ActiveAlert]:
        with self._recorder.lock:
            return self._recorder.evaluator.active(per_level=per_level)

    def csv(self, last_n: int | None) -> str:
        with self._recorder.lock:
            header, rows = csv_rows(self._recorder.store, last_n)
        return render_csv(header, rows)

    # --- exposition -------------------------------------------------------------------------

    def snapshot(self, wait: bool = True) -> ExpositionSnapshot:
        """What a scrape renders.  With ``wait`` False it raises :class:`WouldWait` rather
        than wait for the recorder's lock (held while a collection is recorded or a whole
        ingest batch applied) or call a status provider that may wait on file I/O."""
        if not wait and self.waiting_providers:
            raise WouldWait
        status: list[StatusFamily] = []
        for provider in list(self.status_providers):  # outside the lock: they have their own
            try:
                status.extend(provider())
            except Exception:
                log.exception("status provider %r failed", provider)
        rec = self._recorder
        if not rec.lock.acquire(blocking=wait):
            raise WouldWait
        try:
            store = rec.store
            return ExpositionSnapshot(
                catalog=store.catalog,
                current=rec.current(rec.now_ms()),
                histograms=store.latency.histograms(),
                extensions=store.extensions.statuses(),
                firing=rec.evaluator.firing(),
                rules=rec.evaluator.rules(),
                target_up=self._sources.target_up(),
                collections=rec.collections,
                last_collection_seconds=rec.last_collection_seconds,
                collection_errors=self._sources.error_counts(),
                source_health=self._sources.health(),
                dropped_latency_observations=store.latency.dropped_observations,
                dropped_extension_updates=store.extensions.dropped_updates,
                evicted_endpoints=store.latency.evicted,
                evicted_extensions=store.extensions.evicted,
                status=status,
                last_collection_ms=rec.last_collection_ms,
            )
        finally:
            rec.lock.release()

    def families(self, snap: ExpositionSnapshot) -> Iterator[Metric]:
        """The prometheus_client families a scrape renders from ``snap`` (remote write
        sends the same samples)."""
        yield from all_families(snap)
        yield from self._process.collect()

    def exposition(self, openmetrics: bool = False, wait: bool = True) -> bytes:
        """Text format 0.0.4, or OpenMetrics 1.0, with the exporter's own process_*
        (``wait``: see :meth:`snapshot`)."""
        snap = self.snapshot(wait)
        return self._fast.render(snap, openmetrics, self._process.collect())

    def close(self) -> None:
        self._process.close()

"""Remote write wired to a monitor: capture each collection, run one sender per receiver.

Each collection is captured from the same prometheus_client families a scrape renders
(:meth:`Renderer.families`), stamped with the collection's own time, so a receiver holds
exactly what a scraper would have seen, sample for sample, without a scraper.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from exporter import metric_names as names
from exporter.config.model import RemoteWriteConfig
from exporter.remote_write.protocol import Labels
from exporter.remote_write.sender import REASONS, Sender
from exporter.remote_write.sendlog import SendLog
from exporter.snapshot import StatusFamily

if TYPE_CHECKING:
    from exporter.endpoint import MetricsEndpoint

log = logging.getLogger(__name__)

_CREATED_KINDS = ("counter", "histogram", "summary", "gaugehistogram")


def samples_of(families: Iterable[Metric]) -> Iterator[tuple[Labels, float]]:
    """Every sample of the families as (sorted labels with __name__, value); ``_created``
    samples are left out, as Prometheus leaves them out of what it stores."""
    for family in families:
        created = family.name + "_created" if family.type in _CREATED_KINDS else None
        for s in family.samples:
            if s.name == created:
                continue
            labels = [("__name__", s.name), *s.labels.items()]
            labels.sort()
            yield tuple(labels), float(s.value)


class RemoteWriter:
    def __init__(
        self,
        endpoint: MetricsEndpoint,
        configs: Iterable[RemoteWriteConfig],
        directory: str | None,
    ) -> None:
        self.endpoint = endpoint
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self.log = self._open_log(directory)
        self.directory = self.log.directory
        self._started = False
        self.unrecorded = 0  # samples a failed write (a full disk) kept out of the log
        self._append_failing = False
        self.senders: list[Sender] = []
        self.configs: tuple[RemoteWriteConfig, ...] = ()
        self.reconfigure(configs)
        # Subscribed here, not at start: no collection can run before the capture is there.
        endpoint.on_metrics_collected(self.capture)
        endpoint.add_status_provider(self.status, may_wait=True)  # the log's lock: fsync

    def _open_log(self, directory: str | None) -> SendLog:
        """The send log in ``directory``; in a temporary folder (lost at stop, said so)
        when there is none or it cannot be used, so delivery still works while running."""
        if directory is not None:
            try:
                return SendLog(directory)
            except OSError as e:
                why = f"{directory} cannot be used ({e.strerror or e})"
        else:
            why = ("there is no state directory (set history.state_file, or run under "
                   "systemd with StateDirectory=)")
        self._temp = tempfile.TemporaryDirectory(prefix="crankshaft-remote-write-")
        log.warning("remote write: %s, so samples not yet delivered are lost when the "
                    "exporter stops", why)
        return SendLog(self._temp.name)

    def start(self) -> None:
        """Start delivering (collections are captured from construction on)."""
        self._started = True
        for sender in self.senders:
            sender.start()

    def reconfigure(self, configs: Iterable[RemoteWriteConfig]) -> None:
        """Replace the senders when the entries changed (positions are kept by name)."""
        configs = tuple(configs)
        if configs == self.configs:
            return
        for sender in self.senders:
            sender.stop()
        self.log.forget_others(c.name for c in configs)
        self.senders = [Sender(c, self.log) for c in configs]
        self.configs = configs
        for c in configs:
            log.info("remote write to %s (%s), samples kept up to %gs", c.url, c.name,
                     c.max_sample_age)
        if self._started:
            for sender in self.senders:
                sender.start()

    def capture(self) -> None:
        """Append the collection that just ran (called from the collector thread)."""
        snap = self.endpoint.exposition_snapshot()
        if snap.last_collection_ms is None:
            return
        families = self.endpoint.renderer.families(snap)
        try:
            self.log.append(int(snap.last_collection_ms), samples_of(families))
        except OSError as e:
            samples = sum(len(f.samples) for f in self.endpoint.renderer.families(snap))
            self.unrecorded += samples
            if not self._append_failing:
                log.warning("remote write: cannot record a collection in %s (%s): its "
                            "samples are dropped until this is fixed", self.directory,
                            e.strerror or e)
            self._append_failing = True
            return
        if self._append_failing:
            log.info("remote write: recording collections again")
            self._append_failing = False

    def stop(self) -> None:
        self.endpoint.metrics_collected.disconnect(self.capture)
        self.endpoint.remove_status_provider(self.status)
        self._started = False
        for sender in self.senders:
            sender.stop()
        self.log.close()
        if self._temp is not None:
            self._temp.cleanup()

    def status(self) -> list[StatusFamily]:
        """The senders' self-metrics, labelled as prometheus_remote_storage_* are."""
        sent, failed, dropped, pending, age, success = [], [], [], [], [], []
        now = self.endpoint.recorder.now_ms()
        lost = self.log.dropped()
        for s in self.senders:
            who = {"remote_name": s.config.name, "url": s.config.url}
            sent.append((who, float(s.counts.sent)))
            failed.append((who, float(s.counts.failed)))
            for reason in REASONS:
                n = s.counts.dropped[reason] + lost.get(s.config.name, {}).get(reason, 0)
                if reason == "queue_full":
                    n += self.unrecorded
                dropped.append(({**who, "reason": reason}, float(n)))
            count, oldest = self.log.pending(s.cursor.seq)
            pending.append((who, float(count)))
            age.append((who, 0.0 if oldest is None else max(0.0, (now - oldest) / 1000.0)))
            if s.counts.last_success is not None:
                success.append((who, s.counts.last_success))
        return [
            StatusFamily(names.RW_SENT, "counter", "Samples the receiver acknowledged", sent),
            StatusFamily(names.RW_FAILED, "counter",
                         "Samples in requests that failed and are retried", failed),
            StatusFamily(names.RW_DROPPED, "counter",
                         "Samples given up, by reason (too_old, refused, queue_full)", dropped),
            StatusFamily(names.RW_PENDING, "gauge",
                         "Samples recorded and not yet acknowledged", pending),
            StatusFamily(names.RW_OLDEST_PENDING_AGE, "gauge",
                         "Age of the oldest sample not yet acknowledged (0 when none)", age),
            StatusFamily(names.RW_LAST_SUCCESS, "gauge",
                         "When the receiver last acknowledged a request", success),
        ]


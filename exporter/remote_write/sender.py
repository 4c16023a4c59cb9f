"""One receiver's delivery loop: oldest first, acknowledged as it goes, never jammed.

What the receiver answers decides what happens to a batch:

- 2xx: delivered; the cursor moves past it (so it is never sent again).
- 429, other 5xx, or no answer: nothing is known to be stored; retried after a backoff
  with full jitter (a fleet coming back at once does not stampede the receiver).
- another 4xx, or a 5xx that says the samples are too old or out of bounds (Prometheus
  before 2.50 answers 500 for samples older than its out-of-order window, and retrying those
  forever is how a sender stops delivering anything): a refusal.  Receivers refuse a whole
  request for one bad sample, so the batch is split in halves until the refused collections
  are found; those are dropped and counted, the rest is delivered.
- A collection older than ``max_sample_age`` is dropped and counted before it is sent.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.config.model import REMOTE_WRITE_JOB, RemoteWriteConfig
from exporter.remote_write import protocol
from exporter.remote_write.client import Client, Reply
from exporter.remote_write.protocol import Labels
from exporter.remote_write.sendlog import SendLog, Tick

log = logging.getLogger(__name__)

REASONS = ("too_old", "refused", "queue_full")
_TOO_OLD_WORDS = ("too old", "out of bounds", "out of order")
IDLE_WAIT_S = 5.0


@dataclass(slots=True)
class Counts:
    """What a sender did, for its self-metrics."""

    sent: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    last_success: float | None = None  # unix time


def is_refusal(reply: Reply) -> bool:
    """Whether retrying this answer can never succeed."""
    if reply.status == 429:
        return False
    if 400 <= reply.status < 500:
        return True
    message = reply.message.lower()
    return reply.status >= 500 and any(w in message for w in _TOO_OLD_WORDS)


def target_labels(config: RemoteWriteConfig) -> Labels:
    """What a scrape of this exporter would add (job, instance) and the entry's labels."""
    labels = dict(config.labels)
    labels.setdefault("job", REMOTE_WRITE_JOB)
    labels.setdefault("instance", config.instance or socket.gethostname())
    return tuple(sorted(labels.items()))


class Sender:
    def __init__(
        self,
        config: RemoteWriteConfig,
        sendlog: SendLog,
        clock: Callable[[], float] = time.time,
        client: Client | None = None,
    ) -> None:
        self.config = config
        self.log = sendlog
        self.cursor = sendlog.cursor(config.name)
        self.client = client or Client(config)
        self.counts = Counts()
        self._clock = clock
        self._extra = target_labels(config)
        self._merged: dict[int, Labels] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._old_counted = -1  # too-old collections up to this seq are already counted
        self._random = random.Random()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"remote-write-{self.config.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.log.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.client.close()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                progressed = self.step()
            except Exception:  # a bug here must not end delivery for good
                log.exception("remote write to %s failed unexpectedly", self.config.name)
                progressed = False
            if progressed is None:
                self.log.wait(self.cursor.seq, IDLE_WAIT_S)
                attempt = 0
            elif progressed:
                attempt = 0
            else:
                attempt += 1
                self._stop.wait(self.backoff(attempt))

    def backoff(self, attempt: int) -> float:
        """Full jitter between min_backoff and the doubled ceiling (at most max_backoff)."""
        c = self.config
        ceiling = min(c.max_backoff, c.min_backoff * 2 ** min(attempt, 30))
        return self._random.uniform(c.min_backoff, max(c.min_backoff, ceiling))

    # --- one step ----------------------------------------------------------------------------

    def step(self) -> bool | None:
        """Deliver one batch: True if the cursor moved, False on a transient failure (back
        off), None if nothing waits."""
        ticks = self.log.read(self.cursor.seq, self.config.max_samples_per_send)
        if not ticks:
            return None
        cutoff = (self._clock() - self.config.max_sample_age) * 1000.0
        fresh = [t for t in ticks if t.timestamp_ms >= cutoff]
        old = [t for t in ticks if t.timestamp_ms < cutoff and t.seq > self._old_counted]
        if old:
            n = sum(len(t.ids) for t in old)
            self.counts.dropped["too_old"] += n
            self._old_counted = old[-1].seq
            log.warning(
                "remote write %s: dropped %d samples older than max_sample_age (%gs)",
                self.config.name, n, self.config.max_sample_age,
            )
        if not fresh:
            self.cursor.set(ticks[-1].seq)
            self.log.trim()
            return True
        if fresh[0].seq > ticks[0].seq:
            self.cursor.set(fresh[0].seq - 1)  # the old ones before the fresh are settled
        done = self._deliver(fresh)
        if done:
            self.cursor.set(ticks[-1].seq)
            self.log.trim()
        return done or self.cursor.seq >= fresh[0].seq

    def _deliver(self, ticks: list[Tick]) -> bool:
        """Send ``ticks``; on refusal, halves until each refused collection is found.
        Moves the cursor past what is settled; False when the rest must wait (transient)."""
        n = sum(len(t.ids) for t in ticks)
        try:
            reply = self.client.send(self.body(ticks))
        except OSError as e:
            self._failed(n, f"unreachable: {e}")
            return False
        if reply.status < 300:
            self.counts.sent += n
            self.counts.last_success = self._clock()
            self.cursor.set(ticks[-1].seq)
            if self._failing_since is not None:
                log.info("remote write %s: delivering again after %.0fs", self.config.name,
                         time.monotonic() - self._failing_since)
                self._failing_since = None
            return True
        if not is_refusal(reply):
            self._failed(n, f"HTTP {reply.status} {reply.message[:200]}")
            return False
        if len(ticks) > 1:
            mid = len(ticks) // 2
            return self._deliver(ticks[:mid]) and self._deliver(ticks[mid:])
        self.counts.dropped["refused"] += n
        log.warning(
            "remote write %s refused %d samples of the collection at %d ms: HTTP %d %s",
            self.config.name, n, ticks[0].timestamp_ms, reply.status, reply.message[:200],
        )
        self.cursor.set(ticks[-1].seq)
        return True

    def _failed(self, n: int, why: str) -> None:
        self.counts.failed += n
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            pending, _ = self.log.pending(self.cursor.seq)
            log.warning("remote write %s: %s; retrying with backoff, %d samples wait",
                        self.config.name, why, pending)
        else:
            log.debug("remote write %s: %s", self.config.name, why)

    def body(self, ticks: list[Tick]) -> bytes:
        """The compressed WriteRequest: per series, its samples in time order."""
        per_series: dict[int, list[tuple[int, float]]] = {}
        for tick in ticks:
            ts = tick.timestamp_ms
            for sid, value in zip(tick.ids, tick.values, strict=True):
                samples = per_series.get(sid)
                if samples is None:
                    per_series[sid] = [(ts, value)]
                else:
                    samples.append((ts, value))
        return protocol.encode((self._labels(sid), s) for sid, s in per_series.items())

    def _labels(self, sid: int) -> Labels:
        """The series' own labels with job, instance and the entry's labels (a label the
        series already has keeps its value, as Prometheus' external labels do)."""
        merged = self._merged.get(sid)
        if merged is None:
            own = self.log.labels(sid)
            names = {name for name, _ in own}
            merged = tuple(sorted(own + tuple(p for p in self._extra if p[0] not in names)))
            self._merged[sid] = merged
        return merged

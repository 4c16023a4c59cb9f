"""Fast JSON text of the seed's ``/metrics`` document, for the HTTP server.

The document is mostly samples: 4 x 1440 of them for a day's history, which the stdlib json
encoder turns into text in ~12 ms here (the goal is 3 ms).  Samples never change once
written, so each series keeps its samples' JSON text and extends it as samples arrive; a
request joins cached text instead of formatting thousands of numbers.  The cache costs about
45 bytes per sample and exists only once a client has asked for the JSON history.
"""

from __future__ import annotations

import json
from array import array
from typing import Any

from exporter.documents import Meta, json_series, metrics_document
from exporter.ringbuffer import RingBuffer
from exporter.store import MetricStore


class SamplesJson:
    """JSON text of one ring buffer's samples, kept in step with it incrementally."""

    __slots__ = ("base", "first", "fmt", "next", "offsets", "text")

    def __init__(self, whole_numbers: bool) -> None:
        value = "%d" if whole_numbers else "%r"
        self.fmt = '{"timestamp":%d,"value":' + value + "},"
        self._reset(0)

    def _reset(self, first: int) -> None:
        self.first = self.next = first  # sequence numbers of the first and next sample held
        self.text = ""  # fragments, each ending in ","
        self.offsets = array("q")  # absolute offset of each fragment
        self.base = 0  # absolute offset of text[0]

    def window(self, buf: RingBuffer, last_n: int | None) -> str:
        """Comma-separated sample objects of the newest ``last_n`` samples (all if None)."""
        oldest = buf.appended - len(buf)
        if self.next < oldest:  # fell more than a buffer behind: start over
            self._reset(oldest)
        new = buf.appended - self.next
        if new:
            fmt = self.fmt
            frags = [fmt % tv for tv in zip(buf.timestamps(new), buf.values(new), strict=True)]
            pos = self.base + len(self.text)
            offsets = self.offsets
            for frag in frags:
                offsets.append(pos)
                pos += len(frag)
            self.text += "".join(frags)
            self.next = buf.appended
        drop = oldest - self.first
        if drop >= len(self.offsets):
            self._reset(oldest)
        elif drop > 0:
            cut = self.offsets[drop] - self.base
            self.text = self.text[cut:]
            self.base += cut
            del self.offsets[:drop]
            self.first = oldest
        n = len(buf) if last_n is None else min(last_n, len(buf))
        if n <= 0:
            return ""
        start = self.offsets[len(self.offsets) - n] - self.base
        return self.text[start:-1]


class MetricsJsonRenderer:
    """Holds the per-series caches; one per store, used under the recorder's lock."""

    def __init__(self) -> None:
        # per series key: the buffer the cache follows (a re-declared series gets a new one)
        self._samples: dict[str, tuple[RingBuffer, SamplesJson]] = {}

    def render(
        self,
        store: MetricStore,
        meta: Meta,
        last_n: int | None = None,
        current: dict[str, float] | None = None,
    ) -> bytes:
        doc: dict[str, Any] = metrics_document(store, meta, last_n, False, current)
        by_json_key = {spec.json_key: spec for spec in json_series(store)}
        live = set()
        parts = []
        for key, value in doc.items():
            text = json.dumps(value, separators=(",", ":"))
            spec = by_json_key.get(key)
            if spec is not None:  # splice the cached sample text into the series object
                buf = store.series[spec.key]
                live.add(spec.key)
                followed = self._samples.get(spec.key)
                if followed is None or followed[0] is not buf:
                    followed = self._samples[spec.key] = (buf, SamplesJson(spec.whole))
                samples = followed[1].window(buf, last_n)
                text = f'{text[:-1]},"samples":[{samples}]}}'
            parts.append(f"{json.dumps(key)}:{text}")
        for stale in self._samples.keys() - live:
            del self._samples[stale]
        return ("{" + ",".join(parts) + "}").encode()

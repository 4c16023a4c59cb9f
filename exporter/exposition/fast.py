"""The exposition, byte for byte what prometheus_client's encoders write, in a fraction of
the time.

``generate_latest`` costs ~20 µs per sample here (~20 ms for 100 endpoint histograms, far
over a 2 ms budget): it builds a ``Sample`` per line and validates and escapes every name.
This renderer formats the same families itself, and keeps each endpoint's histogram lines
as text, re-rendered only when that endpoint saw traffic (``(serial, count)`` identifies
their content).  A hypothesis property test compares its output with both encoders over the
same families (text 0.0.4 and OpenMetrics), with label values that need escaping, NaN and
huge numbers; any family shape it does not know is handed to the library encoder instead.

The histogram cache is shared by concurrent text and OpenMetrics renders: entries are
immutable tuples swapped in one assignment, and the dictionary is changed under a lock, so
no render can see a torn or stale block.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import generate_latest as text_encoder
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_encoder
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.exposition.families import (
    HISTOGRAM,
    HISTOGRAM_HELP,
    other_families,
    series_families,
)
from exporter.latency import HistogramSnapshot
from exporter.snapshot import ExpositionSnapshot

_SIMPLE_TYPES = {"gauge", "counter", "info", "stateset", "histogram"}
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge"}
_OM_ONLY_SUFFIXES = ("_created", "_gsum", "_gcount")


def escape_value(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(items: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{escape_value(v)}"' for k, v in sorted(items)) + "}"


def label_text(labels: dict[str, str]) -> str:
    return _label_text(tuple(labels.items())) if labels else ""


def header(name: str, typ: str, doc: str, unit: str, openmetrics: bool) -> str:
    """The family's comment lines, as each encoder writes them."""
    if openmetrics:
        text = f"# HELP {name} {escape_value(doc)}\n# TYPE {name} {typ}\n"
        return text + (f"# UNIT {name} {unit}\n" if unit else "")
    if typ == "counter":
        name += "_total"
    elif typ == "info":
        name += "_info"
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {_TEXT_TYPES.get(typ, typ)}\n"


class _TextCache:
    """Headers and label blocks seen before (they repeat at every scrape), bounded."""

    LIMIT = 20_000

    def __init__(self) -> None:
        self.headers: dict[tuple[str, str, str, str, bool], str] = {}
        self.labels: dict[tuple[tuple[str, str], ...], str] = {}

    def header(self, metric: Metric, openmetrics: bool) -> str:
        key = (metric.name, metric.type, metric.documentation, metric.unit, openmetrics)
        text = self.headers.get(key)
        if text is None:
            if len(self.headers) > self.LIMIT:
                self.headers.clear()
            text = self.headers[key] = header(*key)
        return text

    def label_text(self, labels: dict[str, str]) -> str:
        if not labels:
            return ""
        key = tuple(labels.items())
        text = self.labels.get(key)
        if text is None:
            if len(self.labels) > self.LIMIT:
                self.labels.clear()
            text = self.labels[key] = _label_text(key)
        return text


def _native_histogram(sample: Sample) -> object:
    """A sample's native histogram; prometheus_client before 0.22 has none (Debian 12 ships
    0.16), and a sample of such a library cannot carry one."""
    return getattr(sample, "native_histogram", None)


def _is_simple(metric: Metric) -> bool:
    if metric.type not in _SIMPLE_TYPES:
        return False
    for s in metric.samples:
        if s.timestamp is not None or s.exemplar is not None or _native_histogram(s) is not None:
            return False
        if s.name.endswith(_OM_ONLY_SUFFIXES) and s.name != metric.name:
            return False
    return True


def format_metric(metric: Metric, openmetrics: bool, cache: _TextCache | None = None) -> str:
    """One family's text; unusual shapes go through the library encoder itself."""
    if not _is_simple(metric):
        if openmetrics:
            text: str = openmetrics_encoder(_Families([metric])).decode()
            return text.removesuffix("# EOF\n")
        return text_encoder(_Families([metric])).decode()
    cache = cache or _TextCache()
    labels = cache.label_text
    lines = [cache.header(metric, openmetrics)]
    lines.extend(
        f"{s.name}{labels(s.labels)} {floatToGoString(s.value)}\n" for s in metric.samples
    )
    return "".join(lines)


class _Families:
    """A stand-in registry over given families, for the library encoders."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def count_text(count: int) -> str:
    """``floatToGoString`` of a whole count, without its float round trip where the result
    is known: below 10**6 Go's format is Python's repr of the float (``"5.0"``)."""
    return f"{count}.0" if 0 <= count < 1_000_000 else str(floatToGoString(count))


class _HistogramBlock:
    """Pre-rendered line prefixes of one endpoint's histogram series, and its last text."""

    __slots__ = ("buckets", "count", "rendered", "sum", "template")

    def __init__(self, endpoint: str, bounds: tuple[float, ...]) -> None:
        ep = escape_value(endpoint)
        les = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self.buckets = tuple(f'{HISTOGRAM}_bucket{{endpoint="{ep}",le="{le}"}} ' for le in les)
        self.count = f'{HISTOGRAM}_count{{endpoint="{ep}"}} '
        self.sum = f'{HISTOGRAM}_sum{{endpoint="{ep}"}} '
        # Counts below 10**6 print as "<n>.0" (see count_text): one %-format for the block.
        lines = [p.replace("%", "%%") + "%d.0\n" for p in (*self.buckets, self.count)]
        self.template = "".join(lines) + self.sum.replace("%", "%%") + "%s\n"
        self.rendered: tuple[tuple[int, int], str] = ((-1, -1), "")

    def text(self, hist: HistogramSnapshot) -> str:
        identity = (hist.serial, hist.count)
        cached = self.rendered  # one read: an immutable pair
        if cached[0] == identity:
            return cached[1]
        counts = hist.cumulative_counts
        total = floatToGoString(hist.sum_seconds)
        if 0 <= hist.count < 1_000_000:  # the +Inf bucket is the largest count
            text = self.template % (*counts, hist.count, total)
        else:
            parts = [f"{p}{count_text(c)}\n" for p, c in zip(self.buckets, counts, strict=True)]
            parts.append(f"{self.count}{count_text(hist.count)}\n{self.sum}{total}\n")
            text = "".join(parts)
        self.rendered = (identity, text)  # one assignment: never torn
        return text


class FastRenderer:
    """Renders snapshots; holds the histogram text cache, so keep one per monitor.

    It also keeps the text of the last snapshot it rendered in each format: between two
    collections a scrape usually finds the same snapshot (the same values, histograms,
    alerts and status), and then only the ``extra`` families (the process_* that change at
    every scrape) are made anew: at one scrape a second and the default 1 m interval, that
    was half of what a scrape cost the daemon (tests/bench/bench_scrape_cpu.py).  Equal
    snapshots render to equal text: the one pair of floats that compare equal but print
    differently, 0.0 and -0.0, can only swap at a collection or an ingest, and each of those
    also moves a counter in the snapshot (collections, a histogram's count).
    """

    def __init__(self) -> None:
        self._blocks: dict[tuple[str, tuple[float, ...]], _HistogramBlock] = {}
        self._lock = threading.Lock()
        self._text = _TextCache()  # only grows by whole entries: safe to share
        # format -> (snapshot, its text): each pair replaced in one assignment
        self._last: dict[bool, tuple[ExpositionSnapshot, str]] = {}

    def render(
        self, snap: ExpositionSnapshot, openmetrics: bool, extra: Iterable[Metric] = ()
    ) -> bytes:
        """The snapshot's families, then ``extra`` ones (the exporter's process_*)."""
        text = self._text
        last = self._last.get(openmetrics)
        if last is not None and last[0] == snap:
            body = last[1]
        else:
            body = self._snapshot_text(snap, openmetrics)
            self._last[openmetrics] = (snap, body)
        parts = [body]
        parts.extend(format_metric(m, openmetrics, text) for m in extra)
        if openmetrics:
            parts.append("# EOF\n")
        return "".join(parts).encode()

    def _snapshot_text(self, snap: ExpositionSnapshot, openmetrics: bool) -> str:
        text = self._text
        parts = [format_metric(m, openmetrics, text) for m in series_families(snap)]
        parts.append(header(HISTOGRAM, "histogram", HISTOGRAM_HELP, "seconds", openmetrics))
        parts.extend(self._histograms(snap))
        parts.extend(format_metric(m, openmetrics, text) for m in other_families(snap))
        return "".join(parts)

    def _histograms(self, snap: ExpositionSnapshot) -> list[str]:
        out = []
        blocks = self._blocks
        live = set()
        for endpoint, hist in sorted(snap.histograms.items()):
            key = (endpoint, hist.bounds_seconds)
            live.add(key)
            block = blocks.get(key)
            if block is None:
                with self._lock:
                    block = blocks.setdefault(key, _HistogramBlock(endpoint, hist.bounds_seconds))
            out.append(block.text(hist))
        if len(blocks) > len(live):  # endpoints evicted: forget their text
            with self._lock:
                for stale in [k for k in blocks if k not in live]:
                    blocks.pop(stale, None)
        return out

"""The seed's JSON documents (``/metrics``, ``/metrics/summary``, alerts) and its CSV export.

Builders take the store while the caller holds the endpoint's lock and return plain data, so
serialisation happens after the lock is released.  Field names are exactly the seed's.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.alerts.events import ActiveAlert
from exporter.ringbuffer import stats_of
from exporter.store import SERIES, MetricStore

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Meta:
    """Facts about the monitor itself that every document carries."""

    timestamp_ms: float
    uptime_ms: float
    is_collecting: bool
    collection_interval_ms: int


def _series_doc(
    name: str, unit: str, times: Any, values: Any, with_samples: bool = True
) -> dict[str, Any]:
    st = stats_of(values)
    # Counts are whole numbers; the seed prints them as such ("latest": 8).
    conv: Any = int if unit == "count" else float
    doc = {
        "name": name,
        "unit": unit,
        "sample_count": st.sample_count,
        "latest": None if st.latest is None else conv(st.latest),
        "average": st.average,
        "min": None if st.min is None else conv(st.min),
        "max": None if st.max is None else conv(st.max),
    }
    if with_samples:
        doc["samples"] = [
            {"timestamp": int(t), "value": conv(v)} for t, v in zip(times, values, strict=True)
        ]
    return doc


def metrics_document(
    store: MetricStore, meta: Meta, last_n: int | None = None, with_samples: bool = True
) -> dict[str, Any]:
    """The seed's ``GET /metrics`` document: every series over its newest ``last_n`` samples.

    ``with_samples=False`` leaves the sample arrays out, for the incremental JSON renderer.
    """
    doc: dict[str, Any] = {
        "timestamp": int(meta.timestamp_ms),
        "uptime_ms": int(meta.uptime_ms),
        "is_collecting": meta.is_collecting,
        "collection_interval_ms": meta.collection_interval_ms,
    }
    for info in SERIES:
        buf = store.series[info.key]
        doc[info.json_key] = _series_doc(
            info.key, info.unit, buf.timestamps(last_n), buf.values(last_n), with_samples
        )
    doc["extensions"] = store.extensions.statuses()
    doc["latency_breakdown"] = {
        endpoint: {"p50": p.p50, "p95": p.p95, "p99": p.p99, "count": p.count}
        for endpoint, p in store.latency.breakdown().items()
    }
    return doc


def summary_document(
    store: MetricStore, meta: Meta, active: Iterable[ActiveAlert]
) -> dict[str, Any]:
    """The seed's ``GET /metrics/summary``: latest values, last-hour stats, active alerts."""
    since = meta.timestamp_ms - HOUR_MS
    memory_hour = stats_of(store.series["memory_usage"].values_since(since))
    cpu_hour = stats_of(store.series["cpu_usage"].values_since(since))
    return {
        "timestamp": int(meta.timestamp_ms),
        "uptime_seconds": int(meta.uptime_ms // 1000),
        "memory_mb": store.latest("memory_usage"),
        "cpu_percent": store.latest("cpu_usage"),
        "active_connections": _as_count(store.latest("active_connections")),
        "total_connections": _as_count(store.latest("total_connections")),
        "avg_latency_ms": store.latest("request_latency"),
        "last_hour": {
            "memory_avg": memory_hour.average,
            "memory_max": memory_hour.max,
            "cpu_avg": cpu_hour.average,
            "cpu_max": cpu_hour.max,
        },
        "active_alerts": alerts_document(active),
    }


def alerts_document(active: Iterable[ActiveAlert]) -> list[dict[str, Any]]:
    """The seed's active-alert array, most severe first, then by metric name."""
    ordered = sorted(
        active, key=lambda a: (a.level != "CRITICAL", a.metric, sorted(a.labels.items()))
    )
    return [a.to_json() for a in ordered]


def _as_count(value: float | None) -> int | None:
    return None if value is None else int(value)


def _count_text(value: float) -> str:
    return str(int(value))


def csv_rows(store: MetricStore, last_n: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per distinct sample timestamp, a column per series.

    Series sampled on the same tick share a timestamp and so a row; a value pushed between
    ticks gets a row of its own, with the other columns empty.
    """
    header = ["timestamp"] + [info.csv_column for info in SERIES]
    by_time: dict[int, list[str]] = {}
    for col, info in enumerate(SERIES, start=1):
        buf = store.series[info.key]
        fmt = _count_text if info.unit == "count" else repr
        for t, v in zip(buf.timestamps(last_n), buf.values(last_n), strict=True):
            ms = int(t)  # rows are keyed by the timestamp as printed
            row = by_time.get(ms)
            if row is None:
                row = by_time[ms] = [str(ms)] + [""] * len(SERIES)
            row[col] = fmt(v)
    return header, [by_time[t] for t in sorted(by_time)]


def render_csv(header: list[str], rows: list[list[str]]) -> str:
    """RFC 4180: CRLF line ends, fields quoted when they need it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()

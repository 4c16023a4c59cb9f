"""The seed's JSON documents (``/metrics``, ``/metrics/summary``, alerts) and its CSV export.

Builders take the store while the caller holds the recorder's lock and return plain data,
so serialisation happens after the lock is released.  Field names are exactly the seed's;
every declared series with a JSON key or CSV column appears, the seed's five first.
``latest`` is the value known now (``current``), null when the series is absent, while
average/min/max describe the stored samples.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from exporter.alerts.events import ActiveAlert
from exporter.ringbuffer import stats_of
from exporter.series import SeriesSpec
from exporter.store import MetricStore

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Meta:
    """Facts about the monitor itself that every document carries."""

    timestamp_ms: float
    uptime_ms: float
    is_collecting: bool
    collection_interval_ms: int


def _series_doc(
    spec: SeriesSpec, latest: float | None, times: Any, values: Any, with_samples: bool = True
) -> dict[str, Any]:
    st = stats_of(values)
    # Counts are whole numbers; the seed prints them as such ("latest": 8).
    conv: Any = int if spec.whole else float
    doc = {
        "name": spec.key,
        "unit": spec.unit,
        "sample_count": st.sample_count,
        "latest": None if latest is None else conv(latest),
        "average": st.average,
        "min": None if st.min is None else conv(st.min),
        "max": None if st.max is None else conv(st.max),
    }
    if with_samples:
        doc["samples"] = [
            {"timestamp": int(t), "value": conv(v)} for t, v in zip(times, values, strict=True)
        ]
    return doc


def json_series(store: MetricStore) -> list[SeriesSpec]:
    return [spec for spec in store.catalog if spec.json_key is not None]


def csv_series(store: MetricStore) -> list[SeriesSpec]:
    return [spec for spec in store.catalog if spec.csv_column is not None]


def metrics_document(
    store: MetricStore,
    meta: Meta,
    last_n: int | None = None,
    with_samples: bool = True,
    current: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The seed's ``GET /metrics`` document: every series over its newest ``last_n`` samples.

    ``with_samples=False`` leaves the sample arrays out, for the incremental JSON renderer;
    ``current`` is what is known now (default: the store's).
    """
    if current is None:
        current = store.current
    doc: dict[str, Any] = {
        "timestamp": int(meta.timestamp_ms),
        "uptime_ms": int(meta.uptime_ms),
        "is_collecting": meta.is_collecting,
        "collection_interval_ms": meta.collection_interval_ms,
    }
    for spec in json_series(store):
        buf = store.series[spec.key]
        doc[spec.json_key] = _series_doc(  # type: ignore[index]
            spec, current.get(spec.key), buf.timestamps(last_n), buf.values(last_n), with_samples
        )
    doc["extensions"] = store.extensions.statuses()
    doc["latency_breakdown"] = {
        endpoint: {"p50": p.p50, "p95": p.p95, "p99": p.p99, "count": p.count}
        for endpoint, p in store.latency.breakdown().items()
    }
    return doc


def summary_document(
    store: MetricStore,
    meta: Meta,
    active: Iterable[ActiveAlert],
    current: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The seed's ``GET /metrics/summary``: latest values, last-hour stats, active alerts."""
    if current is None:
        current = store.current
    since = meta.timestamp_ms - HOUR_MS
    memory_hour = stats_of(store.series["memory_usage"].values_since(since))
    cpu_hour = stats_of(store.series["cpu_usage"].values_since(since))
    return {
        "timestamp": int(meta.timestamp_ms),
        "uptime_seconds": int(meta.uptime_ms // 1000),
        "memory_mb": current.get("memory_usage"),
        "cpu_percent": current.get("cpu_usage"),
        "active_connections": _as_count(current.get("active_connections")),
        "total_connections": _as_count(current.get("total_connections")),
        "avg_latency_ms": current.get("request_latency"),
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
    columns = csv_series(store)
    header = ["timestamp"] + [spec.csv_column or "" for spec in columns]
    by_time: dict[int, list[str]] = {}
    for col, spec in enumerate(columns, start=1):
        buf = store.series[spec.key]
        fmt = _count_text if spec.whole else repr
        for t, v in zip(buf.timestamps(last_n), buf.values(last_n), strict=True):
            ms = int(t)  # rows are keyed by the timestamp as printed
            row = by_time.get(ms)
            if row is None:
                row = by_time[ms] = [str(ms)] + [""] * len(columns)
            row[col] = fmt(v)
    return header, [by_time[t] for t in sorted(by_time)]


def render_csv(header: list[str], rows: list[list[str]]) -> str:
    """RFC 4180: CRLF line ends, fields quoted when they need it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()

"""Extension states, the metric store, and the seed's JSON documents and CSV export."""

from __future__ import annotations

import csv
import io
import json

import pytest

from exporter.alerts.events import ActiveAlert
from exporter.documents import (
    HOUR_MS,
    Meta,
    alerts_document,
    csv_rows,
    metrics_document,
    render_csv,
    summary_document,
)
from exporter.extensions import (
    EXTENSION_STATES,
    MAX_EXTENSION_ID_LENGTH,
    ExtensionRegistry,
    validate_extension,
)
from exporter.store import DEFAULT_CAPACITY, MetricStore, seed_catalog
from tests.seed_contract import (
    ALERT_KEYS,
    CSV_HEADER,
    METRICS_KEYS,
    SEED_EXAMPLE_ALERT,
    SEED_SERIES,
    SERIES_DOC_KEYS,
    SUMMARY_KEYS,
)

SERIES = seed_catalog()
SERIES_KEYS = tuple(spec.key for spec in SERIES)
NOW_MS = 1_735_932_000_000.0
META = Meta(
    timestamp_ms=NOW_MS, uptime_ms=3_600_000.0, is_collecting=True, collection_interval_ms=60_000
)


# --- extensions ----------------------------------------------------------------------------


def test_extension_states_are_the_seeds() -> None:
    assert set(EXTENSION_STATES) == {"running", "stopped", "crashed", "starting"}


@pytest.mark.parametrize("status", ["running", "stopped", "crashed", "starting"])
def test_validate_extension_accepts_seed_states(status: str) -> None:
    assert validate_extension("media-player", status) == ("media-player", status)


@pytest.mark.parametrize("status", ["paused", "RUNNING", "Running", "", " running", None, 1])
def test_validate_extension_rejects_other_states_listing_the_valid_ones(status: object) -> None:
    with pytest.raises(ValueError) as info:
        validate_extension("media-player", status)
    message = str(info.value)
    for state in ("running", "stopped", "crashed", "starting"):
        assert state in message


@pytest.mark.parametrize("ext", ["", None, 5, "x" * (MAX_EXTENSION_ID_LENGTH + 1)])
def test_validate_extension_rejects_bad_ids(ext: object) -> None:
    with pytest.raises(ValueError, match="extension id"):
        validate_extension(ext, "running")


def test_extension_registry_cap_and_updates() -> None:
    reg = ExtensionRegistry(max_extensions=2)
    assert reg.set("a", "starting", now_ms=1.0)
    assert reg.set("b", "running", now_ms=2.0)
    assert not reg.set("c", "running", now_ms=3.0)
    assert reg.dropped_updates == 1
    assert reg.set("a", "running", now_ms=4.0)  # existing extensions still update
    assert reg.statuses() == {"a": "running", "b": "running"}
    assert reg.states()["a"].since_ms == 4.0
    assert reg.set("a", "running", now_ms=9.0)  # same status: "since" stays
    assert reg.states()["a"].since_ms == 4.0
    assert reg.dropped_updates == 1


def test_extension_registry_rejects_zero_cap() -> None:
    with pytest.raises(ValueError):
        ExtensionRegistry(0)


# --- store ---------------------------------------------------------------------------------


def test_store_series_and_append_latest() -> None:
    store = MetricStore(capacity=3)
    assert set(store.series) == set(SERIES_KEYS)
    assert store.capacity == 3
    assert store.latest("memory_usage") is None
    for i in range(5):
        store.append("memory_usage", 1000.0 * i, 100.0 + i)
    assert store.latest("memory_usage") == 104.0
    assert list(store.series["memory_usage"].values()) == [102.0, 103.0, 104.0]
    assert store.latest("cpu_usage") is None  # series are independent
    with pytest.raises(KeyError):
        store.append("nonexistent", 0.0, 1.0)


def test_store_resize_applies_to_every_series() -> None:
    store = MetricStore(capacity=4)
    for key in SERIES_KEYS:
        for i in range(4):
            store.append(key, float(i), float(i))
    store.resize(2)
    assert store.capacity == 2
    for key in SERIES_KEYS:
        assert list(store.series[key].values()) == [2.0, 3.0]
        assert store.series[key].capacity == 2


def test_store_nbytes_is_16_bytes_per_sample_per_series() -> None:
    store = MetricStore()
    assert store.capacity == DEFAULT_CAPACITY == 1440
    assert store.nbytes() == 16 * 1440 * len(SERIES_KEYS)
    store.resize(10)
    assert store.nbytes() == 16 * 10 * len(SERIES_KEYS)


# --- metrics document ----------------------------------------------------------------------


def seeded_store() -> MetricStore:
    store = MetricStore(capacity=100)
    for i in range(5):
        t = NOW_MS - (5 - i) * 60_000
        store.append("memory_usage", t, 220.0 + i)
        store.append("cpu_usage", t, 10.0 + i)
        store.append("active_connections", t, float(i))
        store.append("total_connections", t, 100.0 + i)
        store.append("request_latency", t, 40.0 + i)
    store.extensions.set("media-player", "running", NOW_MS)
    store.extensions.set("phone", "stopped", NOW_MS)
    for v in (10.0, 20.0, 30.0, 40.0):
        store.latency.observe("/api/media/play", v)
    return store


def test_metrics_document_top_level_keys_exactly() -> None:
    doc = metrics_document(seeded_store(), META)
    assert set(doc) == METRICS_KEYS
    assert doc["timestamp"] == 1_735_932_000_000
    assert isinstance(doc["timestamp"], int)
    assert doc["uptime_ms"] == 3_600_000
    assert isinstance(doc["uptime_ms"], int)
    assert doc["is_collecting"] is True
    assert doc["collection_interval_ms"] == 60_000
    json.dumps(doc)  # plain JSON-serialisable data


def test_metrics_document_series_objects() -> None:
    doc = metrics_document(seeded_store(), META)
    for json_key, (name, unit) in SEED_SERIES.items():
        series = doc[json_key]
        assert set(series) == SERIES_DOC_KEYS, json_key
        assert series["name"] == name
        assert series["unit"] == unit
        assert series["sample_count"] == 5
        assert len(series["samples"]) == 5
        for sample in series["samples"]:
            assert set(sample) == {"timestamp", "value"}
            assert isinstance(sample["timestamp"], int)
    mem = doc["memory"]
    assert mem["latest"] == 224.0
    assert mem["min"] == 220.0
    assert mem["max"] == 224.0
    assert mem["average"] == pytest.approx(222.0)
    assert mem["samples"][0] == {"timestamp": int(NOW_MS) - 300_000, "value": 220.0}
    assert mem["samples"][-1] == {"timestamp": int(NOW_MS) - 60_000, "value": 224.0}
    assert doc["extensions"] == {"media-player": "running", "phone": "stopped"}
    assert doc["latency_breakdown"] == {
        "/api/media/play": {
            "p50": 25.0,
            "p95": pytest.approx(38.5),
            "p99": pytest.approx(39.7),
            "count": 4,
        }
    }


def test_count_series_values_are_ints() -> None:
    doc = metrics_document(seeded_store(), META)
    for key in ("websocket_active", "websocket_total"):
        series = doc[key]
        for field in ("latest", "min", "max"):
            assert type(series[field]) is int, (key, field)
        assert all(type(s["value"]) is int for s in series["samples"])
    assert doc["websocket_active"]["latest"] == 4
    assert doc["websocket_total"]["samples"][0]["value"] == 100
    assert doc["websocket_active"]["average"] == pytest.approx(2.0)
    # non-count series keep floats
    assert type(doc["memory"]["latest"]) is float
    assert type(doc["latency"]["samples"][0]["value"]) is float


def test_empty_store_gives_null_stats() -> None:
    doc = metrics_document(MetricStore(capacity=10), META)
    assert set(doc) == METRICS_KEYS
    for json_key, (name, unit) in SEED_SERIES.items():
        assert doc[json_key] == {
            "name": name,
            "unit": unit,
            "sample_count": 0,
            "latest": None,
            "average": None,
            "min": None,
            "max": None,
            "samples": [],
        }
    assert doc["extensions"] == {}
    assert doc["latency_breakdown"] == {}
    assert json.loads(json.dumps(doc))["memory"]["latest"] is None


@pytest.mark.parametrize(("last_n", "expected"), [(None, 5), (2, 2), (0, 0), (10, 5)])
def test_metrics_document_last_n(last_n: int | None, expected: int) -> None:
    doc = metrics_document(seeded_store(), META, last_n)
    for json_key in SEED_SERIES:
        assert doc[json_key]["sample_count"] == expected
        assert len(doc[json_key]["samples"]) == expected
    if expected == 2:
        assert [s["value"] for s in doc["memory"]["samples"]] == [223.0, 224.0]
        assert doc["memory"]["min"] == 223.0
        assert doc["memory"]["average"] == pytest.approx(223.5)
    if expected == 0:  # no samples, but the value known now is still shown
        assert doc["memory"]["latest"] == 224.0
        assert doc["memory"]["average"] is None


# --- summary document ----------------------------------------------------------------------


def test_summary_document_keys_and_values() -> None:
    alert = ActiveAlert("memory_usage", "WARNING", 245.8, 220.0, 280.0, "Memory usage high", 0.0)
    doc = summary_document(seeded_store(), META, [alert])
    assert set(doc) == SUMMARY_KEYS
    assert set(doc["last_hour"]) == {"memory_avg", "memory_max", "cpu_avg", "cpu_max"}
    assert doc["timestamp"] == 1_735_932_000_000
    assert doc["uptime_seconds"] == 3600
    assert type(doc["uptime_seconds"]) is int
    assert doc["memory_mb"] == 224.0
    assert doc["cpu_percent"] == 14.0
    assert doc["active_connections"] == 4
    assert type(doc["active_connections"]) is int
    assert doc["total_connections"] == 104
    assert type(doc["total_connections"]) is int
    assert doc["avg_latency_ms"] == 44.0
    assert doc["last_hour"] == {
        "memory_avg": pytest.approx(222.0),
        "memory_max": 224.0,
        "cpu_avg": pytest.approx(12.0),
        "cpu_max": 14.0,
    }
    assert doc["active_alerts"] == [SEED_EXAMPLE_ALERT]


def test_summary_last_hour_covers_only_the_last_hour() -> None:
    store = MetricStore(capacity=1000)
    # old, high samples more than an hour ago; recent, low ones within the hour
    store.append("memory_usage", NOW_MS - 2 * HOUR_MS, 9000.0)
    store.append("cpu_usage", NOW_MS - 2 * HOUR_MS, 99.0)
    store.append("memory_usage", NOW_MS - HOUR_MS - 1, 8000.0)
    store.append("cpu_usage", NOW_MS - HOUR_MS - 1, 98.0)
    store.append("memory_usage", NOW_MS - 30 * 60_000, 100.0)
    store.append("cpu_usage", NOW_MS - 30 * 60_000, 10.0)
    store.append("memory_usage", NOW_MS - 60_000, 300.0)
    store.append("cpu_usage", NOW_MS - 60_000, 30.0)
    doc = summary_document(store, META, [])
    assert doc["last_hour"] == {
        "memory_avg": pytest.approx(200.0),
        "memory_max": 300.0,
        "cpu_avg": pytest.approx(20.0),
        "cpu_max": 30.0,
    }
    assert doc["memory_mb"] == 300.0
    assert doc["active_alerts"] == []


def test_summary_last_hour_moves_with_the_meta_timestamp() -> None:
    store = MetricStore(capacity=10)
    store.append("memory_usage", NOW_MS - 30 * 60_000, 100.0)
    later = Meta(NOW_MS + HOUR_MS, 0.0, False, 60_000)
    doc = summary_document(store, later, [])
    assert doc["last_hour"] == {
        "memory_avg": None,
        "memory_max": None,
        "cpu_avg": None,
        "cpu_max": None,
    }
    assert doc["memory_mb"] == 100.0  # the latest value is still reported


def test_summary_of_empty_store_is_nulls() -> None:
    doc = summary_document(MetricStore(capacity=10), META, [])
    assert set(doc) == SUMMARY_KEYS
    for key in (
        "memory_mb",
        "cpu_percent",
        "active_connections",
        "total_connections",
        "avg_latency_ms",
    ):
        assert doc[key] is None
    assert set(doc["last_hour"].values()) == {None}


def test_alerts_document_critical_first_then_by_metric() -> None:
    alerts = [
        ActiveAlert("memory_usage", "WARNING", 1600.0, 1536.0, 2048.0, "Memory usage high", 0.0),
        ActiveAlert("cpu_usage", "WARNING", 75.0, 70.0, 90.0, "CPU usage high", 0.0),
        ActiveAlert(
            "request_latency", "CRITICAL", 1200.0, 500.0, 1000.0, "Request latency high", 0.0
        ),
    ]
    doc = alerts_document(alerts)
    assert [a["metric"] for a in doc] == ["request_latency", "cpu_usage", "memory_usage"]
    assert all(set(a) == ALERT_KEYS for a in doc)
    assert doc[0]["level"] == "CRITICAL"


# --- CSV -----------------------------------------------------------------------------------


def test_csv_rows_one_per_distinct_timestamp() -> None:
    store = MetricStore(capacity=10)
    store.append("memory_usage", 1000.0, 256.5)
    store.append("cpu_usage", 1000.0, 45.3)
    store.append("active_connections", 1000.0, 12.0)
    store.append("total_connections", 1000.0, 150.0)
    store.append("request_latency", 2000.0, 85.2)  # pushed between ticks: a row of its own
    store.append("memory_usage", 3000.0, 260.0)
    header, rows = csv_rows(store)
    assert header == CSV_HEADER
    assert header == ["timestamp"] + [info.csv_column for info in SERIES]
    assert rows == [
        ["1000", "256.5", "45.3", "12", "150", ""],
        ["2000", "", "", "", "", "85.2"],
        ["3000", "260.0", "", "", "", ""],
    ]


def test_render_csv_crlf_and_parses_back() -> None:
    store = seeded_store()
    header, rows = csv_rows(store)
    text = render_csv(header, rows)
    assert text.endswith("\r\n")
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert len(lines) == 1 + len(rows) + 1
    assert "\n" not in text.replace("\r\n", "")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[0] == CSV_HEADER
    assert len(parsed) == 6  # header + 5 ticks
    body = parsed[1:]
    assert [int(r[0]) for r in body] == sorted(int(r[0]) for r in body)
    assert [float(r[1]) for r in body] == [220.0, 221.0, 222.0, 223.0, 224.0]
    assert [int(r[3]) for r in body] == [0, 1, 2, 3, 4]
    assert [float(r[5]) for r in body] == [40.0, 41.0, 42.0, 43.0, 44.0]


def test_csv_last_n_and_empty_store() -> None:
    header, rows = csv_rows(seeded_store(), last_n=2)
    assert len(rows) == 2
    assert [r[1] for r in rows] == ["223.0", "224.0"]
    header, rows = csv_rows(MetricStore(capacity=3))
    assert header == CSV_HEADER
    assert rows == []
    assert render_csv(header, rows) == ",".join(CSV_HEADER) + "\r\n"


def test_csv_float_values_round_trip_exactly() -> None:
    store = MetricStore(capacity=3)
    value = 0.1 + 0.2  # 0.30000000000000004: must not be shortened to 0.3
    store.append("cpu_usage", 5.0, value)
    _, rows = csv_rows(store)
    assert float(rows[0][2]) == value


def test_csv_rendered_timestamps_are_unique() -> None:
    store = MetricStore(capacity=10)
    # the endpoint stamps samples with clock() * 1000.0, which has sub-millisecond digits
    store.append("memory_usage", 1_735_932_000_000.25, 256.5)
    store.append("cpu_usage", 1_735_932_000_000.75, 45.3)
    _, rows = csv_rows(store)
    stamps = [r[0] for r in rows]
    assert len(stamps) == len(set(stamps)), rows

"""MetricsEndpoint: the seed's recording, retrieval, alerts, signals, collection and exports."""

from __future__ import annotations

import csv
import io
import math
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.alerts.events import AlertEvent
from exporter.alerts.rules import AlertRule
from exporter.endpoint import MetricsEndpoint
from exporter.sources.base import Source
from exporter.store import seed_catalog
from tests.seed_contract import ALERT_KEYS, CSV_HEADER, SEED_DEFAULT_ALERTS, SEED_GAUGE_HELP

T0 = 1_735_932_000.0  # seconds; the seed's example timestamp 1735932000000 ms
T0_MS = 1_735_932_000_000
LONG_MS = 3_600_000  # start_collection with this runs only the immediate first tick here


class FakeClock:
    def __init__(self, seconds: float = T0) -> None:
        self.now = seconds

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedSource(Source):
    name = "fixed"
    series = seed_catalog()

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def collect(self) -> dict[str, float]:
        return dict(self.values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ep(clock: FakeClock) -> Iterator[MetricsEndpoint]:
    endpoint = MetricsEndpoint(sources=[], clock=clock)
    yield endpoint
    endpoint.close()


def start_and_wait_first_tick(ep: MetricsEndpoint) -> None:
    ticked = threading.Event()

    def on_collected() -> None:
        ticked.set()

    ep.on_metrics_collected(on_collected)
    ep.start_collection(LONG_MS)
    assert ticked.wait(30), "the first collection tick never ran"
    ep.metrics_collected.disconnect(on_collected)


def seed_manual_recording(ep: MetricsEndpoint) -> None:
    ep.record_memory_usage(256.5)
    ep.record_cpu_usage(45.3)
    ep.record_websocket_connections(12, 150)
    ep.record_extension_status("media-player", "running")
    ep.record_request_latency("/api/play", 85.2)


# --- manual recording ----------------------------------------------------------------------


def test_defaults(ep: MetricsEndpoint) -> None:
    assert ep.is_collecting() is False
    assert ep.collection_interval_ms == 60_000
    assert ep.store.capacity == 1440
    rules = {r.metric: r for r in ep.alert_rules()}
    for metric, seed_rule in SEED_DEFAULT_ALERTS.items():
        rule = rules[metric]
        assert (rule.warning_threshold, rule.critical_threshold, rule.description) == seed_rule


def test_manual_recording_appears_in_get_metrics(ep: MetricsEndpoint) -> None:
    seed_manual_recording(ep)
    doc = ep.get_metrics()
    assert doc["timestamp"] == T0_MS
    assert doc["is_collecting"] is False
    assert doc["collection_interval_ms"] == 60_000
    assert isinstance(doc["uptime_ms"], int) and doc["uptime_ms"] >= 0
    sample = {"timestamp": T0_MS}
    assert doc["memory"]["name"] == "memory_usage"
    assert doc["memory"]["unit"] == "MB"
    assert doc["memory"]["samples"] == [{**sample, "value": 256.5}]
    assert (doc["memory"]["latest"], doc["memory"]["min"], doc["memory"]["max"]) == (
        256.5,
        256.5,
        256.5,
    )
    assert doc["memory"]["average"] == 256.5
    assert doc["cpu"]["samples"] == [{**sample, "value": 45.3}]
    assert doc["cpu"]["unit"] == "%"
    assert doc["websocket_active"]["samples"] == [{**sample, "value": 12}]
    assert doc["websocket_active"]["latest"] == 12
    assert doc["websocket_total"]["latest"] == 150
    assert doc["latency"]["samples"] == [{**sample, "value": 85.2}]
    assert doc["latency"]["unit"] == "ms"
    assert doc["extensions"] == {"media-player": "running"}
    assert doc["latency_breakdown"] == {
        "/api/play": {"p50": 85.2, "p95": 85.2, "p99": 85.2, "count": 1}
    }


def test_manual_recording_appears_in_summary(ep: MetricsEndpoint, clock: FakeClock) -> None:
    seed_manual_recording(ep)
    clock.advance(60)
    summary = ep.get_metrics_summary()
    assert summary == {
        "timestamp": T0_MS + 60_000,
        "uptime_seconds": summary["uptime_seconds"],
        "memory_mb": 256.5,
        "cpu_percent": 45.3,
        "active_connections": 12,
        "total_connections": 150,
        "avg_latency_ms": 85.2,
        "last_hour": {
            "memory_avg": 256.5,
            "memory_max": 256.5,
            "cpu_avg": 45.3,
            "cpu_max": 45.3,
        },
        "active_alerts": [],
    }
    assert isinstance(summary["uptime_seconds"], int)
    assert ep.get_alerts() == []


def test_each_manual_record_appends_a_sample(ep: MetricsEndpoint, clock: FakeClock) -> None:
    for i, v in enumerate([100.0, 200.0, 300.0]):
        clock.now = T0 + 60 * i
        ep.record_memory_usage(v)
        ep.record_request_latency("/a", v / 10)
    doc = ep.get_metrics()
    assert [s["value"] for s in doc["memory"]["samples"]] == [100.0, 200.0, 300.0]
    assert [s["timestamp"] for s in doc["memory"]["samples"]] == [
        T0_MS,
        T0_MS + 60_000,
        T0_MS + 120_000,
    ]
    assert doc["memory"]["average"] == pytest.approx(200.0)
    assert [s["value"] for s in doc["latency"]["samples"]] == [10.0, 20.0, 30.0]
    assert doc["latency_breakdown"]["/a"]["count"] == 3
    last2 = ep.get_metrics(2)
    assert [s["value"] for s in last2["memory"]["samples"]] == [200.0, 300.0]
    assert last2["memory"]["sample_count"] == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda ep: ep.record_memory_usage(float("nan")),
        lambda ep: ep.record_memory_usage(-1.0),
        lambda ep: ep.record_memory_usage(float("inf")),
        lambda ep: ep.record_memory_usage("256"),
        lambda ep: ep.record_memory_usage(True),
        lambda ep: ep.record_cpu_usage(float("nan")),
        lambda ep: ep.record_cpu_usage(-0.5),
        lambda ep: ep.record_websocket_connections(-1, 10),
        lambda ep: ep.record_websocket_connections(1, float("nan")),
        lambda ep: ep.record_websocket_connections(1, -10),
        lambda ep: ep.record_extension_status("media-player", "paused"),
        lambda ep: ep.record_extension_status("", "running"),
        lambda ep: ep.record_request_latency("/api/play", float("nan")),
        lambda ep: ep.record_request_latency("/api/play", -1.0),
        lambda ep: ep.record_request_latency("", 1.0),
    ],
)
def test_invalid_input_raises_and_records_nothing(ep: MetricsEndpoint, call) -> None:
    before = ep.get_metrics()
    with pytest.raises(ValueError):
        call(ep)
    doc = ep.get_metrics()
    for key in ("memory", "cpu", "websocket_active", "websocket_total", "latency"):
        assert doc[key]["sample_count"] == 0, key
    assert doc["extensions"] == {}
    assert doc["latency_breakdown"] == {}
    assert {k: v for k, v in doc.items() if k != "uptime_ms"} == {
        k: v for k, v in before.items() if k != "uptime_ms"
    }
    assert ep.get_alerts() == []


def test_bad_status_message_lists_valid_states(ep: MetricsEndpoint) -> None:
    with pytest.raises(ValueError, match="running, stopped, crashed, starting"):
        ep.record_extension_status("media-player", "paused")


@pytest.mark.parametrize("interval", [0, -1, 5, 86_400_001, True, "60000", float("nan")])
def test_invalid_collection_interval_is_rejected(ep: MetricsEndpoint, interval: object) -> None:
    with pytest.raises(ValueError):
        ep.start_collection(interval)  # type: ignore[arg-type]
    assert ep.is_collecting() is False
    assert ep.collection_interval_ms == 60_000


# --- alerts --------------------------------------------------------------------------------


def test_memory_warning_alert_with_seed_fields(ep: MetricsEndpoint) -> None:
    ep.record_memory_usage(1600)
    alerts = ep.get_alerts()
    assert alerts == [
        {
            "metric": "memory_usage",
            "current_value": 1600.0,
            "warning_threshold": 1536.0,
            "critical_threshold": 2048.0,
            "description": "Memory usage high",
            "level": "WARNING",
        }
    ]
    assert set(alerts[0]) == ALERT_KEYS
    assert ep.get_metrics_summary()["active_alerts"] == alerts
    active = ep.get_active_alerts()
    assert len(active) == 1 and active[0].level == "WARNING"


def test_alert_lifecycle_signals(ep: MetricsEndpoint) -> None:
    triggered: list[tuple[str, str, float]] = []
    events: list[AlertEvent] = []
    ep.on_alert_triggered(lambda m, lvl, v: triggered.append((m, lvl, v)))
    ep.on_alert_event(events.append)

    ep.record_memory_usage(1536)  # at the threshold: "exceeds" is strict, nothing fires
    assert ep.get_alerts() == [] and triggered == [] and events == []

    ep.record_memory_usage(1600)
    ep.record_memory_usage(2100)
    assert [a["level"] for a in ep.get_alerts()] == ["CRITICAL"]
    assert ep.get_alerts()[0]["current_value"] == 2100.0
    ep.record_memory_usage(1700)
    assert [a["level"] for a in ep.get_alerts()] == ["WARNING"]
    ep.record_memory_usage(100)
    assert ep.get_alerts() == []

    assert triggered == [
        ("memory_usage", "WARNING", 1600.0),
        ("memory_usage", "CRITICAL", 2100.0),
        ("memory_usage", "WARNING", 1700.0),
    ]
    assert [(e.kind, e.level, e.previous_level, e.value) for e in events] == [
        ("fired", "WARNING", None, 1600.0),
        ("escalated", "CRITICAL", "WARNING", 2100.0),
        ("de-escalated", "WARNING", "CRITICAL", 1700.0),
        ("resolved", "WARNING", "WARNING", 100.0),
    ]
    assert all(e.metric == "memory_usage" for e in events)
    assert all(e.timestamp_ms == T0 * 1000.0 for e in events)
    assert events[0].description == "Memory usage high"


def test_repeated_value_above_threshold_fires_once(ep: MetricsEndpoint) -> None:
    triggered: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda *a: triggered.append(a))
    ep.record_cpu_usage(75)
    ep.record_cpu_usage(80)
    assert triggered == [("cpu_usage", "WARNING", 75.0)]
    assert ep.get_alerts()[0]["current_value"] == 80.0  # the value follows, the level holds


def test_critical_directly_and_several_alerts_ordered(ep: MetricsEndpoint) -> None:
    ep.record_memory_usage(1600)
    ep.record_cpu_usage(95)
    ep.record_websocket_connections(60, 1000)
    ep.record_websocket_connections(101, 1001)
    ep.record_websocket_connections(60, 1002)
    alerts = ep.get_alerts()
    assert [(a["metric"], a["level"]) for a in alerts] == [
        ("cpu_usage", "CRITICAL"),
        ("active_connections", "WARNING"),
        ("memory_usage", "WARNING"),
    ]
    assert alerts[1]["current_value"] == 60.0
    assert all(set(a) == ALERT_KEYS for a in alerts)


def test_manual_latency_sample_is_alerted_on(ep: MetricsEndpoint) -> None:
    triggered: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda *a: triggered.append(a))
    ep.record_request_latency("/slow", 1500.0)
    assert ep.get_metrics()["latency"]["latest"] == 1500.0  # the sample itself is stored
    assert triggered == [("request_latency", "CRITICAL", 1500.0)]
    assert [(a["metric"], a["level"]) for a in ep.get_alerts()] == [("request_latency", "CRITICAL")]


def test_collected_latency_sample_is_alerted_on(ep: MetricsEndpoint) -> None:
    triggered: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda *a: triggered.append(a))
    start_and_wait_first_tick(ep)
    ep.record_request_latency("/slow", 400.0)
    ep.record_request_latency("/slow", 800.0)  # interval mean 600: WARNING
    ep.collect_now()
    assert triggered == [("request_latency", "WARNING", 600.0)]
    assert ep.get_alerts()[0]["current_value"] == 600.0
    ep.stop_collection()


def test_add_alert_replaces_rule_for_same_metric(ep: MetricsEndpoint) -> None:
    ep.add_alert(AlertRule("memory_usage", 1800.0, 2200.0, "Custom memory alert"))
    memory_rules = [r for r in ep.alert_rules() if r.metric == "memory_usage"]
    assert len(memory_rules) == 1
    assert (memory_rules[0].warning_threshold, memory_rules[0].critical_threshold) == (
        1800.0,
        2200.0,
    )
    ep.record_memory_usage(1700)  # above the old 1536, below the new 1800
    assert ep.get_alerts() == []
    ep.record_memory_usage(1900)
    assert ep.get_alerts() == [
        {
            "metric": "memory_usage",
            "current_value": 1900.0,
            "warning_threshold": 1800.0,
            "critical_threshold": 2200.0,
            "description": "Custom memory alert",
            "level": "WARNING",
        }
    ]


def test_remove_alert_resolves_active_alert(ep: MetricsEndpoint) -> None:
    events: list[AlertEvent] = []
    ep.on_alert_event(events.append)
    ep.record_memory_usage(2100)
    assert len(ep.get_alerts()) == 1
    ep.remove_alert("memory_usage")
    assert ep.get_alerts() == []
    assert [(e.kind, e.metric, e.level) for e in events] == [
        ("fired", "memory_usage", "CRITICAL"),
        ("resolved", "memory_usage", "CRITICAL"),
    ]
    assert "memory_usage" not in {r.metric for r in ep.alert_rules()}
    ep.record_memory_usage(5000)  # no rule any more
    assert ep.get_alerts() == []
    assert len(events) == 2


def test_enable_alert_false_resolves_and_true_rearms(ep: MetricsEndpoint) -> None:
    events: list[AlertEvent] = []
    ep.on_alert_event(events.append)
    ep.record_cpu_usage(75)
    ep.enable_alert("cpu_usage", False)
    assert ep.get_alerts() == []
    assert [e.kind for e in events] == ["fired", "resolved"]
    ep.record_cpu_usage(95)
    assert ep.get_alerts() == []  # disabled
    assert len(events) == 2
    ep.enable_alert("cpu_usage", True)
    ep.record_cpu_usage(95)
    assert [(a["metric"], a["level"]) for a in ep.get_alerts()] == [("cpu_usage", "CRITICAL")]
    assert [e.kind for e in events] == ["fired", "resolved", "fired"]


def test_raising_callback_does_not_stop_the_others(ep: MetricsEndpoint) -> None:
    got: list[tuple[str, str, float]] = []
    collected: list[int] = []

    def broken(*args: object) -> None:
        raise RuntimeError("callback failure")

    ep.on_alert_triggered(broken)
    ep.on_alert_triggered(lambda *a: got.append(a))
    ep.on_metrics_collected(broken)
    ep.on_metrics_collected(lambda: collected.append(1))
    ep.record_memory_usage(1600)  # must not raise
    assert got == [("memory_usage", "WARNING", 1600.0)]
    ep.collect_now()
    assert collected == [1]
    assert len(ep.get_alerts()) == 1


# --- collection ----------------------------------------------------------------------------


def test_collect_now_emits_metrics_collected_and_reads_sources(clock: FakeClock) -> None:
    source = FixedSource({"memory_usage": 123.0, "cpu_usage": 4.5})
    ep = MetricsEndpoint(sources=[source], clock=clock)
    collected: list[int] = []
    ep.on_metrics_collected(lambda: collected.append(1))
    ep.collect_now()
    clock.advance(60)
    source.values = {"memory_usage": 124.0, "cpu_usage": 5.5}
    ep.collect_now()
    assert collected == [1, 1]
    doc = ep.get_metrics()
    assert doc["memory"]["samples"] == [
        {"timestamp": T0_MS, "value": 123.0},
        {"timestamp": T0_MS + 60_000, "value": 124.0},
    ]
    assert [s["value"] for s in doc["cpu"]["samples"]] == [4.5, 5.5]
    assert doc["latency"]["sample_count"] == 0  # no requests: no latency sample
    ep.close()


def test_collect_now_evaluates_alerts_on_source_values(clock: FakeClock) -> None:
    ep = MetricsEndpoint(sources=[FixedSource({"cpu_usage": 91.0})], clock=clock)
    triggered: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda *a: triggered.append(a))
    events = ep.collect_now()
    assert [(e.kind, e.metric, e.level) for e in events] == [("fired", "cpu_usage", "CRITICAL")]
    assert triggered == [("cpu_usage", "CRITICAL", 91.0)]
    ep.close()


def test_start_stop_collection_signals(ep: MetricsEndpoint) -> None:
    log: list[str] = []
    ep.on_collection_started(lambda: log.append("started"))
    ep.on_collection_stopped(lambda: log.append("stopped"))
    start_and_wait_first_tick(ep)
    assert ep.is_collecting() is True
    assert ep.collection_interval_ms == LONG_MS
    assert ep.get_metrics()["is_collecting"] is True
    assert ep.get_metrics()["collection_interval_ms"] == LONG_MS
    ep.start_collection(LONG_MS)  # already running: no second thread, no second signal
    assert log == ["started"]
    ep.stop_collection()
    assert ep.is_collecting() is False
    assert ep.get_metrics()["is_collecting"] is False
    ep.stop_collection()  # already stopped: no second signal
    assert log == ["started", "stopped"]


def test_pushed_values_are_folded_into_the_tick(ep: MetricsEndpoint, clock: FakeClock) -> None:
    start_and_wait_first_tick(ep)
    assert ep.get_metrics()["memory"]["sample_count"] == 0  # sources=[]: the tick had nothing

    ep.record_memory_usage(250)
    ep.record_memory_usage(300)  # the last pushed value wins
    for v in (10.0, 20.0, 60.0):
        ep.record_request_latency("/api/play", v)
    ep.record_request_latency("/api/other", 30.0)
    doc = ep.get_metrics()
    assert doc["memory"]["sample_count"] == 0  # nothing is stored before the tick
    assert doc["latency"]["sample_count"] == 0
    assert doc["latency_breakdown"]["/api/play"]["count"] == 3  # percentiles are live

    clock.advance(60)
    ep.collect_now()
    doc = ep.get_metrics()
    assert doc["memory"]["samples"] == [{"timestamp": T0_MS + 60_000, "value": 300.0}]
    assert doc["latency"]["samples"] == [{"timestamp": T0_MS + 60_000, "value": 30.0}]
    assert doc["latency_breakdown"]["/api/play"]["count"] == 3
    assert doc["latency_breakdown"]["/api/other"]["count"] == 1

    clock.advance(60)
    ep.collect_now()  # nothing pushed since: no new samples
    doc = ep.get_metrics()
    assert doc["memory"]["sample_count"] == 1
    assert doc["latency"]["sample_count"] == 1
    ep.stop_collection()


def test_pushed_value_alerts_at_the_tick(ep: MetricsEndpoint) -> None:
    triggered: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda *a: triggered.append(a))
    start_and_wait_first_tick(ep)
    ep.record_memory_usage(1600)
    assert triggered == [] and ep.get_alerts() == []
    ep.collect_now()
    assert triggered == [("memory_usage", "WARNING", 1600.0)]
    assert [a["metric"] for a in ep.get_alerts()] == ["memory_usage"]
    ep.stop_collection()


def test_pushed_values_override_sources(clock: FakeClock) -> None:
    ep = MetricsEndpoint(
        sources=[FixedSource({"memory_usage": 50.0, "cpu_usage": 1.0})], clock=clock
    )
    start_and_wait_first_tick(ep)
    ep.record_memory_usage(300)
    ep.collect_now()
    doc = ep.get_metrics()
    assert [s["value"] for s in doc["memory"]["samples"]] == [50.0, 300.0]
    assert [s["value"] for s in doc["cpu"]["samples"]] == [1.0, 1.0]
    ep.close()


def test_stop_collection_records_what_was_pushed_and_mixes_nothing_later(
    ep: MetricsEndpoint,
) -> None:
    start_and_wait_first_tick(ep)
    ep.record_request_latency("/api/play", 1000.0)  # pushed while collecting, never ticked
    ep.record_memory_usage(300.0)
    ep.stop_collection()  # flushes the interval: nothing pushed is lost
    ep.record_request_latency("/api/play", 10.0)  # manual mode: recorded at once, alone
    doc = ep.get_metrics()
    assert [s["value"] for s in doc["latency"]["samples"]] == [1000.0, 10.0]
    assert doc["memory"]["samples"][-1]["value"] == 300.0


# --- exports -------------------------------------------------------------------------------


def test_export_json_is_the_whole_metrics_document(ep: MetricsEndpoint) -> None:
    seed_manual_recording(ep)
    exported = ep.export_json()
    doc = ep.get_metrics()
    exported.pop("uptime_ms")
    doc.pop("uptime_ms")
    assert exported == doc
    assert exported["memory"]["samples"] == [{"timestamp": T0_MS, "value": 256.5}]


def test_export_csv(ep: MetricsEndpoint, clock: FakeClock) -> None:
    seed_manual_recording(ep)
    clock.advance(60)
    ep.record_memory_usage(260.0)
    text = ep.export_csv()
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == CSV_HEADER
    assert rows[1:] == [
        [str(T0_MS), "256.5", "45.3", "12", "150", "85.2"],
        [str(T0_MS + 60_000), "260.0", "", "", "", ""],
    ]
    last = list(csv.reader(io.StringIO(ep.export_csv(1), newline="")))
    assert len(last) == 3  # header, then the newest sample of each series (two timestamps)


def test_export_prometheus_seed_gauges(ep: MetricsEndpoint) -> None:
    seed_manual_recording(ep)
    text = ep.export_prometheus()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, help_text in SEED_GAUGE_HELP.items():
        assert name in families, name
        assert families[name].type == "gauge"
        assert families[name].documentation == help_text
        assert len(families[name].samples) == 1
    value = {name: families[name].samples[0].value for name in SEED_GAUGE_HELP}
    assert value == {
        "crankshaft_memory_usage_mb": 256.5,
        "crankshaft_cpu_usage_percent": 45.3,
        "crankshaft_websocket_active_connections": 12.0,
        "crankshaft_request_latency_ms": 85.2,
    }
    hist = families["crankshaft_request_duration_seconds"]
    assert hist.type == "histogram"
    by_name = {(s.name, s.labels.get("le")): s for s in hist.samples}
    assert by_name[("crankshaft_request_duration_seconds_count", None)].value == 1
    assert by_name[("crankshaft_request_duration_seconds_count", None)].labels == {
        "endpoint": "/api/play"
    }
    assert by_name[("crankshaft_request_duration_seconds_sum", None)].value == pytest.approx(0.0852)
    assert by_name[("crankshaft_request_duration_seconds_bucket", "0.05")].value == 0
    assert by_name[("crankshaft_request_duration_seconds_bucket", "0.1")].value == 1
    assert by_name[("crankshaft_request_duration_seconds_bucket", "+Inf")].value == 1
    ext = {
        (s.labels["extension"], s.labels["status"]): s.value
        for s in families["crankshaft_extension_status"].samples
    }
    assert ext == {
        ("media-player", "running"): 1.0,
        ("media-player", "stopped"): 0.0,
        ("media-player", "crashed"): 0.0,
        ("media-player", "starting"): 0.0,
    }


def test_export_prometheus_leaves_out_series_without_data(ep: MetricsEndpoint) -> None:
    families = {f.name: f for f in text_string_to_metric_families(ep.export_prometheus())}
    for name in SEED_GAUGE_HELP:
        assert families[name].samples == [], name  # no fake zeros
    ep.record_cpu_usage(3.0)
    families = {f.name: f for f in text_string_to_metric_families(ep.export_prometheus())}
    assert [s.value for s in families["crankshaft_cpu_usage_percent"].samples] == [3.0]
    assert families["crankshaft_memory_usage_mb"].samples == []


def alert_active(ep: MetricsEndpoint) -> dict[tuple[str, str], float]:
    """(metric, level) -> value of crankshaft_alert_active in the endpoint's exposition."""
    families = {f.name: f for f in text_string_to_metric_families(ep.export_prometheus())}
    return {
        (s.labels["metric"], s.labels["level"]): s.value
        for s in families["crankshaft_alert_active"].samples
    }


def test_export_prometheus_alert_active(ep: MetricsEndpoint) -> None:
    ep.record_memory_usage(2100)
    active = alert_active(ep)
    # Like two Prometheus rules: the warning level fires too while the critical one does.
    assert active[("memory_usage", "critical")] == 1.0
    assert active[("memory_usage", "warning")] == 1.0
    assert active[("cpu_usage", "critical")] == 0.0
    ep.record_memory_usage(1600)
    active = alert_active(ep)
    assert active[("memory_usage", "critical")] == 0.0
    assert active[("memory_usage", "warning")] == 1.0


def test_export_openmetrics_parses(ep: MetricsEndpoint) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as om_families,
    )

    seed_manual_recording(ep)
    text = ep.export_prometheus(openmetrics=True)
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in om_families(text)}
    assert families["crankshaft_memory_usage_mb"].samples[0].value == 256.5
    assert math.isclose(families["crankshaft_request_latency_ms"].samples[0].value, 85.2)


def test_connection_counts_must_be_whole_numbers(ep: MetricsEndpoint) -> None:
    with pytest.raises(ValueError, match="whole number"):
        ep.record_websocket_connections(12.7, 150)
    assert ep.get_metrics()["websocket_active"]["sample_count"] == 0


def test_transition_log_line_names_only_the_levels_a_rule_has(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rule without a warning level logs its critical threshold, never "warning None"."""
    caplog.set_level("INFO", logger="exporter.endpoint")
    ep = MetricsEndpoint(rules=[AlertRule("memory_usage", None, 100.0, "only critical")],
                         clock=FakeClock())
    ep.record_memory_usage(150.0)  # collection stopped: recorded and evaluated at once
    ep.record_memory_usage(50.0)
    lines = [r.getMessage() for r in caplog.records if "memory_usage" in r.getMessage()]
    assert len(lines) == 2, lines  # fired, resolved
    assert lines[0].endswith("CRITICAL (value 150, critical 100)"), lines
    assert not any("None" in line or "warning" in line for line in lines), lines

"""Honest absence in the running daemon: a dead target's series go away (with a gap in the
history, not invented samples), latency without traffic stops alerting, and capped names
give their slots back, with an ingest reply that says what was dropped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import RunningDaemon
from tests.helpers import Sleeper, poll, wait_for

# Blocks on stdin: a target that is alive and does nothing.

TARGET_SERIES = (
    "crankshaft_memory_usage_mb",
    "crankshaft_cpu_usage_percent",
    "crankshaft_process_threads",
    "crankshaft_process_open_fds",
    "crankshaft_process_context_switches_total",
    "crankshaft_process_io_read_bytes_total",
    "crankshaft_process_io_written_bytes_total",
)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def sample_lines(text: str, name: str) -> list[str]:
    """The exposition's sample lines of ``name`` (not its HELP/TYPE comments)."""
    return [ln for ln in text.splitlines() if re.match(re.escape(name) + r"[ {]", ln)]


def sample_value(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rpartition(" ")[2])
    return None


def exposition(d: RunningDaemon) -> str:
    r = d.request("/metrics/prometheus")
    assert r.status == 200, r.text
    return r.text


def get_json(d: RunningDaemon, path: str) -> Any:
    r = d.request(path)
    assert r.status == 200, r.text
    return r.json()


def collections(d: RunningDaemon) -> float:
    value = sample_value(exposition(d), "crankshaft_collections_total")
    assert value is not None
    return value


def wait_ticks(d: RunningDaemon, n: int) -> None:
    """Wait until the collector has run ``n`` more ticks (an event, not a sleep)."""
    start = collections(d)
    wait_for(lambda: collections(d) >= start + n, f"{n} more collection ticks")


# --- target death ---------------------------------------------------------------------------


def test_a_dead_target_is_absent_with_a_gap_and_comes_back(tmp_path, daemon_factory, sleepers):
    pidfile = tmp_path / "service.pid"
    sleepers.append(Sleeper())
    pidfile.write_text(f"{sleepers[0].pid}\n")
    config = write_config(
        tmp_path / "exporter.yaml",
        {
            "interval": "500ms",
            "target": {"kind": "pidfile", "value": str(pidfile)},
            "alerts": [
                {"metric": "target_down", "critical": 0, "description": "Target not running"}
            ],
        },
    )
    d = daemon_factory("--config", str(config))

    # Alive: every target series is there, with samples.
    doc = poll(
        lambda: get_json(d, "/metrics"),
        lambda doc: doc["memory"]["sample_count"] >= 2 and doc["cpu"]["sample_count"] >= 2,
        "two samples of the live target",
    )
    text = exposition(d)
    assert "crankshaft_target_up 1.0" in text
    for name in TARGET_SERIES:
        assert sample_lines(text, name), name
    summary = get_json(d, "/metrics/summary")
    assert summary["memory_mb"] > 1 and summary["cpu_percent"] is not None

    # The target dies.
    sleepers.pop().stop()
    text = poll(
        lambda: exposition(d), lambda t: "crankshaft_target_up 0.0" in t, "target_up 0"
    )
    down = get_json(d, "/metrics")
    for name in TARGET_SERIES:
        assert sample_lines(text, name) == [], name  # absent, not the last value
    openmetrics = d.request(
        "/metrics/prometheus", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ).text
    assert "crankshaft_target_up 0.0" in openmetrics
    for name in TARGET_SERIES:
        assert sample_lines(openmetrics, name) == [], name
    summary = get_json(d, "/metrics/summary")
    assert summary["memory_mb"] is None and summary["cpu_percent"] is None
    for key in ("memory", "cpu", "threads", "open_fds"):
        assert down[key]["latest"] is None, key
    # the samples from before the death are kept
    before = doc["memory"]["samples"]
    assert down["memory"]["samples"][: len(before)] == before
    assert down["memory"]["sample_count"] >= doc["memory"]["sample_count"]
    alerts = poll(
        lambda: get_json(d, "/metrics/alerts"),
        lambda a: any(x["metric"] == "target_down" for x in a),
        "target_down to fire",
    )
    assert [x["metric"] for x in alerts] == ["target_down"]

    # While it is down, ticks run and add no sample: a gap, not invented values.
    wait_ticks(d, 3)
    still = get_json(d, "/metrics")
    for key in ("memory", "cpu", "threads"):
        assert still[key]["sample_count"] == down[key]["sample_count"], key
        assert still[key]["latest"] is None, key
    # CSV: any row after the last sample (another source's) has empty target cells
    last_ms = down["memory"]["samples"][-1]["timestamp"]
    header, *rows = d.request("/metrics/csv").text.splitlines()
    columns = header.split(",")
    memory, cpu = columns.index("memory_mb"), columns.index("cpu_percent")
    later = [row.split(",") for row in rows if int(row.split(",")[0]) > last_ms]
    assert all(cells[memory] == cells[cpu] == "" for cells in later), later

    # It comes back under a new PID: values come back.
    sleepers.append(Sleeper())
    pidfile.write_text(f"{sleepers[0].pid}\n")
    text = poll(lambda: exposition(d), lambda t: "crankshaft_target_up 1.0" in t, "target_up 1")
    back = poll(
        lambda: get_json(d, "/metrics"),
        lambda doc: doc["memory"]["latest"] is not None,
        "memory to come back",
    )
    assert back["memory"]["sample_count"] > still["memory"]["sample_count"]
    assert back["memory"]["samples"][: len(before)] == before
    summary = poll(
        lambda: get_json(d, "/metrics/summary"),
        lambda s: s["memory_mb"] is not None and s["cpu_percent"] is not None,
        "summary values to come back",
    )
    assert summary["memory_mb"] > 1
    text = exposition(d)
    for name in TARGET_SERIES:
        assert sample_lines(text, name), name
    poll(lambda: get_json(d, "/metrics/alerts"), lambda a: a == [], "target_down to resolve")


# --- quiet latency --------------------------------------------------------------------------


def test_latency_without_traffic_resolves_its_alerts(tmp_path, daemon_factory):
    config = write_config(
        tmp_path / "exporter.yaml",
        {
            "interval": "500ms",
            "target": {"kind": "none"},
            "latency": {"quiet_after": "2s"},
            "alerts": [
                {
                    "metric": "request_latency",
                    "warning": 500,
                    "critical": 1000,
                    "description": "Request latency high",
                },
                {
                    "metric": "request_latency_p95",
                    "warning": 500,
                    "critical": 1000,
                    "description": "p95 latency high",
                },
            ],
        },
    )
    d = daemon_factory("--config", str(config))
    r = d.post_json("/metrics/record", {"latency_ms": {"/x": [1500]}})
    assert r.status == 200, r.text

    firing = poll(
        lambda: get_json(d, "/metrics/alerts"),
        lambda a: {(x["metric"], x["level"]) for x in a}
        == {("request_latency", "CRITICAL"), ("request_latency_p95", "CRITICAL")},
        "both latency alerts to fire",
    )
    assert {x["current_value"] for x in firing} == {1500.0}

    # No traffic: after quiet_after they resolve, and the average is absent, not stale.
    poll(lambda: get_json(d, "/metrics/alerts"), lambda a: a == [], "latency alerts to resolve")
    text = exposition(d)
    assert sample_lines(text, "crankshaft_request_latency_ms") == []
    assert get_json(d, "/metrics/summary")["avg_latency_ms"] is None
    assert get_json(d, "/metrics")["latency"]["latest"] is None
    # The histogram is cumulative since start: it keeps counting what was observed.
    assert 'crankshaft_request_duration_seconds_count{endpoint="/x"} 1.0' in text

    lines = d.log().splitlines()
    quiet = [i for i, ln in enumerate(lines) if "latency.quiet_after" in ln]
    assert len(quiet) == 1, [lines[i] for i in quiet]
    assert "no latency observation for 2s" in lines[quiet[0]]
    # said just before the resolutions it explains
    for metric in ("request_latency ", "request_latency_p95 endpoint=/x "):
        resolved = [i for i, ln in enumerate(lines) if f"alert resolved: {metric}" in ln]
        assert len(resolved) == 1 and resolved[0] > quiet[0], (metric, lines)

    # Still quiet: they stay resolved (nothing flaps or is re-sent), said once only.
    wait_ticks(d, 2)
    assert get_json(d, "/metrics/alerts") == []
    assert len([ln for ln in d.log().splitlines() if "latency.quiet_after" in ln]) == 1

    # Traffic again: behaviour as before.
    d.post_json("/metrics/record", {"latency_ms": {"/x": [1500]}})
    poll(
        lambda: get_json(d, "/metrics/alerts"),
        lambda a: ("request_latency", "CRITICAL") in {(x["metric"], x["level"]) for x in a},
        "the alert to fire again with traffic",
    )
    assert get_json(d, "/metrics/summary")["avg_latency_ms"] == 1500.0


# --- eviction and the ingest reply ---------------------------------------------------------


def daemon_now_ms(d: RunningDaemon) -> int:
    return get_json(d, "/metrics/summary")["timestamp"]


def test_idle_names_give_their_slots_back_and_the_reply_counts(tmp_path, daemon_factory):
    config = write_config(
        tmp_path / "exporter.yaml",
        {
            "interval": "500ms",
            "target": {"kind": "none"},
            "latency": {"max_endpoints": 2, "evict_after": "1s"},
            "extensions": {"max_extensions": 2, "evict_after": "1s"},
            "alerts": [],
        },
    )
    d = daemon_factory("--config", str(config))

    # Fill both caps with invented names; a new name in the same moment is dropped at once.
    r = d.post_json(
        "/metrics/record",
        {
            "latency_ms": {"/invented-1": [10, 20], "/invented-2": [30], "/real": [5, 6, 7]},
            "extensions": {"invented-a": "running", "invented-b": "running", "real": "running"},
        },
    )
    assert r.status == 200, r.text
    reply = r.json()
    assert reply["accepted"] == {"gauges": 0, "extensions": 2, "latency_observations": 3}
    assert reply["dropped"] == {"extensions": 1, "latency_observations": 3}
    filled_by = daemon_now_ms(d)  # the batch was applied no later than this

    doc = get_json(d, "/metrics")
    assert set(doc["latency_breakdown"]) == {"/invented-1", "/invented-2"}
    assert set(doc["extensions"]) == {"invented-a", "invented-b"}

    # Once evict_after has passed on the daemon's clock (an event, not a sleep), the names
    # are idle.  One invented name is still in use: it keeps its slot, the idle one goes.
    wait_for(lambda: daemon_now_ms(d) >= filled_by + 1000, "evict_after to pass")
    r = d.post_json(
        "/metrics/record",
        {
            "latency_ms": {"/invented-2": [40], "/real": [5, 6, 7], "/third": [8]},
            "extensions": {"invented-b": "stopped", "real": "running", "third": "running"},
        },
    )
    assert r.status == 200, r.text
    reply = r.json()
    # /invented-2 refreshed; /real takes /invented-1's slot; /third finds both just used.
    assert reply["accepted"] == {"gauges": 0, "extensions": 2, "latency_observations": 4}
    assert reply["dropped"] == {"extensions": 1, "latency_observations": 1}

    doc = get_json(d, "/metrics")
    assert set(doc["latency_breakdown"]) == {"/invented-2", "/real"}
    assert doc["latency_breakdown"]["/real"]["count"] == 3
    assert doc["extensions"] == {"invented-b": "stopped", "real": "running"}

    text = exposition(d)
    assert sample_value(text, "crankshaft_latency_evicted_endpoints_total") == 1.0
    assert sample_value(text, "crankshaft_extension_evicted_total") == 1.0
    assert sample_value(text, "crankshaft_latency_dropped_observations_total") == 4.0
    assert sample_value(text, "crankshaft_extension_dropped_updates_total") == 2.0
    counts = r'crankshaft_request_duration_seconds_count\{endpoint="([^"]*)"'
    endpoints = set(re.findall(counts, text))
    assert endpoints == {"/invented-2", "/real"}
    extensions = set(re.findall(r'crankshaft_extension_status\{extension="([^"]*)"', text))
    assert extensions == {"invented-b", "real"}


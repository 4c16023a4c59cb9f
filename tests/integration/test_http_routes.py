"""Every route of port 9001 against the real daemon (a subprocess on a loopback port).

The JSON documents are checked against the seed's field names and example document, the
exposition is parsed with prometheus_client's own parsers (text 0.0.4 and OpenMetrics), and
ingested batches are followed through every view: /metrics, /metrics/summary, the alerts and
the exposition.  Waiting is always "poll a route until a condition holds, with a deadline".
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

import exporter
from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App
from exporter.http.openapi import openapi_document
from exporter.sources import registry
from tests.conftest import RunningDaemon, start_daemon
from tests.helpers import poll
from tests.seed_contract import (
    ALERT_KEYS,
    DEFAULT_SOURCE_JSON_KEYS,
    SEED_EXAMPLE_ALERT,
    SEED_GAUGE_HELP,
    SEED_SERIES,
    SEED_THRESHOLDS,
    SERIES_DOC_KEYS,
)
from tests.seed_contract import (
    DAEMON_CSV_HEADER as CSV_HEADER,
)
from tests.seed_contract import (
    DAEMON_METRICS_KEYS as METRICS_KEYS,
)

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)
DEADLINE_S = 20.0

# The seed's GET /metrics example ("REST API Endpoints"), its "..." sample elided.
SEED_METRICS_EXAMPLE: dict[str, Any] = {
    "timestamp": 1735932000000,
    "uptime_ms": 3600000,
    "is_collecting": True,
    "collection_interval_ms": 60000,
    "memory": {
        "name": "memory_usage",
        "unit": "MB",
        "sample_count": 60,
        "latest": 245.8,
        "average": 238.4,
        "min": 220.1,
        "max": 265.3,
        "samples": [
            {"timestamp": 1735928400000, "value": 220.1},
            {"timestamp": 1735928460000, "value": 225.3},
        ],
    },
    "cpu": {
        "name": "cpu_usage",
        "unit": "%",
        "latest": 18.5,
        "average": 15.2,
        "min": 8.3,
        "max": 42.1,
    },
    "websocket_active": {"name": "active_connections", "unit": "count", "latest": 8,
                         "average": 6.7},
    "latency": {
        "name": "request_latency",
        "unit": "ms",
        "latest": 45.2,
        "average": 52.3,
        "min": 28.1,
        "max": 185.4,
    },
    "extensions": {"media-player": "running", "navigation": "running", "phone": "stopped"},
    "latency_breakdown": {
        "/api/media/play": {"p50": 42.1, "p95": 95.3, "p99": 145.8, "count": 250},
        "/api/settings/get": {"p50": 15.2, "p95": 35.1, "p99": 62.3, "count": 180},
    },
}
# The seed's GET /metrics/summary example.
SEED_SUMMARY_EXAMPLE: dict[str, Any] = {
    "timestamp": 1735932000000,
    "uptime_seconds": 3600,
    "memory_mb": 245.8,
    "cpu_percent": 18.5,
    "active_connections": 8,
    "total_connections": 152,
    "avg_latency_ms": 45.2,
    "last_hour": {"memory_avg": 238.4, "memory_max": 265.3, "cpu_avg": 15.2, "cpu_max": 42.1},
    "active_alerts": [SEED_EXAMPLE_ALERT],
}

# A realistic batch from a head unit: several endpoints, one in scalar form, one whose name
# needs escaping as a Prometheus label value.
BATCH: dict[str, Any] = {
    "memory_mb": 912.5,
    "cpu_percent": 37.25,
    "active_connections": 8,
    "total_connections": 152,
    "extensions": {
        "media-player": "running",
        "navigation": "running",
        "phone": "stopped",
        "obd-reader": "starting",
    },
    "latency_ms": {
        "/api/media/play": [42.1, 38.0, 95.3, 51.7, 145.8, 44.4, 39.9, 61.2, 47.5, 40.3, 120.0],
        "/api/settings/get": [15.2, 12.0, 35.1, 18.4, 62.3],
        "/api/nav/route": 250.0,
        '/api/"odd"\\näme': [1.5, 0.25, 2.5, 7.0],
    },
}


# --- helpers -----------------------------------------------------------------------------


def observations(batch: dict[str, Any]) -> dict[str, list[float]]:
    return {
        ep: [float(v) for v in (obs if isinstance(obs, list) else [obs])]
        for ep, obs in batch["latency_ms"].items()
    }


def type7(values: list[float], q: float) -> float:
    """Reference percentile: linear interpolation between closest ranks (R type 7)."""
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    if lo >= len(s) - 1:
        return s[-1]
    return s[lo] + (h - lo) * (s[lo + 1] - s[lo])


def get_json(d: RunningDaemon, path: str, **headers: str) -> Any:
    r = d.request(path, headers=headers)
    assert r.status == 200, (path, r.status, r.body[:300])
    assert media_type(r.headers["content-type"]) == "application/json"
    return r.json()


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def content_type_params(content_type: str) -> dict[str, str]:
    params = {}
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        params[name.strip().lower()] = value.strip()
    return params


def newest_tick(d: RunningDaemon) -> int | None:
    samples = get_json(d, "/metrics?last_n=1")["memory"]["samples"]
    return samples[-1]["timestamp"] if samples else None


def between_ticks(d: RunningDaemon, read: Callable[[], Any]) -> Any:
    """``read()`` repeated until no collection tick happened while it ran, so that several
    requests describe one moment of the store."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        before = newest_tick(d)
        result = read()
        if newest_tick(d) == before:
            return result
        assert time.monotonic() < deadline, "the store never held still between two ticks"


def wait_ticks(d: RunningDaemon, n: int = 1) -> None:
    """Wait until ``n`` further collection ticks have been stored."""
    seen = newest_tick(d)
    for _ in range(n):
        seen = poll(lambda: newest_tick(d), lambda t, s=seen: t is not None and t != s,
                    "the next collection tick")


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def assert_shape(seed: Any, ours: Any, where: str = "$") -> None:
    """Every key of the seed's example exists in ours with the same JSON type, recursively;
    each element of an array has the shape of the seed's first element."""
    assert json_type(ours) == json_type(seed), f"{where}: {json_type(ours)} != {json_type(seed)}"
    if isinstance(seed, dict):
        # Maps keyed by data (extension ids, endpoints) are compared value by value.
        keyed_by_data = where.endswith((".extensions", ".latency_breakdown"))
        if keyed_by_data:
            template = next(iter(seed.values()))
            assert ours, f"{where}: empty, cannot compare with the seed's example"
            for key, value in ours.items():
                assert_shape(template, value, f"{where}[{key!r}]")
            return
        missing = set(seed) - set(ours)
        assert not missing, f"{where}: missing {sorted(missing)}"
        for key in seed:
            assert_shape(seed[key], ours[key], f"{where}.{key}")
    elif isinstance(seed, list):
        assert ours, f"{where}: empty, cannot compare with the seed's example"
        for i, item in enumerate(ours):
            assert_shape(seed[0], item, f"{where}[{i}]")


def families(text: str, openmetrics: bool) -> dict[str, Any]:
    parser = parse_openmetrics if openmetrics else parse_text
    found: dict[str, Any] = {}
    for family in parser(text):
        assert family.name not in found, f"family {family.name} appears twice"
        found[family.name] = family
    return found


def exposition(d: RunningDaemon, path: str = "/metrics/prometheus", openmetrics: bool = False,
               ) -> dict[str, Any]:
    accept = PROMETHEUS_ACCEPT if openmetrics else "text/plain;version=0.0.4"
    r = d.request(path, headers={"Accept": accept})
    assert r.status == 200
    return families(r.text, openmetrics)


def sample_value(family: Any, name: str, **labels: str) -> float:
    matches = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, (name, labels, family.samples)
    return matches[0]


def histograms(fams: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per endpoint: {"buckets": [(le, count)...], "count": n, "sum": s}."""
    out: dict[str, dict[str, Any]] = {}
    for s in fams["crankshaft_request_duration_seconds"].samples:
        ep = out.setdefault(s.labels["endpoint"], {"buckets": []})
        if s.name.endswith("_bucket"):
            assert set(s.labels) == {"endpoint", "le"}
            ep["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            ep["count"] = s.value
        elif s.name.endswith("_sum"):
            ep["sum"] = s.value
    return out


# What the daemon watching itself measures no source for: everything but memory and CPU.
UNMEASURED: dict[str, Any] = {k: v for k, v in BATCH.items()
                              if k not in ("memory_mb", "cpu_percent")}


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    """One daemon for the read-only checks, fed BATCH once and past a few ticks."""
    d = start_daemon(tmp_path_factory.mktemp("routes"), "--interval", "0.25")
    try:
        r = d.post_json("/metrics/record", UNMEASURED)
        assert r.status == 200, r.body
        poll(lambda: get_json(d, "/metrics"),
             lambda m: m["websocket_active"]["latest"] == 8 and m["latency"]["sample_count"] >= 1
             and m["memory"]["sample_count"] >= 4,
             "the batch and four ticks in /metrics")
        yield d
    finally:
        d.stop()


@pytest.fixture
def fresh(daemon_factory) -> RunningDaemon:
    """A daemon of our own, for tests whose pushes would disturb the others; it watches no
    process, so that memory and CPU may be pushed (a measured series is refused: 409)."""
    return daemon_factory("--interval", "0.3", "--target", "none")


@pytest.fixture
def seed_alert(daemon_factory, tmp_path) -> RunningDaemon:
    """A daemon of our own whose active_connections rule is the seed's, without `for` (the
    shipped configuration waits 5m): it fires on the first sample that crosses."""
    cfg = tmp_path / "seed-alert.yaml"
    cfg.write_text("alerts:\n  - {metric: active_connections, warning: 50, critical: 100,\n"
                   "     description: Too many active connections}\n")
    return daemon_factory("--interval", "0.3", "--config", str(cfg))


# --- GET /metrics as JSON ----------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", BROWSER_ACCEPT, "application/json"],
                         ids=["no-accept", "any", "browser", "json"])
def test_metrics_is_the_seeds_json_document(live: RunningDaemon, accept: str | None) -> None:
    r = live.request("/metrics", headers={"Accept": accept} if accept else {})
    assert r.status == 200
    assert media_type(r.headers["content-type"]) == "application/json"
    assert "Accept" in r.headers.get("vary", "")
    doc = r.json()
    assert set(doc) == METRICS_KEYS
    assert isinstance(doc["timestamp"], int) and doc["timestamp"] > 1_600_000_000_000
    assert isinstance(doc["uptime_ms"], int) and doc["uptime_ms"] >= 0
    assert doc["is_collecting"] is True
    assert doc["collection_interval_ms"] == 250
    for key, (name, unit) in SEED_SERIES.items():
        series = doc[key]
        assert set(series) == SERIES_DOC_KEYS, key
        assert (series["name"], series["unit"]) == (name, unit)
        assert series["sample_count"] == len(series["samples"])
        for sample in series["samples"]:
            assert set(sample) == {"timestamp", "value"}
            assert isinstance(sample["timestamp"], int)
            assert json_type(sample["value"]) == ("integer" if unit == "count" else "number")
        times = [s["timestamp"] for s in series["samples"]]
        assert times == sorted(times)
        if series["samples"]:
            values = [s["value"] for s in series["samples"]]
            assert series["latest"] == values[-1]
            assert series["min"] == min(values) and series["max"] == max(values)
            assert series["average"] == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert doc["extensions"] == BATCH["extensions"]
    assert set(doc["latency_breakdown"]) == set(BATCH["latency_ms"])
    for p in doc["latency_breakdown"].values():
        assert set(p) == {"p50", "p95", "p99", "count"}


def test_metrics_json_matches_the_seed_example_field_for_field(live: RunningDaemon) -> None:
    doc = get_json(live, "/metrics")
    assert_shape(SEED_METRICS_EXAMPLE, doc)
    # Our one addition has the shape of the other count series.
    assert_shape(doc["websocket_active"], doc["websocket_total"], "$.websocket_total")


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_last_n_limits_samples_and_stats(live: RunningDaemon, n: int) -> None:
    full, part = between_ticks(
        live, lambda: (get_json(live, "/metrics"), get_json(live, f"/metrics?last_n={n}"))
    )
    for key in SEED_SERIES:
        want = full[key]["samples"][len(full[key]["samples"]) - n:] if n else []
        got = part[key]
        assert got["samples"] == want, key
        assert got["sample_count"] == len(want)
        values = [s["value"] for s in want]
        assert got["latest"] == full[key]["latest"]  # the value known now, whatever last_n
        if values:
            assert (got["min"], got["max"]) == (min(values), max(values))
            assert got["average"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        else:
            assert got["average"] is got["min"] is got["max"] is None
    assert part["latency_breakdown"] == full["latency_breakdown"]
    assert part["extensions"] == full["extensions"]


def test_last_n_minus_one_means_all(live: RunningDaemon) -> None:
    everything, minus_one, huge = between_ticks(
        live,
        lambda: (
            get_json(live, "/metrics"),
            get_json(live, "/metrics?last_n=-1"),
            get_json(live, "/metrics?last_n=999999999999"),
        ),
    )
    assert everything["memory"]["sample_count"] >= 4
    for key in SEED_SERIES:
        assert minus_one[key] == everything[key] == huge[key]


# --- exposition and negotiation ----------------------------------------------------------


def test_prometheus_scrape_of_metrics_gets_openmetrics(live: RunningDaemon) -> None:
    r = live.request("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
    assert r.status == 200
    ct = r.headers["content-type"]
    assert media_type(ct) == "application/openmetrics-text"
    assert content_type_params(ct)["version"] == "1.0.0"
    assert r.text.endswith("# EOF\n")
    assert "crankshaft_memory_usage_mb" in families(r.text, openmetrics=True)


def test_text_004_on_metrics(live: RunningDaemon) -> None:
    r = live.request("/metrics", headers={"Accept": "text/plain;version=0.0.4"})
    assert r.status == 200
    ct = r.headers["content-type"]
    assert media_type(ct) == "text/plain"
    assert content_type_params(ct)["version"] == "0.0.4"
    assert "# EOF" not in r.text
    assert "crankshaft_memory_usage_mb" in families(r.text, openmetrics=False)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text;version=1.0.0", True),
    ],
    ids=["no-accept", "any", "text", "prometheus", "om", "om-1.0.0"],
)
def test_metrics_prometheus_negotiates(live: RunningDaemon, accept: str | None,
                                       openmetrics: bool) -> None:
    r = live.request("/metrics/prometheus", headers={"Accept": accept} if accept else {})
    assert r.status == 200
    ct = r.headers["content-type"]
    if openmetrics:
        assert media_type(ct) == "application/openmetrics-text"
        assert content_type_params(ct)["version"] == "1.0.0"
        assert r.text.endswith("# EOF\n")
    else:
        assert media_type(ct) == "text/plain"
        assert content_type_params(ct)["version"] == "0.0.4"
    fams = families(r.text, openmetrics)
    assert set(SEED_GAUGE_HELP) <= set(fams)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics"])
def test_exposition_families(live: RunningDaemon, openmetrics: bool) -> None:
    fams = exposition(live, openmetrics=openmetrics)
    for name, help_text in SEED_GAUGE_HELP.items():
        fam = fams[name]
        assert (fam.type, fam.documentation) == ("gauge", help_text), name
        assert [s.name for s in fam.samples] == [name]
    assert sample_value(fams["crankshaft_websocket_active_connections"],
                        "crankshaft_websocket_active_connections") == 8

    conns = fams["crankshaft_websocket_connections"]
    assert conns.type == "counter"
    assert sample_value(conns, "crankshaft_websocket_connections_total") == 152

    hist = fams["crankshaft_request_duration_seconds"]
    assert hist.type == "histogram"
    per_endpoint = histograms(fams)
    assert set(per_endpoint) == set(BATCH["latency_ms"])
    for ep, h in per_endpoint.items():
        les = [le for le, _ in h["buckets"]]
        counts = [c for _, c in h["buckets"]]
        assert les == sorted(les) and les[-1] == math.inf, ep
        assert counts == sorted(counts), f"{ep}: buckets not cumulative"
        assert counts[-1] == h["count"], f"{ep}: +Inf bucket != _count"

    ext = fams["crankshaft_extension_status"]
    assert ext.type in ("gauge", "stateset")
    for extension, status in BATCH["extensions"].items():
        for state in ("running", "stopped", "crashed", "starting"):
            value = sample_value(ext, "crankshaft_extension_status", extension=extension,
                                 status=state)
            assert value == (1 if state == status else 0), (extension, state)

    active = fams["crankshaft_alert_active"]
    assert active.type == "gauge"
    assert {s.labels["metric"] for s in active.samples} >= {m for m, _ in SEED_THRESHOLDS}
    for s in active.samples:
        assert set(s.labels) == {"metric", "level"}
        assert s.labels["level"] in ("warning", "critical")
    thresholds = fams["crankshaft_alert_threshold"]
    assert thresholds.type == "gauge"
    shown = {(s.labels["metric"], s.labels["level"]): s.value for s in thresholds.samples}
    for key, value in SEED_THRESHOLDS.items():
        assert shown[key] == value, key

    assert fams["crankshaft_target_up"].type == "gauge"
    assert sample_value(fams["crankshaft_target_up"], "crankshaft_target_up") == 1
    collections = fams["crankshaft_collections"]
    assert collections.type == "counter"
    assert sample_value(collections, "crankshaft_collections_total") >= 4
    duration = fams["crankshaft_collection_duration_seconds"]
    assert duration.type == "gauge"
    assert sample_value(duration, "crankshaft_collection_duration_seconds") >= 0
    errors = fams["crankshaft_collection_errors"]
    assert errors.type == "counter"
    assert all(s.name == "crankshaft_collection_errors_total" for s in errors.samples)

    build = fams["crankshaft_exporter_build" if openmetrics else "crankshaft_exporter_build_info"]
    assert build.type == ("info" if openmetrics else "gauge")
    (info,) = build.samples
    assert info.name == "crankshaft_exporter_build_info" and info.value == 1
    assert info.labels["version"] == exporter.__version__

    for name, kind in [
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_cpu_seconds", "counter"),
    ]:
        assert fams[name].type == kind, name
        assert fams[name].samples, name


def test_the_two_formats_carry_the_same_samples(live: RunningDaemon) -> None:
    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return exposition(live, openmetrics=False), exposition(live, openmetrics=True)

    text, om = between_ticks(live, both)
    volatile = ("process_", "crankshaft_collection_duration")
    for name, fam in text.items():
        if name.startswith(volatile) or name == "crankshaft_exporter_build_info":
            continue
        other = om[name]
        assert sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in fam.samples) \
            == sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                      for s in other.samples), name


@pytest.mark.parametrize(
    ("path", "accept"),
    [("/metrics/prometheus", None), ("/metrics/prometheus", PROMETHEUS_ACCEPT),
     ("/metrics", None)],
    ids=["text", "openmetrics", "json"],
)
def test_gzip_for_large_bodies(live: RunningDaemon, path: str, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    plain = live.request(path, headers=headers)
    assert plain.status == 200
    assert "content-encoding" not in plain.headers
    assert len(plain.body) >= 1024
    r = live.request(path, headers={**headers, "Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in r.headers["vary"]
    assert int(r.headers["content-length"]) == len(r.body)
    body = gzip.decompress(r.body).decode()
    assert media_type(r.headers["content-type"]) == media_type(plain.headers["content-type"])
    if path == "/metrics":
        assert set(json.loads(body)) == METRICS_KEYS
    else:
        fams = families(body, openmetrics=accept is not None)
        assert set(SEED_GAUGE_HELP) <= set(fams)


def test_small_bodies_are_not_gzipped(live: RunningDaemon) -> None:
    r = live.request("/healthz", headers={"Accept-Encoding": "gzip"})
    assert len(r.body) < 1024
    assert "content-encoding" not in r.headers
    assert r.json()["status"] == "ok"
    r = live.request("/metrics/prometheus", headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "content-encoding" not in r.headers
    assert "crankshaft_memory_usage_mb" in families(r.text, openmetrics=False)


# --- POST /metrics/record through every view ---------------------------------------------


def test_recorded_batch_shows_everywhere(fresh: RunningDaemon) -> None:
    poll(lambda: fresh.request("/healthz").status, lambda s: s == 200, "the first tick")
    r = fresh.post_json("/metrics/record", BATCH)
    assert r.status == 200, r.body
    obs = observations(BATCH)
    n_obs = sum(len(v) for v in obs.values())
    assert r.json() == {
        "accepted": {"gauges": 4, "extensions": len(BATCH["extensions"]),
                     "latency_observations": n_obs},
        "dropped": {"extensions": 0, "latency_observations": 0},
        "dropped_latency_observations": 0,
    }
    # Gauges land at the next tick; everything of the batch lands on the same tick.
    doc = poll(lambda: get_json(fresh, "/metrics"),
               lambda m: m["websocket_active"]["sample_count"] > 0, "the batch in /metrics")

    assert doc["websocket_active"]["latest"] == 8
    assert doc["websocket_total"]["latest"] == 152
    assert doc["extensions"] == BATCH["extensions"]
    assert set(doc["latency_breakdown"]) == set(obs)
    for endpoint, values in obs.items():
        got = doc["latency_breakdown"][endpoint]
        expected = {"p50": type7(values, 0.50), "p95": type7(values, 0.95),
                    "p99": type7(values, 0.99), "count": len(values)}
        assert got == expected, endpoint
        # The same numbers as an independent implementation of the method (R type 7).
        if len(values) > 1:
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            assert got["p50"] == pytest.approx(cuts[49], rel=1e-12)
            assert got["p95"] == pytest.approx(cuts[94], rel=1e-12)
            assert got["p99"] == pytest.approx(cuts[98], rel=1e-12)
    all_obs = [v for values in obs.values() for v in values]
    tick = doc["websocket_active"]["samples"][-1]["timestamp"]
    by_time = {key: {s["timestamp"]: s["value"] for s in doc[key]["samples"]}
               for key in SEED_SERIES}
    assert by_time["latency"] == {tick: pytest.approx(statistics.fmean(all_obs), rel=1e-12)}
    assert by_time["memory"][tick] == BATCH["memory_mb"]
    assert by_time["cpu"][tick] == BATCH["cpu_percent"]
    assert by_time["websocket_total"] == {tick: 152}

    summary = get_json(fresh, "/metrics/summary")
    assert set(summary) == set(SEED_SUMMARY_EXAMPLE)
    assert set(summary["last_hour"]) == set(SEED_SUMMARY_EXAMPLE["last_hour"])
    assert_shape({k: v for k, v in SEED_SUMMARY_EXAMPLE.items() if k != "active_alerts"},
                 {k: v for k, v in summary.items() if k != "active_alerts"})
    assert summary["active_connections"] == 8
    assert summary["total_connections"] == 152
    assert summary["avg_latency_ms"] == pytest.approx(statistics.fmean(all_obs), rel=1e-12)
    assert summary["last_hour"]["memory_max"] == BATCH["memory_mb"]  # far above our own RSS
    assert summary["last_hour"]["cpu_max"] >= BATCH["cpu_percent"]
    assert isinstance(summary["uptime_seconds"], int)
    assert summary["active_alerts"] == get_json(fresh, "/metrics/alerts") == []

    for openmetrics in (False, True):
        fams = exposition(fresh, openmetrics=openmetrics)
        per_endpoint = histograms(fams)
        assert set(per_endpoint) == set(obs)
        for endpoint, values in obs.items():
            h = per_endpoint[endpoint]
            assert h["count"] == len(values)
            assert h["sum"] == pytest.approx(sum(values) / 1000.0, rel=1e-12)
            for le, count in h["buckets"]:
                assert count == sum(1 for v in values if v / 1000.0 <= le), (endpoint, le)
        assert sample_value(fams["crankshaft_websocket_active_connections"],
                            "crankshaft_websocket_active_connections") == 8
        assert sample_value(fams["crankshaft_websocket_connections"],
                            "crankshaft_websocket_connections_total") == 152
        assert sample_value(fams["crankshaft_request_latency_ms"],
                            "crankshaft_request_latency_ms") == summary["avg_latency_ms"]


def test_a_push_of_a_measured_series_is_refused_and_records_nothing(
        daemon: RunningDaemon) -> None:
    poll(lambda: daemon.request("/healthz").status, lambda s: s == 200, "the first tick")
    r = daemon.post_json("/metrics/record", BATCH)
    assert r.status == 409
    error = r.json()["error"]
    assert "memory_mb is measured by the running source 'process'" in error
    assert "cpu_percent is measured by the running source 'process'" in error
    assert "target self" in error and "active_connections" in error
    before = get_json(daemon, "/metrics")
    tick = before["memory"]["samples"][-1]["timestamp"]
    after = poll(lambda: get_json(daemon, "/metrics"),
                 lambda m: m["memory"]["samples"][-1]["timestamp"] != tick, "the next tick")
    assert BATCH["memory_mb"] not in [s["value"] for s in after["memory"]["samples"]]
    assert after["extensions"] == {} and after["websocket_active"]["sample_count"] == 0
    # What no source measures is taken from the same daemon.
    assert daemon.post_json("/metrics/record", UNMEASURED).status == 200


def test_repeated_batches_accumulate_counts(fresh: RunningDaemon) -> None:
    first = {"latency_ms": {"/api/a": [10.0, 20.0, 30.0]}}
    second = {"latency_ms": {"/api/a": [40.0], "/api/b": 5.0}}
    assert fresh.post_json("/metrics/record", first).status == 200
    assert fresh.post_json("/metrics/record", second).status == 200
    doc = get_json(fresh, "/metrics")
    assert doc["latency_breakdown"]["/api/a"] == {
        "p50": type7([10, 20, 30, 40], 0.5), "p95": type7([10, 20, 30, 40], 0.95),
        "p99": type7([10, 20, 30, 40], 0.99), "count": 4,
    }
    assert doc["latency_breakdown"]["/api/b"] == {"p50": 5.0, "p95": 5.0, "p99": 5.0,
                                                  "count": 1}
    hist = histograms(exposition(fresh))
    assert (hist["/api/a"]["count"], hist["/api/b"]["count"]) == (4, 1)


# --- alerts ------------------------------------------------------------------------------


def connection_alerts(d: RunningDaemon) -> list[dict[str, Any]]:
    return [a for a in get_json(d, "/metrics/alerts") if a["metric"] == "active_connections"]


def test_connection_alert_fires_and_resolves(seed_alert: RunningDaemon) -> None:
    fresh = seed_alert
    assert fresh.post_json("/metrics/record",
                           {"active_connections": 120, "total_connections": 500}).status == 200
    (alert,) = poll(lambda: connection_alerts(fresh), bool, "the active_connections alert")
    assert set(alert) == ALERT_KEYS
    assert alert == {
        "metric": "active_connections",
        "current_value": 120,
        "warning_threshold": 50,
        "critical_threshold": 100,
        "description": "Too many active connections",
        "level": "CRITICAL",
    }
    for key in ("current_value", "warning_threshold", "critical_threshold"):
        assert json_type(alert[key]) in ("number", "integer")
    summary = get_json(fresh, "/metrics/summary")
    assert [a for a in summary["active_alerts"] if a["metric"] == "active_connections"] == [alert]
    assert summary["active_alerts"] == get_json(fresh, "/metrics/alerts")
    assert summary["active_connections"] == 120 and summary["total_connections"] == 500
    fams = exposition(fresh, openmetrics=True)
    assert sample_value(fams["crankshaft_alert_active"], "crankshaft_alert_active",
                        metric="active_connections", level="critical") == 1

    assert fresh.post_json("/metrics/record",
                           {"active_connections": 10, "total_connections": 510}).status == 200
    poll(lambda: connection_alerts(fresh), lambda a: a == [], "the alert to resolve")
    summary = get_json(fresh, "/metrics/summary")
    assert not [a for a in summary["active_alerts"] if a["metric"] == "active_connections"]
    assert summary["active_connections"] == 10
    fams = exposition(fresh)
    assert sample_value(fams["crankshaft_alert_active"], "crankshaft_alert_active",
                        metric="active_connections", level="critical") == 0


def test_warning_level_between_thresholds(seed_alert: RunningDaemon) -> None:
    fresh = seed_alert
    assert fresh.post_json("/metrics/record", {"active_connections": 75}).status == 200
    (alert,) = poll(lambda: connection_alerts(fresh), bool, "the warning")
    assert (alert["level"], alert["current_value"]) == ("WARNING", 75)
    assert fresh.post_json("/metrics/record", {"active_connections": 101}).status == 200
    poll(lambda: connection_alerts(fresh), lambda a: a and a[0]["level"] == "CRITICAL",
         "the escalation")


# --- CSV ---------------------------------------------------------------------------------


def parse_csv(body: bytes) -> list[list[str]]:
    text = body.decode("utf-8")
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", ""), "a line ends without CR"
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def csv_of(d: RunningDaemon, query: str = "") -> list[list[str]]:
    r = d.request("/metrics/csv" + query)
    assert r.status == 200
    assert media_type(r.headers["content-type"]) == "text/csv"
    return parse_csv(r.body)


def test_csv_export(live: RunningDaemon) -> None:
    rows, doc = between_ticks(live, lambda: (csv_of(live), get_json(live, "/metrics")))
    assert rows[0] == CSV_HEADER
    body = rows[1:]
    times = [int(row[0]) for row in body]
    assert times == sorted(set(times)), "one row per timestamp, in time order"
    columns = {"memory_mb": "memory", "cpu_percent": "cpu",
               "active_connections": "websocket_active",
               "total_connections": "websocket_total", "request_latency_ms": "latency"}
    expected_times = {s["timestamp"] for key in SEED_SERIES for s in doc[key]["samples"]}
    assert set(times) == expected_times
    for row in body:
        assert len(row) == len(CSV_HEADER)
        at = int(row[0])
        for col, key in columns.items():
            cell = row[CSV_HEADER.index(col)]
            samples = {s["timestamp"]: s["value"] for s in doc[key]["samples"]}
            if at in samples:
                assert float(cell) == samples[at], (col, at)
                if SEED_SERIES[key][1] == "count":
                    assert cell.isdigit(), (col, cell)
            else:
                assert cell == "", (col, at)
    pushed = [row for row in body if row[CSV_HEADER.index("active_connections")]]
    assert len(pushed) == 1 and pushed[0][CSV_HEADER.index("active_connections")] == "8"


@pytest.mark.parametrize("n", [0, 1, 3])
def test_csv_last_n(live: RunningDaemon, n: int) -> None:
    rows, doc = between_ticks(
        live, lambda: (csv_of(live, f"?last_n={n}"), get_json(live, f"/metrics?last_n={n}"))
    )
    assert rows[0] == CSV_HEADER
    times = [int(row[0]) for row in rows[1:]]
    assert set(times) == {s["timestamp"] for key in SEED_SERIES for s in doc[key]["samples"]}
    assert len(times) == len(set(times))
    if n:
        newest = [s["timestamp"] for s in doc["memory"]["samples"]]
        assert len(newest) == n and set(newest) <= set(times)
    else:
        assert times == []
    everything = between_ticks(live, lambda: (csv_of(live), csv_of(live, "?last_n=-1")))
    assert everything[0] == everything[1]


# --- health and description --------------------------------------------------------------


def test_healthz(live: RunningDaemon) -> None:
    doc = get_json(live, "/healthz")
    assert doc["status"] == "ok"
    assert doc["is_collecting"] is True
    assert doc["collection_interval_ms"] == 250
    assert isinstance(doc["seconds_since_last_collection"], float)
    assert doc["target_up"] is True


def test_healthz_is_ok_once_collecting(daemon: RunningDaemon) -> None:
    r = poll(lambda: daemon.request("/healthz"), lambda r: r.status == 200, "healthy")
    assert r.json()["status"] == "ok"


def test_openapi_describes_every_route(live: RunningDaemon) -> None:
    r = live.request("/openapi.yaml")
    assert r.status == 200
    assert "yaml" in media_type(r.headers["content-type"])
    spec = yaml.safe_load(r.body)
    assert str(spec["openapi"]).startswith("3.")
    # The packaged description with the daemon's declared series filled in.
    enabled = [t.name for t in registry.source_types() if t.default_enabled]
    assert spec == openapi_document(registry.catalog(enabled), registry.all_series())
    packaged_file = Path(exporter.__file__).parent / "http" / "openapi.yaml"
    packaged = yaml.safe_load(packaged_file.read_bytes())
    assert spec["paths"].keys() == packaged["paths"].keys()
    series = spec["components"]["schemas"]["MetricsDocument"]["properties"]
    assert DEFAULT_SOURCE_JSON_KEYS | set(SEED_SERIES) <= set(series)
    assert "threads" in spec["paths"]["/metrics/csv"]["get"]["responses"]["200"]["description"]
    routes = App(MetricsEndpoint(sources=[])).routes
    assert set(spec["paths"]) == set(routes)
    for path, methods in routes.items():
        described = {m.upper() for m in spec["paths"][path]
                     if m in ("get", "put", "post", "delete", "patch", "head", "options")}
        assert described == set(methods), path
        for method in described:
            assert "200" in spec["paths"][path][method.lower()]["responses"], (path, method)

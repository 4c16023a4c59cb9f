"""A real Prometheus (Debian's package) scraping the daemon, and promtool linting what it serves.

The scrape config names no ``metrics_path``: Prometheus' default ``/metrics`` must work (the
daemon answers Prometheus' Accept header there with the exposition and everyone else with the
seed's JSON).  Through PromQL the seed's four gauges carry the values the daemon's JSON shows,
and the latency histogram gives per-endpoint quantiles.

``promtool check metrics`` reads text format 0.0.4 only, so the exposition is fetched without
an OpenMetrics Accept header.  Its sole allowed findings are the abbreviated-unit lints on the
seed's own names (``crankshaft_memory_usage_mb``, ``crankshaft_request_latency_ms``), which
the seed fixes and the exporter keeps.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningDaemon, require_tool
from tests.helpers import wait_for
from tests.prometheus_server import PrometheusServer

pytestmark = pytest.mark.real

JOB = "crankshaft"
SEED_GAUGES = {  # Prometheus name -> the series' key in the JSON document of GET /metrics
    "crankshaft_memory_usage_mb": "memory",
    "crankshaft_cpu_usage_percent": "cpu",
    "crankshaft_websocket_active_connections": "websocket_active",
    "crankshaft_request_latency_ms": "latency",
}
# Every observation of an endpoint falls into one histogram bucket (bounds in seconds), so
# Prometheus' estimate must lie inside it.
ENDPOINTS = {
    "/api/settings/get": ([21.0, 24.5, 30.0, 33.3, 41.0, 48.5], (0.025, 0.05)),
    "/api/play": ([260.0, 301.5, 333.0, 377.7, 420.0, 480.0], (0.25, 0.5)),
}
ROUNDS = [  # (active connections, total connections) pushed with each round of observations
    (5, 40),
    (7, 42),
]
UNIT_LINT = "metric names should not contain abbreviated units"
ALLOWED_FINDINGS = {
    f"crankshaft_memory_usage_mb {UNIT_LINT}",
    f"crankshaft_request_latency_ms {UNIT_LINT}",
}


def value(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def push(daemon: RunningDaemon, batch: dict[str, Any]) -> None:
    response = daemon.post_json("/metrics/record", batch)
    assert response.status == 200, response.text


def test_prometheus_scrapes_default_metrics_path(daemon_factory, tmp_path: Path) -> None:
    require_tool("prometheus")
    daemon = daemon_factory("--interval", "1")
    instance = f"127.0.0.1:{daemon.port}"
    sel = f'job="{JOB}",instance="{instance}"'
    scrape = [{"job_name": JOB, "static_configs": [{"targets": [instance]}]}]
    with PrometheusServer(tmp_path, scrape) as prom:
        assert value(prom.wait_for_query(f"up{{{sel}}} == 1")) == 1.0
        # Two rounds, each waited for in Prometheus (a collection tick applied the pushed
        # gauges and a scrape saw them), so rate() has increases between scrapes.
        for active, total in ROUNDS:
            push(daemon, {
                "active_connections": active,
                "total_connections": total,
                "latency_ms": {ep: obs for ep, (obs, _) in ENDPOINTS.items()},
            })
            prom.wait_for_query(f"crankshaft_websocket_active_connections{{{sel}}} == {active}")
            prom.wait_for_query(f"crankshaft_websocket_connections_total{{{sel}}} == {total}")

        scraped = {name: value(prom.wait_for_query(f"{name}{{{sel}}}")) for name in SEED_GAUGES}
        doc = daemon.request("/metrics").json()
        assert isinstance(doc, dict)
        # Pushed series hold still: exactly the JSON's latest.  The latest latency is the
        # mean of the last round's observations (the interval average the seed describes).
        assert scraped["crankshaft_websocket_active_connections"] == ROUNDS[-1][0]
        assert doc["websocket_active"]["latest"] == ROUNDS[-1][0]
        last_round = [ms for obs, _ in ENDPOINTS.values() for ms in obs]
        assert scraped["crankshaft_request_latency_ms"] == pytest.approx(
            sum(last_round) / len(last_round))
        assert scraped["crankshaft_request_latency_ms"] == doc["latency"]["latest"]
        # Memory and CPU are sampled every second: what Prometheus scraped is one of the
        # samples the JSON history holds (the JSON's latest may be a newer one).
        for name in ("crankshaft_memory_usage_mb", "crankshaft_cpu_usage_percent"):
            history = [s["value"] for s in doc[SEED_GAUGES[name]]["samples"]]
            assert scraped[name] in history, (name, scraped[name], history[-5:])
        assert scraped["crankshaft_memory_usage_mb"] > 0
        assert scraped["crankshaft_cpu_usage_percent"] >= 0

        # Seed names and HELP texts survive the OpenMetrics scrape (metadata API).
        meta = prom.api("metadata")
        assert meta["crankshaft_memory_usage_mb"][0]["help"] == "Process memory usage in megabytes"

        quantiles = prom.wait_for_query(
            f"histogram_quantile(0.95, sum by (le, endpoint) "
            f"(rate(crankshaft_request_duration_seconds_bucket{{{sel}}}[1m])))"
        )
        by_endpoint = {q["metric"]["endpoint"]: float(q["value"][1]) for q in quantiles}
        assert set(by_endpoint) == set(ENDPOINTS)
        for endpoint, (_, (lo, hi)) in ENDPOINTS.items():
            p95 = by_endpoint[endpoint]
            assert math.isfinite(p95) and lo < p95 <= hi, (endpoint, p95)


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/metrics", "text/plain;version=0.0.4"),  # what a 0.0.4-only scraper asks for
        ("/metrics/prometheus", None),  # no Accept header at all
    ],
)
def test_promtool_check_metrics_finds_only_the_seed_unit_names(
    daemon_factory, path: str, accept: str | None
) -> None:
    promtool = require_tool("promtool")
    # No target: memory and CPU are pushed here (a daemon measuring them refuses that, 409).
    daemon = daemon_factory("--interval", "1", "--target", "none")
    # Every family with samples: gauges, counter, histogram, extension states, alerts.
    push(daemon, {
        "memory_mb": 256.5, "cpu_percent": 45.3, "active_connections": 12,
        "total_connections": 150, "extensions": {"media-player": "running", "obd": "crashed"},
        "latency_ms": {"/api/play": [85.2, 91.0], "/api/settings/get": 15.2},
    })
    wait_for_tick(daemon)
    response = daemon.request(path, headers={"Accept": accept} if accept else {})
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    body = response.text
    for family in ("crankshaft_memory_usage_mb ", "crankshaft_websocket_connections_total ",
                   'crankshaft_request_duration_seconds_bucket{endpoint="/api/play",le="+Inf"}',
                   "crankshaft_extension_status{", "crankshaft_alert_active{",
                   "crankshaft_exporter_build_info{", "process_cpu_seconds_total "):
        assert family in body, f"{family!r} missing from the exposition"

    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                       text=True, timeout=60)
    findings = {line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip()}
    assert r.returncode in (0, 3), (r.returncode, findings)
    unexpected = findings - ALLOWED_FINDINGS
    assert not unexpected, f"promtool reports more than the seed's unit names: {unexpected}"
    if r.returncode == 3:
        assert findings, "promtool exit 3 (lint findings) without any finding printed"


def wait_for_tick(daemon: RunningDaemon, timeout: float = 30) -> None:
    """Until a collection tick has applied the pushed gauges (an event, not a sleep)."""
    wait_for(
        lambda: b"\ncrankshaft_websocket_active_connections 12.0\n" in
        daemon.request("/metrics/prometheus").body,
        "a collection tick", timeout, interval=0.2,
    )

"""Backfill with the real tools: ``GET /metrics/history`` through ``promtool tsdb
create-blocks-from openmetrics``, then a real Prometheus started on those blocks answers
``count_over_time`` over the stored range with the exporter's own sample count, per series,
under the labels a scrape would give (the README recipe).

The daemon fills its history at 50 ms, then a reload sets a 1 h interval, so the history
holds still while it is fetched, counted in JSON and backfilled.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import require_tool, start_daemon
from tests.helpers import wait_for
from tests.prometheus_server import PrometheusServer

pytestmark = pytest.mark.real

LABELS = {"job": "crankshaft", "instance": "car-1:9001"}
JSON_KEYS = {  # a few families -> their series in the seed's JSON document
    "crankshaft_memory_usage_mb": "memory",
    "crankshaft_cpu_usage_percent": "cpu",
    "crankshaft_websocket_active_connections": "websocket_active",
    "crankshaft_websocket_connections_total": "websocket_total",
}


def held(d) -> dict:  # type: ignore[no-untyped-def]
    """The JSON document without its clock fields: what the history holds."""
    doc = d.request("/metrics").json()
    return {k: v for k, v in doc.items() if k not in ("timestamp", "uptime_ms")}


def test_promtool_blocks_give_prometheus_the_exporters_sample_count(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    require_tool("prometheus")
    config = tmp_path / "exporter.yaml"
    config.write_text(yaml.safe_dump({"interval": "50ms", "history": {"max_samples": 300}}))
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        ingest = d.post_json("/metrics/record", {"active_connections": 3,
                                                 "total_connections": 9})
        assert ingest.status == 200, ingest.text
        wait_for(lambda: d.request("/metrics").json()["memory"]["sample_count"] >= 120,
                 "120 memory samples")
        config.write_text(yaml.safe_dump({"interval": "1h", "history": {"max_samples": 300}}))
        os.kill(d.pid, signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in d.log(), "the reload to a 1 h interval")
        doc = held(d)
        query = "&".join(f"label={k}={v}" for k, v in LABELS.items()).replace(":", "%3A")
        history = d.request(f"/metrics/history?{query}")
        assert history.status == 200, history.text
        assert held(d) == doc, "the history moved while it was fetched"
    finally:
        assert d.stop() == 0

    # What the exporter holds, per series, from its own text and its JSON.
    counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    stamps = []
    for family in text_string_to_metric_families(history.text):
        for s in family.samples:
            counts[(s.name, tuple(sorted(s.labels.items())))] += 1
            stamps.append(float(s.timestamp))
    for name, key in JSON_KEYS.items():
        assert counts[(name, tuple(sorted(LABELS.items())))] == doc[key]["sample_count"] > 0
    assert doc["memory"]["sample_count"] >= 120

    source = tmp_path / "history.om"
    source.write_bytes(history.body)
    prom = PrometheusServer(tmp_path, scrape_configs=[])
    r = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(source),
                        str(prom.dir / "data")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with prom:
        at = max(stamps)
        window = int(at - min(stamps)) + 60
        answered = {}
        for name, labels in counts:
            selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
            result = prom.api("query", query=f"count_over_time({selector}[{window}s])",
                              time=f"{at:.3f}")["result"]
            assert len(result) == 1, (selector, result)
            answered[(name, labels)] = int(result[0]["value"][1])
    assert answered == dict(counts)
    print(f"backfilled {len(counts)} series, {sum(counts.values())} samples")

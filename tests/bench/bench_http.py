"""HTTP costs: exposition and JSON server time, scrape throughput beside node_exporter, ingest.

Anchors, measured in the same run:
- exposition: prometheus_client's generate_latest over an equivalent registry (100 endpoint
  histograms with the same buckets and observations);
- JSON: the stdlib encoder over the same /metrics document;
- scrape throughput: Debian's prometheus-node-exporter, loaded by the same wrk command;
- ingest: calling record_request_latency in-process (no HTTP at all).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, Request
from tests.bench.harness import median_seconds_per_call, table
from tests.prometheus_server import free_port

REPO = Path(__file__).resolve().parents[2]
N_ENDPOINTS = 100


def _populated_endpoint() -> MetricsEndpoint:
    ep = MetricsEndpoint(sources=[])
    ep.start_collection(3_600_000)  # the daemon's mode; only the immediate first tick runs
    for i in range(N_ENDPOINTS):
        for j in range(200):
            ep.record_request_latency(f"/api/endpoint/{i}", float((j * 37) % 1200))
    return ep


def _get(app: App, path: str, accept: str = "*/*") -> bytes:
    path, _, query = path.partition("?")
    request = Request("GET", path, query, {"accept": accept}, "127.0.0.1")
    return app.handle(request).body


def bench_exposition() -> str:
    from prometheus_client import generate_latest

    from exporter.exposition.collector import build_registry

    ep = _populated_endpoint()
    app = App(ep)
    static = median_seconds_per_call(lambda: _get(app, "/metrics/prometheus"), 200)
    state = {"i": 0}

    def records_only() -> None:  # every endpoint sees traffic
        for i in range(N_ENDPOINTS):
            state["i"] += 1
            ep.record_request_latency(f"/api/endpoint/{i}", float(state["i"] % 1000))

    def changed() -> bytes:
        records_only()
        return _get(app, "/metrics/prometheus")

    churn = median_seconds_per_call(changed, 100) - median_seconds_per_call(records_only, 100)
    # The reference: prometheus_client's own encoder over the daemon's registry (the custom
    # collector and process_*), which the served bytes are tested equal to.
    registry = build_registry(ep)
    anchor = median_seconds_per_call(lambda: generate_latest(registry), 30)
    ep.close()
    return table(
        f"Server time of GET /metrics/prometheus, {N_ENDPOINTS} endpoint histograms",
        ["what", "median ms", "ratio to anchor", "goal"],
        [
            ["no endpoint changed since last scrape", f"{static * 1e3:.2f}",
             f"{static / anchor:.3f}", "≤ 2 ms"],
            ["every endpoint changed since last scrape", f"{churn * 1e3:.2f}",
             f"{churn / anchor:.3f}", "≤ 2 ms"],
            ["anchor: prometheus_client generate_latest, same registry", f"{anchor * 1e3:.2f}",
             "1.00", ""],
        ],
    )


def bench_json() -> str:
    clock = [1.7e9]
    ep = MetricsEndpoint(sources=[], clock=lambda: clock[0])
    for i in range(1440):
        clock[0] += 60
        ep.record_memory_usage(200 + (i % 50) / 3)
        ep.record_cpu_usage((i * 7) % 100 / 1.3)
        ep.record_websocket_connections(i % 40, i)
        ep.record_request_latency("/api/play", float(i % 300))
    app = App(ep)
    ours = median_seconds_per_call(lambda: _get(app, "/metrics?last_n=1440"), 100)

    def ticks_only() -> None:  # one new sample in every series
        clock[0] += 60
        ep.record_memory_usage(201.0)
        ep.record_cpu_usage(12.0)
        ep.record_websocket_connections(3, 5000)
        ep.record_request_latency("/api/play", 42.0)

    def one_new_tick() -> bytes:
        ticks_only()
        return _get(app, "/metrics?last_n=1440")

    after_tick = median_seconds_per_call(one_new_tick, 100) - median_seconds_per_call(
        ticks_only, 100
    )
    anchor = median_seconds_per_call(lambda: json.dumps(ep.get_metrics(1440)).encode(), 20)
    return table(
        "Server time of GET /metrics?last_n=1440 (5 series x 1440 samples)",
        ["what", "median ms", "ratio to anchor", "goal"],
        [
            ["repeated request", f"{ours * 1e3:.2f}", f"{ours / anchor:.3f}", "≤ 3 ms"],
            ["first request after a new tick", f"{after_tick * 1e3:.2f}",
             f"{after_tick / anchor:.3f}", "≤ 3 ms"],
            ["anchor: stdlib json.dumps of the document", f"{anchor * 1e3:.2f}", "1.00", ""],
        ],
    )


def _wrk(url: str, seconds: int = 8) -> tuple[float, float]:
    """(requests/s, p99 ms) of ``wrk -t2 -c16``."""
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out).groups()
    p99 = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    return rps, p99


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/metrics")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _stop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def exporter_daemon(port: int) -> Iterator[subprocess.Popen]:
    """The real daemon on 127.0.0.1:``port``, quiet, collecting every second."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "exporter.yaml"
        cfg.write_text("interval: 1s\nlogging: {level: WARNING}\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(cfg),
             "--listen", f"127.0.0.1:{port}"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc)
            yield proc
        finally:
            _stop(proc)


def bench_scrape(repeats: int = 3) -> str:
    node = shutil.which("prometheus-node-exporter")
    if shutil.which("wrk") is None or node is None:
        return "### Scrape throughput\n\n(wrk or prometheus-node-exporter missing: `make tools`)\n"
    ours_port, node_port = free_port(), free_port()
    with exporter_daemon(ours_port):
        theirs = subprocess.Popen(
            [node, f"--web.listen-address=127.0.0.1:{node_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(node_port, theirs)
            batch = {"latency_ms": {f"/api/endpoint/{i}": [float(j) for j in range(0, 1000, 50)]
                                    for i in range(N_ENDPOINTS)}}
            conn = http.client.HTTPConnection("127.0.0.1", ours_port)
            conn.request("POST", "/metrics/record", json.dumps(batch),
                         {"Content-Type": "application/json"})
            conn.getresponse().read()
            rows, ratios = [], []
            results: dict[str, list[tuple[float, float]]] = {"ours": [], "node": []}
            for _ in range(repeats):
                results["ours"].append(_wrk(f"http://127.0.0.1:{ours_port}/metrics/prometheus"))
                results["node"].append(_wrk(f"http://127.0.0.1:{node_port}/metrics"))
            for a, b in zip(results["ours"], results["node"], strict=True):
                ratios.append(a[0] / b[0])
            for name, label in (("ours", f"crankshaft-exporter /metrics/prometheus "
                                          f"({N_ENDPOINTS} endpoint histograms)"),
                                ("node", "anchor: prometheus-node-exporter /metrics")):
                rps = statistics.median(r[0] for r in results[name])
                p99 = statistics.median(r[1] for r in results[name])
                rows.append([label, f"{rps:,.0f}", f"{p99:.1f}",
                             f"{statistics.median(ratios):.1f}" if name == "ours" else "1.0"])
        finally:
            _stop(theirs)
    return table(
        f"Scrape throughput, `wrk -t2 -c16 -d8s`, median of {repeats} runs "
        "(goal: ≥ 10x node_exporter's requests/s, p99 ≤ 30 ms)",
        ["server", "requests/s", "p99 ms", "ratio (req/s) to anchor"],
        rows,
    )


def bench_ingest(batches: int = 200, size: int = 1000) -> str:
    port = free_port()
    with exporter_daemon(port):
        body = json.dumps({"latency_ms": {
            f"/api/endpoint/{i % 20}": [float((i * 7 + j) % 900) for j in range(size // 20)]
            for i in range(20)
        }}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(batches // 5):
                conn.request("POST", "/metrics/record", body,
                             {"Content-Type": "application/json"})
                assert conn.getresponse().read()
            runs.append((batches // 5) * size / (time.perf_counter() - t0))
    ours = statistics.median(runs)
    ep = MetricsEndpoint(sources=[])
    ep.start_collection(3_600_000)
    t = median_seconds_per_call(lambda: ep.record_request_latency("/api/x", 12.5), 100_000)
    ep.close()
    anchor = 1 / t
    return table(
        f"Batched ingest over HTTP, {size} latency observations per POST, keep-alive",
        ["what", "median observations/s", "ratio to anchor", "goal"],
        [["POST /metrics/record", f"{ours:,.0f}", f"{ours / anchor:.2f}", "≥ 100,000/s"],
         ["anchor: record_request_latency in-process", f"{anchor:,.0f}", "1.00", ""]],
    )


def main() -> None:
    logging.disable(logging.CRITICAL)
    for bench in (bench_exposition, bench_json, bench_ingest, bench_scrape):
        print(bench())


if __name__ == "__main__":
    main()

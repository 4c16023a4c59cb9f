"""What the running daemon costs, read from outside through /proc/PID/stat and status.

Microbenchmarks time one call on a warm path; a daemon also pays for its thread waking up,
the GIL changing hands, the HTTP parsing and the kernel's work for its reads.  These figures
are CPU seconds (utime + stime) of the real daemon process over many ticks or scrapes:

- per collection tick: a daemon ticking every 50 ms minus the same daemon idle (interval
  24 h) over the same wall time, divided by the ticks run; anchor: the same measurement
  of a daemon with no source and no rule (the floor: a thread waking on cold caches), with
  the warm microbenchmarked ``collect_now()`` beside it for comparison;
- per scrape of ``/metrics`` (with Prometheus' Accept header) with 10 and 100 endpoint
  histograms, one keep-alive connection; anchor: node_exporter's CPU per scrape, measured
  the same way;
- RSS with the default configuration once every series holds its full 1440 samples; anchor:
  an interpreter that imported the same modules and holds nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.bench.bench_http import REPO, _stop, _wait_port
from tests.bench.harness import median_seconds_per_call, table
from tests.prometheus_server import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024.0


@contextmanager
def daemon(config: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """The real daemon with this YAML (plus a quiet log) on a free loopback port."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "exporter.yaml"
        cfg.write_text(config + "\nlogging: {level: WARNING}\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(cfg),
             "--listen", f"127.0.0.1:{port}"], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc)
            yield proc, port
        finally:
            _stop(proc)


def _get(conn: http.client.HTTPConnection, path: str, accept: str = "*/*") -> bytes:
    conn.request("GET", path, headers={"Accept": accept})
    return conn.getresponse().read()


def _collections(port: int) -> float:
    """A fresh connection each time: the daemon closes keep-alive connections left idle."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    text = _get(conn, "/metrics/prometheus").decode()
    conn.close()
    line = next(x for x in text.splitlines() if x.startswith("crankshaft_collections_total "))
    return float(line.split()[1])


# The floor of a tick: the collector thread waking, one tick with nothing to read or
# evaluate, and going back to sleep.  On a shared VM every wake-up finds the CPU caches
# cold, which costs far more than the warm microbenchmark suggests.
EMPTY = ("target: {kind: none}\nprocess_detail: {enabled: false}\n"
         "board_health: {enabled: false}\nalerts: []\n")


def per_tick_cpu(config: str = "", seconds: float = 15.0) -> float:
    """CPU seconds per tick of this configuration, idle cost subtracted."""
    busy_config, idle_config = config + "interval: 50ms\n", config + "interval: 24h\n"
    with daemon(busy_config) as (busy, busy_port), daemon(idle_config) as (idle, _):
        time.sleep(1.0)  # past the start-up
        ticks0, busy0, idle0 = (_collections(busy_port), cpu_seconds(busy.pid),
                                cpu_seconds(idle.pid))
        time.sleep(seconds)
        busy1, idle1 = cpu_seconds(busy.pid), cpu_seconds(idle.pid)
        ticks = _collections(busy_port) - ticks0 - 1  # the last scrape is not a tick
        return max(0.0, (busy1 - busy0) - (idle1 - idle0)) / ticks


def microbench_tick() -> float:
    import logging

    from exporter.config import Config
    from exporter.daemon import build_sources
    from exporter.endpoint import MetricsEndpoint

    logging.disable(logging.CRITICAL)
    ep = MetricsEndpoint(sources=build_sources(Config()))
    t = median_seconds_per_call(ep.collect_now, number=500, repeat=7)
    ep.close()
    return t


def _push_endpoints(port: int, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    batch = {"latency_ms": {f"/api/endpoint/{i}": [float(j) for j in range(0, 1000, 50)]
                            for i in range(n)}}
    conn.request("POST", "/metrics/record", json.dumps(batch),
                 {"Content-Type": "application/json"})
    assert conn.getresponse().status == 200


def scrape_cpu(pid: int, port: int, path: str, scrapes: int = 400) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    _get(conn, path, PROMETHEUS_ACCEPT)
    before = cpu_seconds(pid)
    for _ in range(scrapes):
        _get(conn, path, PROMETHEUS_ACCEPT)
    return (cpu_seconds(pid) - before) / scrapes


def per_scrape_cpu(endpoints: int) -> float:
    with daemon("interval: 24h") as (proc, port):
        _push_endpoints(port, endpoints)
        return scrape_cpu(proc.pid, port, "/metrics")


@contextmanager
def node_exporter() -> Iterator[tuple[subprocess.Popen, int] | None]:
    """Debian's node_exporter on a free loopback port (None where it is not installed)."""
    node = shutil.which("prometheus-node-exporter")
    if node is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen([node, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield proc, port
    finally:
        _stop(proc)


def node_exporter_scrape_cpu() -> float | None:
    with node_exporter() as node:
        return None if node is None else scrape_cpu(node[0].pid, node[1], "/metrics",
                                                    scrapes=100)


def full_history_rss() -> float:
    with daemon("interval: 10ms") as (proc, port):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        deadline = time.monotonic() + 120
        while _collections(port) < 1440 + 100 and time.monotonic() < deadline:
            time.sleep(0.5)
        _get(conn, "/metrics")  # the JSON sample cache exists once a client asked
        _get(conn, "/metrics/prometheus")
        return rss_mib(proc.pid)


def baseline_rss() -> float:
    code = "import exporter.daemon, sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); input()"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        return rss_mib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main(repeats: int = 3) -> None:
    tick = statistics.median(per_tick_cpu() for _ in range(repeats))
    empty = statistics.median(per_tick_cpu(EMPTY) for _ in range(repeats))
    micro = microbench_tick()
    scrapes = {n: statistics.median(per_scrape_cpu(n) for _ in range(repeats)) for n in (10, 100)}
    node = node_exporter_scrape_cpu()
    rss, base = full_history_rss(), baseline_rss()
    at_1s = (tick + scrapes[10]) / 1.0 * 100
    rows = [
        ["CPU per collection tick, default sources", f"{tick * 1e3:.3f} ms",
         f"{tick / empty:.2f}", "≤ 0.15 ms"],
        ["anchor: CPU per tick of the same daemon with no source and no rule",
         f"{empty * 1e3:.3f} ms", "1.00", ""],
        ["collect_now() microbenchmark, default sources, warm (for comparison)",
         f"{micro * 1e3:.3f} ms", f"{micro / empty:.2f}", ""],
        ["CPU per scrape of /metrics, 10 endpoints", f"{scrapes[10] * 1e3:.3f} ms",
         f"{scrapes[10] / node:.3f}" if node else "", "≤ 1 ms"],
        ["CPU per scrape of /metrics, 100 endpoints", f"{scrapes[100] * 1e3:.3f} ms",
         f"{scrapes[100] / node:.3f}" if node else "", ""],
        ["anchor: node_exporter CPU per scrape", f"{node * 1e3:.3f} ms" if node else "missing",
         "1.00", ""],
        ["share of one core at 1 s interval + 1 s scrapes (10 endpoints)", f"{at_1s:.3f} %",
         "", "≤ 0.1 %"],
        ["RSS, default config, 1440 samples in every series", f"{rss:.1f} MiB",
         f"{rss / base:.2f}", "≤ 30 MiB"],
        ["anchor: the interpreter with the exporter imported, nothing held", f"{base:.1f} MiB",
         "1.00", ""],
    ]
    print(table(f"The running daemon, from /proc/PID (median of {repeats} runs)",
                ["what", "median", "ratio to anchor", "goal"], rows))


if __name__ == "__main__":
    main()

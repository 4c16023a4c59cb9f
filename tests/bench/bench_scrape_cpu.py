"""CPU a scrape costs the running daemon when scrapes come as Prometheus sends them: one a
second on a kept-alive connection, with Prometheus' Accept header, 10 endpoint histograms,
the default configuration (a collection a minute).

Back-to-back requests (bench_daemon.py) find every cache warm; one request a second finds
the CPU caches cold and pays for the threads waking up, which is what a scrape really
costs.  CPU is read from /proc/PID/task/*/schedstat (nanoseconds, every thread) over
windows of scrapes, minus the same daemon's CPU over an idle window of the same length in
the same round (its collector and its one-second web-config watch run in both).  Beside it:
the same with gzip as Prometheus asks for it, the same server's ``/healthz`` (what any
request costs it), and node_exporter's landing page and ``/metrics`` paced the same way
(the anchor, a Go net/http server).
"""

from __future__ import annotations

import glob
import http.client
import statistics
import time
from collections.abc import Callable

from tests.bench.bench_daemon import PROMETHEUS_ACCEPT, _push_endpoints, daemon, node_exporter
from tests.bench.harness import table

PER_WINDOW = 20  # requests, one a second
# What Prometheus sends besides its Accept header: it asks for gzip.
PROMETHEUS_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
ROUNDS = 3


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid``, in nanoseconds."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def _window(pid: int, request: Callable[[], None] | None) -> tuple[int, float]:
    """CPU ns of ``pid`` and wall seconds over PER_WINDOW seconds, requesting once a
    second (or not at all)."""
    start_cpu, start = cpu_ns(pid), time.monotonic()
    for i in range(PER_WINDOW):
        time.sleep(max(0.0, start + i + 1 - time.monotonic()))
        if request is not None:
            request()
    return cpu_ns(pid) - start_cpu, time.monotonic() - start


def paced_cpu(pid: int, port: int,
              paths: dict[str, tuple[str, dict[str, str]]]) -> dict[str, float]:
    """Median over ROUNDS of the CPU seconds per request of each ``paths`` entry (name ->
    (path, headers)), each round's idle window subtracted."""
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def requester(path: str, headers: dict[str, str]) -> Callable[[], None]:
        def request() -> None:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, (path, response.status)
        return request

    requests = {name: requester(*target) for name, target in paths.items()}
    for request in requests.values():
        request()  # the first of each: imports and caches made once
    per: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        idle_ns, idle_s = _window(pid, None)
        for name, request in requests.items():
            busy_ns, busy_s = _window(pid, request)
            per[name].append(max(0.0, busy_ns - idle_ns * busy_s / idle_s) / PER_WINDOW / 1e9)
    conn.close()
    return {name: statistics.median(values) for name, values in per.items()}


def _wait_healthy(port: int) -> None:
    """Until the first collection has finished (/healthz says 503 before)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
        conn.close()
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError("the daemon did not become healthy")


def exporter_costs() -> dict[str, float]:
    with daemon("") as (proc, port):
        _push_endpoints(port, 10)
        _wait_healthy(port)
        return paced_cpu(proc.pid, port, {
            "metrics": ("/metrics", {"Accept": PROMETHEUS_ACCEPT}),
            "metrics gzip": ("/metrics", PROMETHEUS_HEADERS),
            "healthz": ("/healthz", {"Accept": "*/*"}),
        })


def node_exporter_costs() -> dict[str, float] | None:
    with node_exporter() as node:
        if node is None:
            return None
        return paced_cpu(node[0].pid, node[1], {
            "landing": ("/", {"Accept": "*/*"}),
            "metrics": ("/metrics", PROMETHEUS_HEADERS),
        })


def main() -> None:
    ours = exporter_costs()
    node = node_exporter_costs()
    anchor = node["landing"] if node else None

    def row(what: str, seconds: float | None, goal: str = "") -> list[object]:
        if seconds is None:
            return [what, "missing", "", goal]
        ratio = f"{seconds / anchor:.2f}" if anchor else ""
        return [what, f"{seconds * 1e3:.3f} ms", ratio, goal]

    rows = [
        row("crankshaft-exporter: GET /metrics, Prometheus' Accept header, 10 endpoints",
            ours["metrics"], "≤ 1.0 ms"),
        row("crankshaft-exporter: the same with Accept-Encoding: gzip, as Prometheus sends",
            ours["metrics gzip"]),
        row("crankshaft-exporter: GET /healthz", ours["healthz"]),
        row("node_exporter: GET /metrics, gzip (its own ~1,000 series)",
            node["metrics"] if node else None),
        row("anchor: node_exporter: GET / (its landing page)", anchor),
    ]
    print(table(f"CPU per request in the running server, one request a second on a kept-alive "
                f"connection (median of {ROUNDS} rounds of {PER_WINDOW}, idle CPU subtracted)",
                ["what", "CPU per request", "ratio to anchor", "goal"], rows))


if __name__ == "__main__":
    main()

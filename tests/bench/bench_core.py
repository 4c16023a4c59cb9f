"""Core costs: one collection cycle, latency recording throughput, bytes per stored sample.

Anchors, timed in the same run:
- collection: the seed's own method done naively in Python (open and read /proc/self/status
  for VmRSS and /proc/self/stat for the CPU ticks, every tick);
- latency: prometheus_client's Histogram.observe, the usual way a Python service records it;
- storage: a deque of (timestamp, value) tuples, the usual way Python keeps a history.
"""

from __future__ import annotations

import logging
import sys
from array import array
from collections import deque

from exporter.endpoint import MetricsEndpoint
from exporter.ringbuffer import RingBuffer
from exporter.sources.process import ProcessSource
from exporter.sources.targets import SelfFinder
from tests.bench.harness import median_seconds_per_call, table, us


def seed_style_sample() -> tuple[float, int]:
    with open("/proc/self/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss_kb / 1024.0, int(fields[11]) + int(fields[12])


def bench_collection() -> str:
    endpoint = MetricsEndpoint(sources=[ProcessSource(SelfFinder())])
    endpoint.collect_now()
    ours = median_seconds_per_call(endpoint.collect_now, number=2000, repeat=9)
    anchor = median_seconds_per_call(seed_style_sample, number=2000, repeat=9)
    endpoint.close()
    return table(
        "One collection cycle (sample memory+CPU of a process, insert, evaluate alerts)",
        ["what", "median µs", "ratio to anchor", "goal"],
        [["collect_now(), self target, 6 rules", us(ours), f"{ours / anchor:.2f}", "≤ 100 µs"],
         ["anchor: read /proc/self/status + /proc/self/stat", us(anchor), "1.00", ""]],
    )


def bench_readers() -> str:
    """The Linux fast paths beside psutil (each proven equal to it by a test)."""
    import os

    from exporter.sources.process import ProcStatReader, PsutilReader
    from exporter.sources.process_detail import ProcDetailReader, PsutilDetailReader

    pid = os.getpid()
    rows = []
    for what, fast, portable in (
        ("memory + CPU of one process", ProcStatReader(), PsutilReader()),
        ("process detail of one process", ProcDetailReader(), PsutilDetailReader()),
    ):
        t_fast = median_seconds_per_call(lambda r=fast: r.read(pid), number=3000, repeat=9)
        t_lib = median_seconds_per_call(lambda r=portable: r.read(pid), number=3000, repeat=9)
        rows.append([f"{what}: /proc fast path", us(t_fast), f"{t_fast / t_lib:.2f}"])
        rows.append([f"anchor: {what} through psutil", us(t_lib), "1.00"])
        fast.close()
        portable.close()
    return table(
        "Process readers: the Linux /proc fast paths beside psutil (the portable path)",
        ["what", "median µs", "ratio to anchor"],
        rows,
    )


def bench_latency() -> str:
    from prometheus_client import CollectorRegistry, Histogram

    endpoint = MetricsEndpoint(sources=[])
    endpoint.start_collection(3_600_000)  # the daemon's mode: averaged per interval
    names = [f"/api/endpoint/{i}" for i in range(20)]
    state = {"i": 0}

    def ours() -> None:
        i = state["i"] = state["i"] + 1
        endpoint.record_request_latency(names[i % 20], float(i % 997))

    hist = Histogram("x_seconds", "x", ["endpoint"], registry=CollectorRegistry())
    children = [hist.labels(n) for n in names]

    def anchor() -> None:
        i = state["i"] = state["i"] + 1
        children[i % 20].observe((i % 997) / 1000.0)

    t_ours = median_seconds_per_call(ours, number=100_000, repeat=7)
    t_anchor = median_seconds_per_call(anchor, number=100_000, repeat=7)
    endpoint.close()
    return table(
        "record_request_latency throughput, one thread, 20 endpoints",
        ["what", "median observations/s", "ratio to anchor", "goal"],
        [["record_request_latency", f"{1 / t_ours:,.0f}", f"{t_anchor / t_ours:.2f}",
          "≥ 300,000/s"],
         ["anchor: prometheus_client Histogram.observe", f"{1 / t_anchor:,.0f}", "1.00", ""]],
    )


def bench_storage(capacity: int = 1440) -> str:
    buf = RingBuffer(capacity)
    for i in range(capacity * 2):
        buf.append(1.7e12 + i * 60_000.0, 200.0 + (i % 100) / 7.0)
    # What the buffer holds, object headers included, per stored sample.
    ours = (sys.getsizeof(buf._times) + sys.getsizeof(buf._values)) / capacity
    history: deque = deque(maxlen=capacity)
    for i in range(capacity * 2):
        history.append((1.7e12 + i * 60_000.0, 200.0 + (i % 100) / 7.0))
    anchor = (sys.getsizeof(history) + sum(
        sys.getsizeof(t) + sys.getsizeof(t[0]) + sys.getsizeof(t[1]) for t in history
    )) / capacity
    assert isinstance(buf._times, array)
    return table(
        f"Bytes per stored sample ({capacity} samples)",
        ["what", "bytes/sample", "ratio to anchor", "goal"],
        [["RingBuffer (two array('d') columns)", f"{ours:.2f}", f"{ours / anchor:.3f}", "≤ 17"],
         ["anchor: deque of (float, float) tuples", f"{anchor:.1f}", "1.00", ""]],
    )


def main() -> None:
    logging.disable(logging.CRITICAL)  # a self-watching tight loop trips the CPU alert
    for bench in (bench_collection, bench_readers, bench_latency, bench_storage):
        print(bench())


if __name__ == "__main__":
    main()

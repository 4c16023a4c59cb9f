"""History persistence: snapshot and restore time, file size, and what a snapshot costs the
collection tick and the scrape running beside it.

The store holds every series any registered source declares, full (1440 samples = the
seed's 24 h at 1 min; 60,480 = its 7-day case at 10 s), plus 20 endpoint latency windows
and 20 extension states.  Times are medians of repeated runs, on the real file system of
the run (the write includes both fsyncs).

Anchor, timed in the same run: the same samples written as JSON (``[[t, v], ...]`` per
series, the obvious Python way) with the same fsync, and read back with ``json.load``.

Interference: the snapshot thread writes back to back (a worst case: the daemon writes
every 5 minutes) while the main thread times ``collect_now()`` (a tick: sources, insert,
alert evaluation) and a rendered scrape of the exposition; the same loops without the
snapshot thread are the baseline.  A snapshot holds the monitor's lock only while it copies
one series' columns; that hold time is the most a tick or scrape can wait for it.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from array import array

from exporter.endpoint import MetricsEndpoint
from exporter.history.snapshots import Snapshotter, capture
from exporter.sources import registry
from exporter.sources.process import ProcessSource
from exporter.sources.targets import SelfFinder
from exporter.store import StoreSettings
from tests.bench.harness import table

SIZES = (1440, 60_480)


def filled(capacity: int) -> MetricsEndpoint:
    ep = MetricsEndpoint(sources=[ProcessSource(SelfFinder())],
                         settings=StoreSettings(capacity=capacity), rules=())
    t0 = time.time() * 1000.0 - capacity * 10_000.0
    times = array("d", (t0 + i * 10_000.0 for i in range(capacity)))
    with ep.recorder.lock:
        ep.store.set_catalog(registry.all_series())
        for n, buf in enumerate(ep.store.series.values()):
            buf.load(times, array("d", (float((i * 7 + n) % 1000) / 3 for i in range(capacity))))
    for i in range(200):
        ep.record_request_latency(f"/api/endpoint/{i % 20}", float(i % 97))
        ep.record_extension_status(f"extension-{i % 20}", "running")
    return ep


def median_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def longest_hold(ep: MetricsEndpoint) -> float:
    """The longest the snapshot holds the lock: one series' copy, as capture() makes it."""
    worst = 0.0
    for buf in ep.store.series.values():
        t = time.perf_counter()
        with ep.recorder.lock:
            buf.timestamps()
            buf.values()
        worst = max(worst, time.perf_counter() - t)
    return worst


def json_write(ep: MetricsEndpoint, path: str) -> None:
    state = capture(ep.recorder)
    with open(path, "w") as f:
        json.dump({k: [list(p) for p in zip(t, v, strict=True)]
                   for k, (t, v) in state.series.items()}, f)
        f.flush()
        os.fsync(f.fileno())


def json_read(path: str) -> None:
    with open(path) as f:
        json.load(f)


def bench_files(folder: str) -> str:
    rows = []
    for capacity in SIZES:
        ep = filled(capacity)
        path = os.path.join(folder, f"history-{capacity}.bin")
        snap = Snapshotter(ep.recorder, path, 300)
        repeat = 9 if capacity < 10_000 else 5
        t_write = median_of(snap.snapshot, repeat)
        t_copy = statistics.median(longest_hold(ep) for _ in range(repeat))
        size = os.path.getsize(path)
        samples = sum(len(b) for b in ep.store.series.values())
        fresh = MetricsEndpoint(sources=[], settings=StoreSettings(capacity=capacity), rules=())
        with fresh.recorder.lock:
            fresh.store.set_catalog(registry.all_series())
        reader = Snapshotter(fresh.recorder, path, 300)
        t_read = median_of(reader.restore, repeat)
        assert fresh.store.series["memory_usage"].samples() == ep.store.series[
            "memory_usage"].samples()
        jpath = os.path.join(folder, f"history-{capacity}.json")
        j_write = median_of(lambda ep=ep, p=jpath: json_write(ep, p), 3)
        j_read = median_of(lambda p=jpath: json_read(p), 3)
        j_size = os.path.getsize(jpath)
        series = len(ep.store.series)
        rows.append([f"{capacity:,} x {series} series", f"{t_write * 1e3:.1f}",
                     f"{t_copy * 1e6:.0f}", f"{t_read * 1e3:.1f}", f"{size / 1024:,.0f}",
                     f"{size / samples:.2f}", f"{t_write / j_write:.3f}",
                     f"{t_read / j_read:.3f}", f"{size / j_size:.3f}"])
        rows.append([f"anchor: JSON of the same samples, {capacity:,}", f"{j_write * 1e3:.1f}",
                     "", f"{j_read * 1e3:.1f}", f"{j_size / 1024:,.0f}",
                     f"{j_size / samples:.2f}", "1.00", "1.00", "1.00"])
        ep.close()
        fresh.close()
    return table(
        "History file: snapshot and restore (goal ≤ 17 bytes/sample)",
        ["samples per series", "snapshot ms (copy+encode+write+fsync)",
         "longest lock hold µs (one series' copy)", "restore ms", "file KiB", "bytes/sample",
         "ratio write", "ratio restore", "ratio size"],
        rows,
    )


def timed_loop(fn, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench_interference(folder: str, capacity: int = 60_480, seconds: float = 4.0) -> str:
    ep = filled(capacity)
    snap = Snapshotter(ep.recorder, os.path.join(folder, "busy.bin"), 300)
    scrape = ep.render_exposition
    rows = []
    for what, fn in (("collection tick (collect_now)", ep.collect_now),
                     ("scrape (render the exposition)", scrape)):
        quiet = timed_loop(fn, seconds)
        stop = threading.Event()
        written = [0]

        def writer(stop: threading.Event = stop, written: list[int] = written) -> None:
            while not stop.is_set():
                snap.snapshot()
                written[0] += 1

        thread = threading.Thread(target=writer)
        thread.start()
        busy = timed_loop(fn, seconds)
        stop.set()
        thread.join()
        q50, b50 = statistics.median(quiet), statistics.median(busy)
        q99 = statistics.quantiles(quiet, n=100)[98]
        b99 = statistics.quantiles(busy, n=100)[98]
        rows.append([what, f"{q50 * 1e6:.0f}", f"{b50 * 1e6:.0f}", f"{b50 / q50:.2f}",
                     f"{q99 * 1e6:.0f}", f"{b99 * 1e6:.0f}", f"{written[0]}"])
    ep.close()
    return table(
        f"A snapshot beside a tick and a scrape ({capacity:,} samples per series, "
        "snapshots back to back)",
        ["what", "median µs without", "median µs during snapshots", "ratio",
         "p99 µs without", "p99 µs during", "snapshots written meanwhile"],
        rows,
    )


def main() -> None:
    logging.disable(logging.CRITICAL)
    folder = os.environ.get("BENCH_HISTORY_DIR") or tempfile.mkdtemp(prefix="bench-history-")
    try:
        print(bench_files(folder))
        print(bench_interference(folder))
    finally:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


if __name__ == "__main__":
    main()

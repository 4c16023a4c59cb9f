"""Many threads recording and reading at once: nothing lost, readers never fail."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.endpoint import MetricsEndpoint

WRITERS = 8
CALLS_PER_WRITER = 5_000
ENDPOINTS = ("/api/media/play", "/api/settings/get", "/api/nav/route", "/api/phone/dial")
MEMORY_CALLS = 1_000
EXTENSION_CALLS = 1_000
READERS = 2
STATES = ("running", "stopped", "crashed", "starting")


def latency_of(writer: int, i: int) -> float:
    return float(writer * 10 + i % 7)  # 0..76 ms: below the alert thresholds


def expected_per_endpoint() -> dict[str, int]:
    counts = dict.fromkeys(ENDPOINTS, 0)
    for _ in range(WRITERS):
        for i in range(CALLS_PER_WRITER):
            counts[ENDPOINTS[i % len(ENDPOINTS)]] += 1
    return counts


def expected_sum_ms() -> float:
    return sum(latency_of(w, i) for w in range(WRITERS) for i in range(CALLS_PER_WRITER))


def histogram_totals(text: str) -> tuple[dict[str, float], float]:
    counts: dict[str, float] = {}
    total_sum = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "crankshaft_request_duration_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_count"):
                counts[s.labels["endpoint"]] = s.value
            elif s.name.endswith("_sum"):
                total_sum += s.value
    return counts, total_sum


def hammer(ep: MetricsEndpoint) -> tuple[list[BaseException], list[int]]:
    """Run writers and readers together from one barrier; return reader errors and loops."""
    errors: list[BaseException] = []
    reads = [0] * READERS
    writers_done = threading.Event()
    barrier = threading.Barrier(WRITERS + 2 + READERS)

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # any failure in a thread fails the test
                errors.append(e)
                barrier.abort()

        return run

    def writer(w: int) -> None:
        barrier.wait()
        for i in range(CALLS_PER_WRITER):
            ep.record_request_latency(ENDPOINTS[i % len(ENDPOINTS)], latency_of(w, i))

    def memory_writer() -> None:
        barrier.wait()
        for i in range(MEMORY_CALLS):
            ep.record_memory_usage(100.0 + i % 50)

    def extension_writer() -> None:
        barrier.wait()
        for i in range(EXTENSION_CALLS):
            ep.record_extension_status(f"ext-{i % 5}", STATES[i % len(STATES)])

    def reader(r: int) -> None:
        barrier.wait()
        while True:
            done = writers_done.is_set()
            doc = ep.get_metrics()
            assert set(doc["latency_breakdown"]) <= set(ENDPOINTS)
            for p in doc["latency_breakdown"].values():
                assert p["p50"] <= p["p95"] <= p["p99"]
            text = ep.export_prometheus()
            assert "crankshaft_memory_usage_mb" in text
            list(text_string_to_metric_families(text))  # always parseable
            reads[r] += 1
            if done:
                return

    writer_threads = [
        threading.Thread(target=guarded(lambda w=w: writer(w))) for w in range(WRITERS)
    ]
    writer_threads += [
        threading.Thread(target=guarded(memory_writer)),
        threading.Thread(target=guarded(extension_writer)),
    ]
    reader_threads = [
        threading.Thread(target=guarded(lambda r=r: reader(r))) for r in range(READERS)
    ]
    for t in writer_threads + reader_threads:
        t.start()
    for t in writer_threads:
        t.join()
    writers_done.set()
    for t in reader_threads:
        t.join()
    return errors, reads


def check_nothing_lost(ep: MetricsEndpoint) -> None:
    doc = ep.get_metrics()
    breakdown = doc["latency_breakdown"]
    assert {k: v["count"] for k, v in breakdown.items()} == expected_per_endpoint()
    assert sum(v["count"] for v in breakdown.values()) == WRITERS * CALLS_PER_WRITER == 40_000

    counts, sum_seconds = histogram_totals(ep.export_prometheus())
    assert counts == {k: float(v) for k, v in expected_per_endpoint().items()}
    assert sum(counts.values()) == 40_000
    assert sum_seconds == pytest.approx(expected_sum_ms() / 1000.0, rel=1e-9)
    assert ep.store.latency.total_count == 40_000
    assert ep.store.latency.dropped_observations == 0

    # the last status each extension was given (i % 5 == k for i = 995..999)
    assert doc["extensions"] == {
        f"ext-{k}": STATES[(EXTENSION_CALLS - 5 + k) % len(STATES)] for k in range(5)
    }


@pytest.fixture
def ep() -> Iterator[MetricsEndpoint]:
    endpoint = MetricsEndpoint(sources=[], capacity=2_000)
    yield endpoint
    endpoint.close()


def test_concurrent_manual_recording_loses_nothing(ep: MetricsEndpoint) -> None:
    errors, reads = hammer(ep)
    assert errors == []
    assert all(n >= 1 for n in reads)
    check_nothing_lost(ep)

    doc = ep.get_metrics()
    # manual mode: every memory call is a sample; capacity 2000 holds all 1000
    assert doc["memory"]["sample_count"] == MEMORY_CALLS
    assert sorted(s["value"] for s in doc["memory"]["samples"]) == sorted(
        100.0 + i % 50 for i in range(MEMORY_CALLS)
    )
    # every latency sample is exactly one observation (taken under the same lock)
    observed = {latency_of(w, i) for w in range(WRITERS) for i in range(7)}
    assert doc["latency"]["sample_count"] == 2_000  # 40 000 samples into 2 000 slots
    assert {s["value"] for s in doc["latency"]["samples"]} <= observed
    # latencies and memory stay below thresholds; only ext-3 ended "crashed"
    assert [(a["metric"], a.get("extension"), a["level"]) for a in ep.get_alerts()] == [
        ("extension_crashed", "ext-3", "CRITICAL")
    ]


def test_concurrent_recording_while_collecting_loses_nothing(ep: MetricsEndpoint) -> None:
    collected = threading.Event()
    ep.on_metrics_collected(collected.set)
    ep.start_collection(20)
    try:
        assert collected.wait(30)
        errors, reads = hammer(ep)
    finally:
        ep.stop_collection()
    assert errors == []
    assert all(n >= 1 for n in reads)
    assert ep.is_collecting() is False
    check_nothing_lost(ep)

    # ticks fold pushed values: never more memory samples than pushes, all pushed values
    doc = ep.get_metrics()
    assert doc["memory"]["sample_count"] <= MEMORY_CALLS
    assert {s["value"] for s in doc["memory"]["samples"]} <= {
        100.0 + i % 50 for i in range(MEMORY_CALLS)
    }
    # each latency sample is an interval mean, so within the range of what was observed
    for s in doc["latency"]["samples"]:
        assert 0.0 <= s["value"] <= latency_of(WRITERS - 1, 6)

"""Latency: percentile arithmetic, sliding windows, endpoint cap, histogram buckets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.latency import (
    DEFAULT_BUCKETS_SECONDS,
    MAX_ENDPOINT_LENGTH,
    LatencyTracker,
    percentile,
    validate_latency,
)


def reference_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy 'linear', R type 7), written plainly."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    below_index = math.floor(h)
    above_index = min(below_index + 1, len(ordered) - 1)
    fraction = h - below_index
    return ordered[below_index] * (1 - fraction) + ordered[above_index] * fraction


def close(a: float, b: float, scale: float = 1.0) -> bool:
    """Equal up to rounding; interpolating between values of magnitude ``scale`` can be off
    by a few ulps of ``scale`` even where the result is near zero."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


# --- percentile ----------------------------------------------------------------------------


def test_percentile_known_values() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(xs, 0.0) == 1.0
    assert percentile(xs, 0.5) == 3.0
    assert percentile(xs, 1.0) == 5.0
    assert percentile(xs, 0.25) == 2.0
    assert percentile(xs, 0.95) == pytest.approx(4.8)
    assert percentile([10.0, 20.0], 0.5) == 15.0
    assert percentile([10.0, 20.0], 0.99) == pytest.approx(19.9)
    assert percentile([7.5], 0.99) == 7.5
    # numpy.percentile(range(1, 101), 99) == 99.01
    assert percentile([float(i) for i in range(1, 101)], 0.99) == pytest.approx(99.01)


def test_percentile_of_nothing_raises() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)


latencies = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
signed = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(signed, min_size=1, max_size=200),
    q=st.one_of(st.sampled_from([0.5, 0.95, 0.99, 0.0, 1.0]), st.floats(0.0, 1.0)),
)
def test_percentile_matches_reference(values: list[float], q: float) -> None:
    ordered = sorted(values)
    got = percentile(ordered, q)
    scale = max(abs(v) for v in values) * 1e-6
    want = reference_percentile(values, q)
    assert close(got, want, scale), (got, want)
    assert ordered[0] <= got or close(got, ordered[0], scale)
    assert got <= ordered[-1] or close(got, ordered[-1], scale)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(signed, min_size=1, max_size=100))
def test_percentile_extremes_are_min_and_max(values: list[float]) -> None:
    ordered = sorted(values)
    assert percentile(ordered, 0.0) == ordered[0]
    assert percentile(ordered, 1.0) == ordered[-1]


# --- validate_latency ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "latency"),
    [
        ("/api", float("nan")),
        ("/api", float("inf")),
        ("/api", float("-inf")),
        ("/api", -0.001),
        ("/api", -5),
        ("/api", True),
        ("/api", False),
        ("/api", "85.2"),
        ("/api", None),
        ("", 1.0),
        ("x" * (MAX_ENDPOINT_LENGTH + 1), 1.0),
        (None, 1.0),
        (42, 1.0),
    ],
)
def test_validate_latency_rejects(endpoint: object, latency: object) -> None:
    with pytest.raises(ValueError):
        validate_latency(endpoint, latency)


def test_validate_latency_accepts_and_converts() -> None:
    assert validate_latency("/api/play", 85.2) == ("/api/play", 85.2)
    ep, v = validate_latency("/a", 3)
    assert (ep, v) == ("/a", 3.0)
    assert isinstance(v, float)
    assert validate_latency("/a", 0) == ("/a", 0.0)
    longest = "x" * MAX_ENDPOINT_LENGTH
    assert validate_latency(longest, 1.0) == (longest, 1.0)


# --- LatencyTracker ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": 0},
        {"max_endpoints": 0},
        {"buckets_seconds": ()},
        {"buckets_seconds": (0.0, 1.0)},
        {"buckets_seconds": (-1.0,)},
        {"buckets_seconds": (float("inf"),)},
    ],
)
def test_tracker_rejects_bad_configuration(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LatencyTracker(**kwargs)


def test_unknown_endpoint_has_no_percentiles() -> None:
    t = LatencyTracker()
    assert t.percentiles("/nothing") is None
    assert t.breakdown() == {}
    assert t.histograms() == {}


def test_window_slides_but_count_is_all_time() -> None:
    t = LatencyTracker(window_size=3)
    for v in [1000.0, 2000.0, 3000.0, 1.0, 2.0, 3.0]:
        t.observe("/a", v)
    p = t.percentiles("/a")
    assert p is not None
    assert p.count == 6
    assert p.p50 == 2.0  # only 1, 2, 3 count
    assert p.p99 == pytest.approx(2.98)
    assert t.total_count == 6


def test_percentiles_follow_new_observations() -> None:
    t = LatencyTracker(window_size=10)
    t.observe("/a", 5.0)
    assert t.percentiles("/a").p50 == 5.0  # type: ignore[union-attr]
    t.observe("/a", 15.0)  # a cached sort must not survive a new observation
    assert t.percentiles("/a").p50 == 10.0  # type: ignore[union-attr]


def test_endpoint_cap_drops_new_endpoints_only() -> None:
    t = LatencyTracker(max_endpoints=2)
    assert t.observe("/a", 1.0) is True
    assert t.observe("/b", 2.0) is True
    assert t.observe("/c", 3.0) is False
    assert t.observe("/c", 4.0) is False
    assert t.observe("/a", 5.0) is True
    assert t.observe("/b", 6.0) is True
    assert t.dropped_observations == 2
    assert t.endpoints() == ["/a", "/b"]
    assert set(t.breakdown()) == {"/a", "/b"}
    assert t.breakdown()["/a"].count == 2
    assert t.total_count == 4
    assert "/c" not in t.histograms()
    # dropped observations do not feed the interval average either
    assert t.take_interval_average() == pytest.approx((1 + 2 + 5 + 6) / 4)


def test_histogram_cumulative_counts_and_sum_seconds() -> None:
    t = LatencyTracker()
    observations = [1.0, 5.0, 7.0, 100.0, 499.9, 500.0, 500.1, 1000.0, 20_000.0]
    for v in observations:
        t.observe("/a", v)
    h = t.histograms()["/a"]
    assert h.bounds_seconds == DEFAULT_BUCKETS_SECONDS
    assert len(h.cumulative_counts) == len(DEFAULT_BUCKETS_SECONDS) + 1
    expected = [sum(1 for v in observations if v / 1000.0 <= b) for b in h.bounds_seconds]
    assert list(h.cumulative_counts[:-1]) == expected
    assert h.cumulative_counts[-1] == h.count == len(observations)  # +Inf
    assert list(h.cumulative_counts) == sorted(h.cumulative_counts)
    assert h.sum_seconds == pytest.approx(sum(observations) / 1000.0)


@pytest.mark.parametrize(
    ("ms", "bound"), [(500.0, 0.5), (1000.0, 1.0), (5.0, 0.005), (250.0, 0.25)]
)
def test_observation_equal_to_bound_is_in_that_bucket(ms: float, bound: float) -> None:
    t = LatencyTracker()
    t.observe("/a", ms)
    h = t.histograms()["/a"]
    i = h.bounds_seconds.index(bound)
    assert h.cumulative_counts[i] == 1  # le: less than or equal
    if i > 0:
        assert h.cumulative_counts[i - 1] == 0


def test_custom_buckets_are_sorted_and_deduplicated() -> None:
    t = LatencyTracker(buckets_seconds=(1.0, 0.1, 0.1, 0.5))
    assert t.bounds_seconds == (0.1, 0.5, 1.0)
    for v in [50.0, 100.0, 300.0, 2000.0]:
        t.observe("/a", v)
    assert t.histograms()["/a"].cumulative_counts == (2, 3, 3, 4)


def test_observation_equal_to_custom_bound_is_in_that_bucket() -> None:
    t = LatencyTracker(buckets_seconds=(1.001,))
    t.observe("/a", 1001.0)  # 1001 ms == 1.001 s (1001 / 1000 == 1.001 in float64)
    assert t.histograms()["/a"].cumulative_counts == (1, 1)


def test_take_interval_average() -> None:
    t = LatencyTracker()
    assert t.take_interval_average() is None
    t.observe("/a", 10.0)
    t.observe("/b", 20.0)
    t.observe("/a", 60.0)
    assert t.take_interval_average() == pytest.approx(30.0)
    assert t.take_interval_average() is None
    t.observe("/a", 7.0)
    assert t.take_interval_average() == 7.0
    assert t.take_interval_average() is None
    assert t.total_count == 4  # the interval resets, the all-time count does not


def test_reconfigure_shrinks_window_keeping_newest() -> None:
    t = LatencyTracker(window_size=5, max_endpoints=1)
    for v in [100.0, 200.0, 1.0, 2.0, 3.0]:
        t.observe("/a", v)
    assert t.percentiles("/a").p50 == 3.0  # type: ignore[union-attr]
    t.reconfigure(window_size=3, max_endpoints=2)
    p = t.percentiles("/a")
    assert p is not None
    assert (p.p50, p.count) == (2.0, 5)
    assert t.window_size == 3
    assert t.observe("/b", 1.0) is True  # the new cap applies
    t.observe("/a", 4.0)
    assert t.percentiles("/a").p50 == 3.0  # type: ignore[union-attr]  # window 2, 3, 4


def test_reconfigure_grow_keeps_window() -> None:
    t = LatencyTracker(window_size=2)
    for v in [1.0, 2.0, 3.0]:
        t.observe("/a", v)
    t.reconfigure(window_size=4, max_endpoints=100)
    t.observe("/a", 4.0)
    t.observe("/a", 5.0)
    assert t.percentiles("/a").p50 == 3.5  # type: ignore[union-attr]  # 2, 3, 4, 5


@pytest.mark.parametrize(("w", "m"), [(0, 1), (1, 0), (-1, 5)])
def test_reconfigure_rejects_bad_limits(w: int, m: int) -> None:
    t = LatencyTracker(window_size=4, max_endpoints=4)
    with pytest.raises(ValueError):
        t.reconfigure(w, m)
    assert (t.window_size, t.max_endpoints) == (4, 4)


@settings(max_examples=200, deadline=None)
@given(
    observations=st.lists(latencies, min_size=1, max_size=300),
    window_size=st.integers(min_value=1, max_value=64),
)
def test_percentiles_match_reference_over_window(
    observations: list[float], window_size: int
) -> None:
    t = LatencyTracker(window_size=window_size)
    for v in observations:
        t.observe("/a", v)
    window = observations[-window_size:]
    p = t.percentiles("/a")
    assert p is not None
    assert p.count == len(observations)
    for q, got in ((0.5, p.p50), (0.95, p.p95), (0.99, p.p99)):
        want = reference_percentile(window, q)
        assert close(got, want), (q, got, want)
    assert p.p50 <= p.p95 <= p.p99


@settings(max_examples=100, deadline=None)
@given(
    observations=st.lists(latencies, min_size=0, max_size=300),
    window=st.integers(1, 50),
    split=st.integers(0, 300),
)
def test_observe_many_equals_observing_one_by_one(
    observations: list[float], window: int, split: int
) -> None:
    one, many = LatencyTracker(window_size=window), LatencyTracker(window_size=window)
    for ms in observations:
        one.observe("/a", ms)
    assert many.observe_many("/a", observations[:split]) == 0
    assert many.observe_many("/a", observations[split:]) == 0
    h1, h2 = one.histograms(), many.histograms()
    assert h1.keys() == h2.keys()
    for name in h1:  # sums may differ in the last bits: float addition is not associative
        assert h1[name].cumulative_counts == h2[name].cumulative_counts
        assert h1[name].count == h2[name].count
        assert math.isclose(h1[name].sum_seconds, h2[name].sum_seconds, rel_tol=1e-9)
    assert one.breakdown() == many.breakdown()
    assert one.total_count == many.total_count
    a, b = one.take_interval_average(), many.take_interval_average()
    assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9)


def test_observe_many_beyond_the_endpoint_cap_is_dropped_and_counted() -> None:
    tracker = LatencyTracker(max_endpoints=1)
    assert tracker.observe_many("/a", [1.0, 2.0]) == 0
    assert tracker.observe_many("/b", [3.0, 4.0, 5.0]) == 3
    assert tracker.dropped_observations == 3
    assert tracker.endpoints() == ["/a"]


def test_a_histogram_snapshot_is_shared_until_its_endpoint_sees_traffic() -> None:
    """Scrapes between observations get the same object (cheap to compare); any
    observation, one or a batch, makes a new one with the new counts."""
    t = LatencyTracker()
    t.observe("/a", 3.0)
    t.observe("/b", 3.0)
    first = t.histograms()
    again = t.histograms()
    assert again["/a"] is first["/a"] and again["/b"] is first["/b"]
    t.observe("/a", 700.0)
    t.observe_many("/b", [1.0, 2.0])
    later = t.histograms()
    assert later["/a"] is not first["/a"] and later["/b"] is not first["/b"]
    assert (later["/a"].count, later["/a"].sum_seconds) == (2, 0.703)
    assert later["/a"].cumulative_counts[-1] == 2
    assert later["/a"].cumulative_counts[DEFAULT_BUCKETS_SECONDS.index(0.5)] == 1
    assert (later["/b"].count, later["/b"].cumulative_counts[0]) == (3, 3)
    assert first["/a"].count == 1  # what was handed out before is never changed

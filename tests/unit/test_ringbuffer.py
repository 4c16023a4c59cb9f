"""RingBuffer: capacity, wraparound order, windows, resize, storage cost, and stats."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.ringbuffer import EMPTY_STATS, RingBuffer, SeriesStats, stats_of


def filled(capacity: int, n: int) -> RingBuffer:
    """A buffer that saw samples (t=1000*i, v=i) for i in 0..n-1."""
    buf = RingBuffer(capacity)
    for i in range(n):
        buf.append(1000.0 * i, float(i))
    return buf


# --- capacity ------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [0, -1, -1440])
def test_capacity_below_one_is_rejected(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(capacity)


@pytest.mark.parametrize("capacity", [1, 2, 1440])
def test_new_buffer_is_empty_with_given_capacity(capacity: int) -> None:
    buf = RingBuffer(capacity)
    assert buf.capacity == capacity
    assert len(buf) == 0
    assert list(buf.values()) == []
    assert list(buf.timestamps()) == []
    assert buf.samples() == []
    assert buf.latest() is None
    assert buf.stats() == EMPTY_STATS


# --- appending and wraparound --------------------------------------------------------------


def test_len_grows_until_capacity_then_stays() -> None:
    buf = RingBuffer(5)
    for i in range(12):
        buf.append(float(i), float(i))
        assert len(buf) == min(i + 1, 5)


@pytest.mark.parametrize("n", [1, 4, 5, 6, 9, 10, 11, 23, 1000, 1003])
def test_wraparound_keeps_newest_oldest_first(n: int) -> None:
    capacity = 5
    buf = filled(capacity, n)
    kept = list(range(max(0, n - capacity), n))
    assert list(buf.values()) == [float(i) for i in kept]
    assert list(buf.timestamps()) == [1000.0 * i for i in kept]
    assert buf.samples() == [(1000.0 * i, float(i)) for i in kept]
    assert buf.latest() == (1000.0 * (n - 1), float(n - 1))


def test_capacity_one_keeps_only_latest() -> None:
    buf = RingBuffer(1)
    for i in range(7):
        buf.append(float(i), float(i * 10))
    assert len(buf) == 1
    assert buf.samples() == [(6.0, 60.0)]
    assert buf.latest() == (6.0, 60.0)


def test_clear_empties_and_buffer_is_reusable() -> None:
    buf = filled(4, 10)
    buf.clear()
    assert len(buf) == 0
    assert buf.latest() is None
    assert list(buf.values()) == []
    buf.append(5.0, 50.0)
    assert buf.samples() == [(5.0, 50.0)]


# --- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 8, 13])  # not full, exactly wrapped once-ish, wrapped
@pytest.mark.parametrize("last_n", [None, -1, -5, 0, 1, 2, 3, 7, 8, 100])
def test_values_and_timestamps_last_n(n: int, last_n: int | None) -> None:
    capacity = 8
    buf = filled(capacity, n)
    kept = list(range(max(0, n - capacity), n))
    if last_n is not None and last_n >= 0:
        kept = kept[len(kept) - min(last_n, len(kept)) :]
    assert list(buf.values(last_n)) == [float(i) for i in kept]
    assert list(buf.timestamps(last_n)) == [1000.0 * i for i in kept]
    assert buf.samples(last_n) == [(1000.0 * i, float(i)) for i in kept]


def test_values_since_includes_the_boundary_and_later() -> None:
    buf = filled(10, 25)  # keeps i = 15..24, t = 15000..24000
    assert list(buf.values_since(20_000.0)) == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert list(buf.values_since(19_999.5)) == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert list(buf.values_since(20_000.5)) == [21.0, 22.0, 23.0, 24.0]
    assert list(buf.values_since(0.0)) == [float(i) for i in range(15, 25)]
    assert list(buf.values_since(24_000.1)) == []
    assert list(RingBuffer(3).values_since(0.0)) == []


# --- resize --------------------------------------------------------------------------------


def test_resize_shrink_keeps_newest() -> None:
    buf = filled(10, 17)  # keeps 7..16
    buf.resize(4)
    assert buf.capacity == 4
    assert len(buf) == 4
    assert buf.samples() == [(1000.0 * i, float(i)) for i in (13, 14, 15, 16)]
    buf.append(17_000.0, 17.0)
    assert list(buf.values()) == [14.0, 15.0, 16.0, 17.0]


def test_resize_grow_keeps_all_and_gains_room() -> None:
    buf = filled(4, 9)  # keeps 5..8, wrapped
    buf.resize(10)
    assert buf.capacity == 10
    assert list(buf.values()) == [5.0, 6.0, 7.0, 8.0]
    for i in range(9, 15):
        buf.append(1000.0 * i, float(i))
    assert list(buf.values()) == [float(i) for i in range(5, 15)]
    assert buf.nbytes() == 16 * 10


def test_resize_same_capacity_is_a_no_op() -> None:
    buf = filled(5, 7)
    before = buf.samples()
    buf.resize(5)
    assert buf.samples() == before
    assert buf.capacity == 5


def test_resize_to_invalid_capacity_raises_and_keeps_data() -> None:
    buf = filled(5, 7)
    before = buf.samples()
    with pytest.raises(ValueError):
        buf.resize(0)
    assert buf.samples() == before
    assert buf.capacity == 5


# --- storage cost --------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1440, 2880])
def test_storage_is_two_float64_per_sample(capacity: int) -> None:
    buf = RingBuffer(capacity)
    assert buf.nbytes() == 16 * capacity
    for i in range(capacity * 2 + 3):  # filling and wrapping allocates nothing more
        buf.append(float(i), float(i))
    assert buf.nbytes() / capacity == 16


def test_bytes_per_sample_including_array_overhead() -> None:
    capacity = 1440
    buf = RingBuffer(capacity)
    for i in range(capacity + 10):
        buf.append(float(i), float(i))
    columns = sys.getsizeof(buf._times) + sys.getsizeof(buf._values)
    assert columns / capacity <= 17


# --- stats ---------------------------------------------------------------------------------


def test_stats_of_known_values() -> None:
    buf = RingBuffer(4)
    for t, v in enumerate([220.1, 225.3, 265.3, 245.8, 238.4]):
        buf.append(float(t), v)
    # keeps 225.3, 265.3, 245.8, 238.4
    s = buf.stats()
    assert s == SeriesStats(
        4, 238.4, pytest.approx((225.3 + 265.3 + 245.8 + 238.4) / 4), 225.3, 265.3
    )
    assert buf.stats(2) == SeriesStats(2, 238.4, pytest.approx((245.8 + 238.4) / 2), 238.4, 245.8)
    assert buf.stats(0) == EMPTY_STATS


def test_stats_of_empty_is_all_none() -> None:
    assert stats_of([]) == SeriesStats(0, None, None, None, None)  # type: ignore[arg-type]


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=50),
    values=st.lists(finite, max_size=150),
    last_n=st.one_of(st.none(), st.integers(min_value=-5, max_value=200)),
)
def test_stats_match_naive_reference(
    capacity: int, values: list[float], last_n: int | None
) -> None:
    buf = RingBuffer(capacity)
    everything: list[float] = []
    for i, v in enumerate(values):
        buf.append(float(i), v)
        everything.append(v)

    kept = everything[-capacity:] if everything else []
    if last_n is not None and last_n >= 0:
        kept = kept[len(kept) - min(last_n, len(kept)) :]

    s = buf.stats(last_n)
    assert s.sample_count == len(kept)
    assert list(buf.values(last_n)) == kept
    if not kept:
        assert s == EMPTY_STATS
        return
    assert s.latest == kept[-1]
    assert s.min == min(kept)
    assert s.max == max(kept)
    assert s.average == pytest.approx(sum(kept) / len(kept), rel=1e-9, abs=1e-9)
    assert s.min <= s.average <= s.max  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=50),
    n=st.integers(min_value=0, max_value=150),
    new_capacity=st.integers(min_value=1, max_value=60),
)
def test_resize_matches_reference(capacity: int, n: int, new_capacity: int) -> None:
    buf = filled(capacity, n)
    reference = list(range(n))[-capacity:] if n else []
    buf.resize(new_capacity)
    reference = reference[-new_capacity:] if reference else []
    assert list(buf.values()) == [float(i) for i in reference]
    assert list(buf.timestamps()) == [1000.0 * i for i in reference]
    assert buf.capacity == new_capacity
    assert math.isclose(buf.nbytes(), 16 * new_capacity)

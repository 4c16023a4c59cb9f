"""Concurrent scrapes share one render; later ones render afresh; errors reach every waiter."""

from __future__ import annotations

import threading

import pytest

from exporter.http.coalesce import Coalescer
from tests.helpers import wait_for


class BlockingCompute:
    """Counts calls; each call blocks until released, so callers can pile up behind it."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def __call__(self) -> int:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("render failed")
        return self.calls


def pile_up(compute: BlockingCompute, n: int) -> tuple[Coalescer, list]:
    """``n`` concurrent calls: the first computes, the others join its flight; returns
    once all have finished, with their results (or exceptions) in completion order."""
    coalesced = Coalescer(compute)
    results: list = []

    def call() -> None:
        try:
            results.append(coalesced())
        except RuntimeError as e:
            results.append(e)

    threads = [threading.Thread(target=call) for _ in range(n)]
    threads[0].start()
    assert compute.entered.wait(10)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: coalesced.followers() == n - 1, "the other callers to join the flight")
    compute.release.set()
    for t in threads:
        t.join(10)
    assert coalesced.followers() == 0
    return coalesced, results


def test_callers_during_a_flight_share_its_result() -> None:
    compute = BlockingCompute()
    coalesced, results = pile_up(compute, 8)
    assert compute.calls == 1
    assert results == [1] * 8
    assert coalesced() == 2  # a later call renders afresh


def test_an_error_reaches_every_waiter_and_is_not_cached() -> None:
    compute = BlockingCompute(fail=True)
    coalesced, results = pile_up(compute, 4)
    assert compute.calls == 1
    assert len(results) == 4 and all(isinstance(r, RuntimeError) for r in results)
    compute.fail = False
    assert coalesced() == 2


def test_sequential_calls_each_compute() -> None:
    counter = iter(range(100))
    coalesced = Coalescer(lambda: next(counter))
    assert [coalesced() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopIteration):
        Coalescer(lambda: next(iter([])))()


# --- the event loop's variant: never waits ----------------------------------------------------


class WouldWait(Exception):
    pass


def test_now_computes_when_nothing_is_in_progress() -> None:
    coalesced: Coalescer[int] = Coalescer(lambda: 1)
    assert coalesced.now(lambda: 2, WouldWait) == 2
    assert coalesced() == 1  # the flight is over: the next caller computes afresh


def test_now_gives_up_rather_than_join_a_computation_in_progress() -> None:
    compute = BlockingCompute()
    coalesced = Coalescer(compute)
    leader = threading.Thread(target=coalesced)
    leader.start()
    assert compute.entered.wait(10)
    assert coalesced.now(lambda: 99, WouldWait) is None  # would wait for the leader
    compute.release.set()
    leader.join(10)
    assert compute.calls == 1


def test_a_leader_that_would_wait_lets_its_followers_compute_for_themselves() -> None:
    """The loop's render found the recorder's lock taken and gave up: callers that joined
    its flight meanwhile must not receive its WouldWait, and compute (waiting) instead."""
    joined = threading.Event()
    giving_up = threading.Event()
    results: list[int] = []

    def would_wait() -> int:
        giving_up.set()
        assert joined.wait(10)
        raise WouldWait

    coalesced = Coalescer(lambda: 7)
    follower = threading.Thread(target=lambda: results.append(coalesced()))

    def loop_side() -> None:
        assert coalesced.now(would_wait, WouldWait) is None

    loop = threading.Thread(target=loop_side)
    loop.start()
    assert giving_up.wait(10)
    follower.start()
    wait_for(lambda: coalesced.followers() == 1, "the follower to join the flight")
    joined.set()
    loop.join(10)
    follower.join(10)
    assert results == [7]


def test_now_passes_on_a_failure_that_is_not_waiting() -> None:
    coalesced: Coalescer[int] = Coalescer(lambda: 1)

    def broken() -> int:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        coalesced.now(broken, WouldWait)
    assert coalesced() == 1

"""Giving memory back after a crowd of connections: when it runs, and that it is glibc's."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from exporter.http import memtrim
from exporter.http.memtrim import MemoryTrimmer

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(memtrim.time, "monotonic", lambda: now[0])
    return now


def close(trimmer: MemoryTrimmer, n: int) -> None:
    for _ in range(n):
        trimmer.connection_closed()


@glibc_only
def test_trims_once_many_connections_closed_and_not_more_than_once_a_second(
        clock: list[float]) -> None:
    assert ctypes.util.find_library("c")
    trimmer = MemoryTrimmer()
    close(trimmer, memtrim.TRIM_AFTER_CLOSES - 1)
    assert not trimmer.maybe_trim()  # a few closes: nothing to give back worth the call
    close(trimmer, 1)
    assert trimmer.maybe_trim() and trimmer.trims == 1
    close(trimmer, memtrim.TRIM_AFTER_CLOSES)
    assert not trimmer.maybe_trim()  # within the second
    clock[0] += memtrim.TRIM_EVERY_S
    assert trimmer.maybe_trim() and trimmer.trims == 2


@glibc_only
def test_the_crowds_last_closes_are_trimmed_once_they_stop(clock: list[float]) -> None:
    trimmer = MemoryTrimmer()
    close(trimmer, memtrim.TRIM_AFTER_CLOSES + 5)
    assert trimmer.maybe_trim() and trimmer.trims == 1
    clock[0] += memtrim.TRIM_EVERY_S
    close(trimmer, 10)  # the crowd's stragglers, fewer than a batch
    assert not trimmer.maybe_trim()  # still closing
    clock[0] += memtrim.TRIM_EVERY_S
    assert trimmer.maybe_trim() and trimmer.trims == 2  # closes stopped: what they held
    clock[0] += memtrim.TRIM_EVERY_S
    close(trimmer, 1)
    assert not trimmer.maybe_trim()
    clock[0] += memtrim.TRIM_EVERY_S
    assert not trimmer.maybe_trim() and trimmer.trims == 2  # one follow-up per crowd


@glibc_only
def test_no_follow_up_when_the_batch_trim_came_after_the_last_close(
        clock: list[float]) -> None:
    trimmer = MemoryTrimmer()
    close(trimmer, memtrim.TRIM_AFTER_CLOSES)
    assert trimmer.maybe_trim()
    for _ in range(3):
        clock[0] += memtrim.TRIM_EVERY_S
        assert not trimmer.maybe_trim()
    close(trimmer, 1)  # a scrape later: not the crowd's
    clock[0] += memtrim.TRIM_EVERY_S
    assert not trimmer.maybe_trim()
    clock[0] += memtrim.TRIM_EVERY_S
    assert not trimmer.maybe_trim() and trimmer.trims == 1


@glibc_only
def test_scrapes_alone_do_not_trim_until_a_batch_has_closed(clock: list[float]) -> None:
    trimmer = MemoryTrimmer()
    trims = 0
    for _ in range(memtrim.TRIM_AFTER_CLOSES - 1):  # one scrape, then a quiet second
        close(trimmer, 1)
        clock[0] += memtrim.TRIM_EVERY_S
        trims += trimmer.maybe_trim()
        clock[0] += memtrim.TRIM_EVERY_S
        trims += trimmer.maybe_trim()
    assert trims == 0
    close(trimmer, 1)
    assert trimmer.maybe_trim() and trimmer.trims == 1


def test_without_glibc_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "_libc", lambda: None)
    trimmer = MemoryTrimmer()
    close(trimmer, memtrim.TRIM_AFTER_CLOSES * 2)
    assert not trimmer.maybe_trim() and trimmer.trims == 0
    assert not trimmer.maybe_trim() and trimmer.trims == 0

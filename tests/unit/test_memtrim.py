"""Giving memory back after a crowd of connections: when it runs, and that it is glibc's."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from exporter.http import memtrim
from exporter.http.memtrim import MemoryTrimmer


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_trims_once_many_connections_closed_and_not_more_than_once_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ctypes.util.find_library("c")
    now = [1000.0]
    monkeypatch.setattr(memtrim.time, "monotonic", lambda: now[0])
    trimmer = MemoryTrimmer()
    for _ in range(memtrim.TRIM_AFTER_CLOSES - 1):
        trimmer.connection_closed()
    assert not trimmer.maybe_trim()  # a few closes: nothing to give back worth the call
    trimmer.connection_closed()
    assert trimmer.maybe_trim() and trimmer.trims == 1
    for _ in range(memtrim.TRIM_AFTER_CLOSES):
        trimmer.connection_closed()
    assert not trimmer.maybe_trim()  # within the second
    now[0] += memtrim.TRIM_EVERY_S
    assert trimmer.maybe_trim() and trimmer.trims == 2


def test_without_glibc_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "_libc", lambda: None)
    trimmer = MemoryTrimmer()
    for _ in range(memtrim.TRIM_AFTER_CLOSES * 2):
        trimmer.connection_closed()
    assert not trimmer.maybe_trim() and trimmer.trims == 0

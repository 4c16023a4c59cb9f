"""Memory (RSS) and CPU % of the target's processes, from one read of /proc/PID/stat each.

The seed reads VmRSS from /proc/self/status and utime+stime from /proc/self/stat; the stat
file alone carries both (its ``rss`` field is the same page count VmRSS reports), so one
``pread`` on a descriptor kept open per process is the whole cost of a sample.  A kept
descriptor is safe against PID reuse: once its process is gone, reads fail with ESRCH even
if the number is reused.

CPU % is the seed's definition: delta of utime+stime over the wall-clock delta x 100 (so it
may exceed 100 on several cores, as top shows it).  Counters are primed when the source is
built; a reading with no usable previous one (the first, or one too soon after it to be
meaningful at clock-tick resolution) reports each process's lifetime average, as ps does,
instead of the seed's meaningless first 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from exporter.sources.base import Source
from exporter.sources.targets import ProcessFinder

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024.0 * 1024.0
# Below this wall-clock window a delta of 10 ms clock ticks is too coarse to mean anything.
MIN_CPU_WINDOW_S = 0.5


def boottime() -> float:
    """Seconds since boot on the clock process start times are counted in."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def parse_stat(data: bytes) -> tuple[float, int, int]:
    """(start time in s since boot, utime+stime in ticks, rss in pages) of a stat line."""
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime=14, stime=15, starttime=22, rss=24
    return int(fields[19]) / CLK_TCK, int(fields[11]) + int(fields[12]), int(fields[21])


class ProcessSource(Source):
    """Sums memory and CPU over every process the finder lists."""

    name = "process"

    def __init__(self, finder: ProcessFinder, clock: Callable[[], float] = boottime) -> None:
        self.finder = finder
        self._clock = clock
        self._fds: dict[int, int] = {}
        self._prev_ticks: dict[tuple[int, float], int] = {}
        self._prev_time: float | None = None
        self.up = False
        self.pids: list[int] = []
        self._remember(*self._read_all())  # prime the CPU counters

    def _remember(self, now: float, readings: dict[tuple[int, float], tuple[int, int]]) -> None:
        self._prev_time = now
        self._prev_ticks = {key: ticks for key, (ticks, _) in readings.items()}

    def _read(self, pid: int) -> tuple[float, int, int] | None:
        fd = self._fds.get(pid)
        try:
            if fd is None:
                fd = self._fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            return parse_stat(os.pread(fd, 1024, 0))
        except (OSError, ValueError, IndexError):  # gone, or not readable by us
            if fd is not None:
                os.close(self._fds.pop(pid))
            return None

    def _read_all(self) -> tuple[float, dict[tuple[int, float], tuple[int, int]]]:
        pids = self.finder.find()
        for stale in self._fds.keys() - set(pids):
            os.close(self._fds.pop(stale))
        now = self._clock()
        readings = {}
        for pid in pids:
            r = self._read(pid)
            if r is not None:
                start, ticks, rss = r
                readings[(pid, start)] = (ticks, rss)
        self.pids = [key[0] for key in readings]
        self.up = bool(readings)
        return now, readings

    def collect(self) -> Mapping[str, float]:
        prev_time, prev_ticks = self._prev_time, self._prev_ticks
        now, readings = self._read_all()
        self._remember(now, readings)
        if not readings:
            return {}  # no target process: record nothing rather than a fake 0
        memory_mb = sum(rss for _, rss in readings.values()) * PAGE_SIZE / MIB
        return {
            "memory_usage": memory_mb,
            "cpu_usage": self._cpu_percent(now, readings, prev_time, prev_ticks),
        }

    @staticmethod
    def _cpu_percent(
        now: float,
        readings: dict[tuple[int, float], tuple[int, int]],
        prev_time: float | None,
        prev_ticks: dict[tuple[int, float], int],
    ) -> float:
        window = None if prev_time is None else now - prev_time
        if window is not None and window >= MIN_CPU_WINDOW_S:
            delta, baseline = 0, False
            for key, (ticks, _) in readings.items():
                before = prev_ticks.get(key)
                if before is not None:
                    delta += ticks - before
                    baseline = True
                elif key[1] >= prev_time:  # started within the window: all its CPU is new
                    delta += ticks
                    baseline = True
                # else: found only now (e.g. a new name match); it counts from the next tick
            if baseline:
                return max(0.0, delta / CLK_TCK / window * 100.0)
        lifetime = 0.0
        for (_, start), (ticks, _) in readings.items():
            alive = now - start
            if alive > 0:
                lifetime += ticks / CLK_TCK / alive * 100.0
        return lifetime

    def warmup_seconds(self) -> float:
        if self._prev_time is None:
            return 0.0
        return max(0.0, MIN_CPU_WINDOW_S - (self._clock() - self._prev_time))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

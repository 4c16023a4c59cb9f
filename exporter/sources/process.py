"""Memory (RSS) and CPU % of the target's processes: the seed's ``memory_usage`` and
``cpu_usage``, read by :mod:`exporter.sources.readers.process_stats` (psutil, or the faster
/proc reader where it works).

CPU % is the seed's definition: delta of CPU time over the wall-clock delta x 100 (so it may
exceed 100 on several cores, as top shows it).  Counters are primed when the source is
built; a reading with no usable previous one (the first, or one too soon after it to be
meaningful) reports each process's lifetime average, as ps does, instead of the seed's
meaningless first 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from exporter.series import SeriesSpec
from exporter.sources.base import Source
from exporter.sources.readers.process_stats import (
    ProcStatReader,
    PsutilReader,
    Reading,
    default_reader,
    parse_stat,
    parse_statm,
)
from exporter.sources.registry import SourceContext, SourceType
from exporter.sources.targets import ProcessFinder, TargetMiss

log = logging.getLogger(__name__)

__all__ = [
    "ProcStatReader",
    "ProcessSource",
    "PsutilReader",
    "Reading",
    "default_reader",
    "parse_stat",
    "parse_statm",
]

MIB = 1024.0 * 1024.0
# Below this wall-clock window a delta of 10 ms clock ticks is too coarse to mean anything.
MIN_CPU_WINDOW_S = 0.5

MEMORY = SeriesSpec(
    key="memory_usage",
    metric="crankshaft_memory_usage_mb",
    help="Process memory usage in megabytes",
    unit="MB",
    json_key="memory",
    csv_column="memory_mb",
    push_field="memory_mb",
)
CPU = SeriesSpec(
    key="cpu_usage",
    metric="crankshaft_cpu_usage_percent",
    help="Process CPU usage percentage",
    unit="%",
    json_key="cpu",
    csv_column="cpu_percent",
    push_field="cpu_percent",
)

class ProcessSource(Source):
    """Sums memory and CPU over every process the finder lists."""

    name = "process"
    series = (MEMORY, CPU)

    def __init__(
        self,
        finder: ProcessFinder,
        reader: ProcStatReader | PsutilReader | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.finder = finder
        self.reader = reader if reader is not None else default_reader()
        self._clock = clock or self.reader.clock
        self._prev_cpu: dict[tuple[int, float], float] = {}
        self._prev_time: float | None = None
        self._known: set[int] = set()
        self.up = False
        self.pids: list[int] = []
        self.miss: TargetMiss | None = None
        self._remember(*self._read_all())  # prime the CPU counters

    def target_up(self) -> bool:
        return self.up

    def target_miss(self) -> TargetMiss | None:
        return self.miss

    def _remember(self, now: float, readings: dict[tuple[int, float], tuple[float, int]]) -> None:
        self._prev_time = now
        self._prev_cpu = {key: cpu for key, (cpu, _) in readings.items()}

    def _read_all(self) -> tuple[float, dict[tuple[int, float], tuple[float, int]]]:
        pids = self.finder.find()
        gone = self._known - set(pids)
        if gone:
            self.reader.forget(gone)
        self._known = set(pids)
        now = self._clock()
        readings = {}
        for pid in pids:
            r = self.reader.read(pid)
            if r is not None:
                start, cpu, rss = r
                readings[(pid, start)] = (cpu, rss)
        self.pids = [key[0] for key in readings]
        was_up, self.up = self.up, bool(readings)
        self._explain(was_up)
        return now, readings

    def _explain(self, was_up: bool) -> None:
        """Say why the target is missing: in the log when it goes missing (once, not every
        tick), and for /healthz and the page while it stays missing (nearest names may
        change, so it is asked again each tick; a missing target is the rare case)."""
        if self.up:
            if self.miss is not None:
                log.info("target %s found again: pid %s", self.finder.describe(),
                         ", ".join(map(str, self.pids)))
            self.miss = None
            return
        first = self.miss is None
        self.miss = self.finder.explain()
        if first or was_up:
            log.warning("%s; its series are absent until it runs", self.miss.text())

    def collect(self) -> Mapping[str, float]:
        prev_time, prev_cpu = self._prev_time, self._prev_cpu
        now, readings = self._read_all()
        self._remember(now, readings)
        if not readings:
            return {}  # no target process: its series are absent, never a fake 0
        return {
            "memory_usage": sum(rss for _, rss in readings.values()) / MIB,
            "cpu_usage": _cpu_percent(now, readings, prev_time, prev_cpu),
        }

    def warmup_seconds(self) -> float:
        if self._prev_time is None:
            return 0.0
        return max(0.0, MIN_CPU_WINDOW_S - (self._clock() - self._prev_time))

    def close(self) -> None:
        self.reader.close()


def _cpu_percent(
    now: float,
    readings: dict[tuple[int, float], tuple[float, int]],
    prev_time: float | None,
    prev_cpu: dict[tuple[int, float], float],
) -> float:
    window = None if prev_time is None else now - prev_time
    if window is not None and window >= MIN_CPU_WINDOW_S:
        delta, baseline = 0.0, False
        for key, (cpu, _) in readings.items():
            before = prev_cpu.get(key)
            if before is not None:
                delta += cpu - before
                baseline = True
            elif prev_time is not None and key[1] >= prev_time:  # started within the window
                delta += cpu
                baseline = True
            # else: found only now (e.g. a new name match); it counts from the next tick
        if baseline:
            return max(0.0, delta / window * 100.0)
    lifetime = 0.0
    for (_, start), (cpu, _) in readings.items():
        alive = now - start
        if alive > 0:
            lifetime += cpu / alive * 100.0
    return lifetime


def _build(context: SourceContext) -> ProcessSource | None:
    return None if context.finder is None else ProcessSource(context.finder)


SOURCE = SourceType(
    name="process",
    series=(MEMORY, CPU),
    build=_build,
    section="",  # configured by the shared ``target:`` section
    help="memory (RSS) and CPU % of the target's processes",
)

"""Reads every source once per tick and keeps each to what it declared.

A source that raises, or returns a key it did not declare or a value that is no finite
number, loses its own series for that tick (they are absent, not stale), is counted in
``crankshaft_collection_errors_total{source}`` and logged once per run of failures; the
other sources' series are recorded as usual.

Each source's last collection is also kept, as node_exporter keeps each collector's
(``node_scrape_collector_success``/``_duration_seconds``): whether it read, how long it
took and how many series it read, for ``crankshaft_source_up``,
``crankshaft_source_duration_seconds`` and ``crankshaft_source_series``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.sources.base import Source
from exporter.sources.targets import TargetMiss

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One source's last collection: read without error, its duration, the series it read
    (0 with ``up``: it found nothing to read, e.g. no target process or no sensor)."""

    up: bool
    seconds: float
    series: int


@dataclass(slots=True)
class Readings:
    """One tick's outcome: the values read, the keys of every source that ran (a key among
    them without a value is absent now), and the sources that failed."""

    values: dict[str, float] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)


class SourceSet:
    """The running sources, replaced as a whole on reload.  Not locked: one tick at a time."""

    def __init__(self, sources: Iterable[Source] = ()) -> None:
        self.sources: list[Source] = list(sources)
        self.errors: Counter[str] = Counter()
        self._errors_lock = threading.Lock()  # scrapes read the counts while ticks add
        self._failing: set[str] = set()
        self._health: dict[str, SourceHealth] = {}  # under _errors_lock

    def read(self) -> Readings:
        out = Readings()
        for source in self.sources:
            declared = {spec.key for spec in source.series}
            out.owned |= declared
            start = time.perf_counter()
            try:
                values = dict(source.collect())
                bad = _undeclared_or_invalid(values, declared)
                if bad:
                    raise ValueError(bad)
            except Exception as e:  # a broken source must not stop the others
                self._note(source.name, SourceHealth(False, time.perf_counter() - start, 0))
                self._fail(source, e)
                out.failed.append(source.name)
                continue
            self._note(source.name, SourceHealth(True, time.perf_counter() - start, len(values)))
            if source.name in self._failing:
                self._failing.discard(source.name)
                log.info("source %s reads again", source.name)
            out.values.update(values)
        return out

    def _fail(self, source: Source, error: Exception) -> None:
        self.count_error(source.name)
        if source.name not in self._failing:  # one line per run of failures, not per tick
            self._failing.add(source.name)
            log.warning("source %s failed, its series are absent until it reads: %s",
                        source.name, error)

    def _note(self, name: str, health: SourceHealth) -> None:
        with self._errors_lock:
            self._health[name] = health

    def health(self) -> dict[str, SourceHealth]:
        """The last collection of each running source that has run."""
        with self._errors_lock:
            return {s.name: h for s in self.sources if (h := self._health.get(s.name))}

    def count_error(self, name: str) -> None:
        with self._errors_lock:
            self.errors[name] += 1

    def error_counts(self) -> dict[str, int]:
        """Every source listed, 0 until it fails, so rate() works from the start."""
        with self._errors_lock:
            return {**{s.name: 0 for s in self.sources}, **self.errors}

    def target_up(self) -> bool | None:
        """Whether the target process exists; None if no source watches one."""
        states = [up for s in self.sources if (up := s.target_up()) is not None]
        return any(states) if states else None

    def measured_by(self) -> dict[str, str]:
        """Series key -> the name of the running source that measures it."""
        return {spec.key: s.name for s in self.sources for spec in s.series}

    def target_miss(self) -> TargetMiss | None:
        """Why the target is not found, while no source finds it."""
        if self.target_up() is not False:
            return None
        return next((m for s in self.sources if (m := s.target_miss()) is not None), None)

    def warmup_seconds(self) -> float:
        return max((s.warmup_seconds() for s in self.sources), default=0.0)

    def replace(self, sources: Iterable[Source]) -> list[Source]:
        """Install new sources; returns the old ones no longer used (to close)."""
        new = list(sources)
        old, self.sources = self.sources, new
        return [s for s in old if s not in new]

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _undeclared_or_invalid(values: Mapping[str, object], declared: set[str]) -> str:
    for key, value in values.items():
        if key not in declared:
            return f"returned {key!r}, which it does not declare"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"returned {value!r:.40} for {key!r}, not a number"
        if not math.isfinite(value):
            return f"returned {value!r} for {key!r}, not a finite number"
    return ""

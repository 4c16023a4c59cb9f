"""The one interface every source implements (node_exporter's Collector, in Python).

A source declares the series it produces (:attr:`Source.series`) and yields their values
once per collection tick.  The store, the documents, the exposition and the alert
vocabulary are built from those declarations, so a source is one file plus one
registration (:mod:`exporter.sources.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from exporter.series import SeriesSpec
from exporter.sources.targets import TargetMiss


class SourceError(Exception):
    """A source could not read this tick; the collector counts it and carries on."""


class Source(ABC):
    """Reads some series once per collection tick.

    ``collect`` returns series key -> value for what it could read now, keys from
    :attr:`series` only; it omits a series rather than invent a value (no fake zeros), and
    raises :class:`SourceError` when its data could not be read at all.  A series it omits
    is absent until it reads it again.
    """

    #: short name used in logs and in the collection-error metric's ``source`` label
    name: str = "source"
    #: what it produces
    series: tuple[SeriesSpec, ...] = ()

    @abstractmethod
    def collect(self) -> Mapping[str, float]: ...

    def target_up(self) -> bool | None:
        """Whether the watched target process exists (None: this source watches none)."""
        return None

    def target_miss(self) -> TargetMiss | None:
        """Why the watched target is not found now (None while it is, or none is watched)."""
        return None

    def warmup_seconds(self) -> float:
        """How long until a reading means something (e.g. a CPU rate needs a window); the
        collector delays its first tick by the longest of these."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - a real default, not a forgotten abstract
        """Release descriptors or sockets; the default holds none."""

"""The one interface every source implements (node_exporter's Collector, in Python)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping


class SourceError(Exception):
    """A source could not read this tick; the collector counts it and carries on."""


class Source(ABC):
    """Reads some of the seed's series once per collection tick.

    ``collect`` returns series name -> value for what it could read now; it omits a series
    rather than invent a value (no fake zeros), and raises :class:`SourceError` when its
    data could not be read at all.
    """

    #: short name used in logs and in the collection-error metric's ``source`` label
    name: str = "source"

    @abstractmethod
    def collect(self) -> Mapping[str, float]: ...

    def warmup_seconds(self) -> float:
        """How long until a reading means something (e.g. a CPU rate needs a window); the
        collector delays its first tick by the longest of these."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - a real default, not a forgotten abstract
        """Release descriptors or sockets; the default holds none."""

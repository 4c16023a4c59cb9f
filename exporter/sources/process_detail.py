"""Process detail of the target: threads, open descriptors, storage I/O and context
switches, summed over the target's processes.

What a head unit's service leaks first shows here before it shows in RSS: threads that are
never joined, descriptors that are never closed.  A number the exporter may not read (I/O
counters of another user's process) is absent, never 0.  The readers (psutil, and a faster
/proc one on Linux) are in :mod:`exporter.sources.readers.process_detail`.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.series import COUNTER, SeriesSpec
from exporter.sources.base import Source
from exporter.sources.readers.process_detail import (
    Detail,
    ProcDetailReader,
    PsutilDetailReader,
    default_detail_reader,
    fd_dir_size_counts,
)
from exporter.sources.registry import SourceContext, SourceType
from exporter.sources.targets import ProcessFinder

__all__ = [
    "SERIES",
    "Detail",
    "ProcDetailReader",
    "ProcessDetailSource",
    "PsutilDetailReader",
    "default_detail_reader",
    "fd_dir_size_counts",
]

THREADS = SeriesSpec(
    key="process_threads",
    metric="crankshaft_process_threads",
    help="Threads of the target's processes",
    unit="count",
    json_key="threads",
    csv_column="threads",
    whole=True,
)
OPEN_FDS = SeriesSpec(
    key="process_open_fds",
    metric="crankshaft_process_open_fds",
    help="Open file descriptors of the target's processes",
    unit="count",
    json_key="open_fds",
    csv_column="open_fds",
    whole=True,
)
READ_BYTES = SeriesSpec(
    key="process_read_bytes",
    metric="crankshaft_process_io_read_bytes",
    help="Bytes the target's processes caused to be read from storage",
    unit="bytes",
    kind=COUNTER,
    json_key="io_read_bytes",
    csv_column="io_read_bytes",
    alert=False,
    whole=True,
    prom_unit="bytes",
)
WRITTEN_BYTES = SeriesSpec(
    key="process_written_bytes",
    metric="crankshaft_process_io_written_bytes",
    help="Bytes the target's processes caused to be written to storage",
    unit="bytes",
    kind=COUNTER,
    json_key="io_written_bytes",
    csv_column="io_written_bytes",
    alert=False,
    whole=True,
    prom_unit="bytes",
)
_SWITCHES = "crankshaft_process_context_switches"
_SWITCHES_HELP = "Context switches of the target's processes, by kind"
VOLUNTARY = SeriesSpec(
    key="process_voluntary_context_switches",
    metric=_SWITCHES,
    help=_SWITCHES_HELP,
    unit="count",
    kind=COUNTER,
    labels=(("kind", "voluntary"),),
    json_key="voluntary_context_switches",
    csv_column="voluntary_context_switches",
    alert=False,
    whole=True,
)
INVOLUNTARY = SeriesSpec(
    key="process_involuntary_context_switches",
    metric=_SWITCHES,
    help=_SWITCHES_HELP,
    unit="count",
    kind=COUNTER,
    labels=(("kind", "involuntary"),),
    json_key="involuntary_context_switches",
    csv_column="involuntary_context_switches",
    alert=False,
    whole=True,
)
SERIES = (THREADS, OPEN_FDS, READ_BYTES, WRITTEN_BYTES, VOLUNTARY, INVOLUNTARY)


class ProcessDetailSource(Source):
    name = "process_detail"
    series = SERIES

    def __init__(
        self,
        finder: ProcessFinder,
        reader: ProcDetailReader | PsutilDetailReader | None = None,
    ) -> None:
        self.finder = finder
        self.reader = reader if reader is not None else default_detail_reader()
        self._known: set[int] = set()

    def collect(self) -> Mapping[str, float]:
        pids = self.finder.find()
        gone = self._known - set(pids)
        if gone:
            self.reader.forget(gone)
        self._known = set(pids)
        sums: dict[str, float] = {}
        unreadable: set[str] = set()
        for pid in pids:
            detail = self.reader.read(pid)
            if detail is None:
                continue  # gone between listing and reading: it counts from the next tick
            for key, value in detail.items():
                if value is None:
                    unreadable.add(key)
                else:
                    sums[key] = sums.get(key, 0.0) + value
        # A sum that misses a process would read as a drop: leave such a series out.
        return {k: v for k, v in sums.items() if k not in unreadable}

    def close(self) -> None:
        self.reader.close()


def _build(context: SourceContext) -> ProcessDetailSource | None:
    return None if context.finder is None else ProcessDetailSource(context.finder)


SOURCE = SourceType(
    name="process_detail",
    series=SERIES,
    build=_build,
    help="threads, open file descriptors, storage read/written bytes and context switches of "
    "the target's processes (through psutil), summed like memory and CPU",
)

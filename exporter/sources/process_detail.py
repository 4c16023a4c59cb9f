"""Process detail of the target through psutil: threads, open descriptors, storage I/O and
context switches, summed over the target's processes.

What a head unit's service leaks first shows here before it shows in RSS: threads that are
never joined, descriptors that are never closed.  A number the exporter may not read (I/O
counters of another user's process) is absent, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil

from exporter.series import COUNTER, SeriesSpec
from exporter.sources.base import Source
from exporter.sources.registry import SourceContext, SourceType
from exporter.sources.targets import ProcessFinder

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

    def __init__(self, finder: ProcessFinder) -> None:
        self.finder = finder
        self._procs: dict[int, psutil.Process] = {}

    def collect(self) -> Mapping[str, float]:
        pids = self.finder.find()
        for gone in self._procs.keys() - set(pids):
            del self._procs[gone]
        sums: dict[str, float] = {}
        unreadable: set[str] = set()
        for pid in pids:
            for key, value in self._read(pid).items():
                if value is None:
                    unreadable.add(key)
                else:
                    sums[key] = sums.get(key, 0.0) + value
        # A sum that misses a process would read as a drop: leave such a series out.
        return {k: v for k, v in sums.items() if k not in unreadable}

    def _read(self, pid: int) -> dict[str, float | None]:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                out: dict[str, float | None] = {"process_threads": proc.num_threads()}
                switches = proc.num_ctx_switches()
                out["process_voluntary_context_switches"] = switches.voluntary
                out["process_involuntary_context_switches"] = switches.involuntary
                out["process_open_fds"] = _optional(proc.num_fds)
                io = _optional(proc.io_counters)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return {}  # gone between listing and reading: it counts from the next tick
        except (psutil.Error, OSError):
            return {key: None for key in ("process_threads", *_PER_PROCESS)}
        out["process_read_bytes"] = None if io is None else io.read_bytes
        out["process_written_bytes"] = None if io is None else io.write_bytes
        return out


_PER_PROCESS = (
    "process_open_fds",
    "process_read_bytes",
    "process_written_bytes",
    "process_voluntary_context_switches",
    "process_involuntary_context_switches",
)


def _optional(read):  # type: ignore[no-untyped-def]
    """A reading psutil may refuse (not our process, or not on this platform): None."""
    try:
        return read()
    except (psutil.AccessDenied, NotImplementedError, AttributeError, OSError):
        return None


def _build(context: SourceContext) -> ProcessDetailSource | None:
    finder = context.target.finder()
    return None if finder is None else ProcessDetailSource(finder)


SOURCE = SourceType(
    name="process_detail",
    series=SERIES,
    build=_build,
    help="threads, open descriptors, storage I/O and context switches of the target",
)

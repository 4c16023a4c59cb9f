"""Process detail: threads, descriptors, storage I/O and context switches of the target,
summed over its processes, and absent (never 0) while it is down; the Linux reader and
psutil's give the same numbers for the same process."""

from __future__ import annotations

import os
import re
import threading
import uuid

import psutil
import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.sources.process_detail import ProcessDetailSource
from exporter.sources.readers.process_detail import ProcDetailReader, PsutilDetailReader
from exporter.sources.targets import CmdlineFinder, PidFinder, ProcessFinder
from tests.helpers import Sleeper

KEYS = {
    "process_threads",
    "process_open_fds",
    "process_read_bytes",
    "process_written_bytes",
    "process_voluntary_context_switches",
    "process_involuntary_context_switches",
}
FAMILIES = (
    "crankshaft_process_threads",
    "crankshaft_process_open_fds",
    "crankshaft_process_io_read_bytes_total",
    "crankshaft_process_io_written_bytes_total",
    "crankshaft_process_context_switches_total",
)

@pytest.fixture
def marker() -> str:
    return f"crankshaft-detail-{uuid.uuid4().hex}"


needs_proc = pytest.mark.skipif(not ProcDetailReader.available(), reason="no /proc here")
READERS = [
    pytest.param(PsutilDetailReader, id="psutil"),
    pytest.param(ProcDetailReader, id="procfs", marks=needs_proc),
]


@pytest.fixture(params=READERS)
def reader_type(request: pytest.FixtureRequest) -> type:
    """Each reader in turn: psutil's (the portable one) and the Linux one."""
    return request.param


def samples(text: str) -> dict[str, float]:
    """Sample lines of the process-detail families: "name{labels}" -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith("crankshaft_process_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_this_process_in_detail(reader_type):
    pid = os.getpid()
    release = threading.Event()
    worker = threading.Thread(target=release.wait)  # at least two threads, for sure
    worker.start()
    try:
        with open(__file__, "rb"):  # at least one descriptor open, for sure
            values = ProcessDetailSource(PidFinder(pid), reader_type()).collect()
            fds = psutil.Process(pid).num_fds()
    finally:
        release.set()
        worker.join()
    assert set(values) == KEYS
    assert values["process_threads"] >= 2
    assert values["process_open_fds"] > 0
    assert abs(values["process_open_fds"] - fds) <= 2  # pytest may open/close one meanwhile
    assert values["process_voluntary_context_switches"] > 0
    assert values["process_involuntary_context_switches"] >= 0
    assert values["process_read_bytes"] >= 0 and values["process_written_bytes"] >= 0
    assert all(float(v).is_integer() for v in values.values())


def test_counters_are_exposed_with_total_and_threads_as_gauges():
    endpoint = MetricsEndpoint(sources=[ProcessDetailSource(PidFinder(os.getpid()))], rules=[])
    endpoint.collect_now()
    text = endpoint.export_prometheus()
    got = samples(text)
    assert got["crankshaft_process_threads"] >= 1
    assert got["crankshaft_process_open_fds"] > 0
    assert got['crankshaft_process_context_switches_total{kind="voluntary"}'] > 0
    assert 'crankshaft_process_context_switches_total{kind="involuntary"}' in got
    assert "crankshaft_process_io_read_bytes_total" in got
    assert "crankshaft_process_io_written_bytes_total" in got
    assert "# TYPE crankshaft_process_context_switches_total counter" in text
    assert "# TYPE crankshaft_process_threads gauge" in text
    openmetrics = endpoint.export_prometheus(openmetrics=True)
    assert "# TYPE crankshaft_process_io_read_bytes counter" in openmetrics
    assert "# UNIT crankshaft_process_io_read_bytes bytes" in openmetrics
    assert re.search(r"^crankshaft_process_io_read_bytes_total \d", openmetrics, re.M)
    doc = endpoint.get_metrics()
    assert doc["threads"]["latest"] >= 1 and doc["open_fds"]["latest"] > 0
    endpoint.close()


def test_summed_over_the_target_processes(sleepers, marker, reader_type):
    sleepers.extend([Sleeper(marker), Sleeper(marker)])
    each = [ProcessDetailSource(PidFinder(s.pid), reader_type()).collect() for s in sleepers]
    both = ProcessDetailSource(CmdlineFinder(marker), reader_type()).collect()
    assert set(both) == KEYS
    for key in KEYS:  # asleep: nothing moved between the reads
        assert both[key] == each[0][key] + each[1][key], key
    assert both["process_threads"] == 2  # one thread each
    direct = [psutil.Process(s.pid) for s in sleepers]
    assert both["process_open_fds"] == sum(p.num_fds() for p in direct)
    assert both["process_voluntary_context_switches"] == sum(
        p.num_ctx_switches().voluntary for p in direct
    )


def test_this_process_and_a_child_are_summed(sleepers, marker, reader_type):
    sleepers.append(Sleeper(marker))

    class Both(ProcessFinder):
        def find(self) -> list[int]:
            return [os.getpid(), sleepers[0].pid]

        def describe(self) -> str:
            return "this test and its child"

    child = ProcessDetailSource(PidFinder(sleepers[0].pid), reader_type()).collect()
    me_threads = psutil.Process().num_threads()
    both = ProcessDetailSource(Both(), reader_type()).collect()
    assert both["process_threads"] == me_threads + child["process_threads"]
    assert both["process_open_fds"] > child["process_open_fds"]


def test_absent_while_the_target_is_down(sleepers, marker, reader_type):
    sleepers.append(Sleeper(marker))
    source = ProcessDetailSource(CmdlineFinder(marker), reader_type())
    endpoint = MetricsEndpoint(sources=[source], rules=[])
    endpoint.collect_now()
    assert set(endpoint.store.current) >= KEYS
    assert len(samples(endpoint.export_prometheus())) == 6

    sleepers.pop().stop()
    assert ProcessDetailSource(CmdlineFinder(marker), reader_type()).collect() == {}
    endpoint.collect_now()
    assert samples(endpoint.export_prometheus()) == {}
    assert samples(endpoint.export_prometheus(openmetrics=True)) == {}
    doc = endpoint.get_metrics()
    for key in ("threads", "open_fds", "io_read_bytes", "voluntary_context_switches"):
        assert doc[key]["latest"] is None, key
        assert doc[key]["sample_count"] == 1, key  # the history keeps the sample before

    sleepers.append(Sleeper(marker))  # back under a new PID
    endpoint.collect_now()
    assert samples(endpoint.export_prometheus())["crankshaft_process_threads"] == 1
    endpoint.close()


def test_a_number_that_cannot_be_read_for_one_process_is_absent(sleepers, marker, monkeypatch):
    """I/O counters of another user's process are refused: the sum would read as a drop,
    so the series is absent while the others are summed as usual."""
    sleepers.extend([Sleeper(marker), Sleeper(marker)])
    refused = sleepers[1].pid
    real = psutil.Process.io_counters

    def io_counters(self):  # type: ignore[no-untyped-def]
        if self.pid == refused:
            raise psutil.AccessDenied(self.pid)
        return real(self)

    monkeypatch.setattr(psutil.Process, "io_counters", io_counters)
    values = ProcessDetailSource(CmdlineFinder(marker), PsutilDetailReader()).collect()
    assert set(values) == KEYS - {"process_read_bytes", "process_written_bytes"}
    assert values["process_threads"] == 2


def test_a_process_gone_between_listing_and_reading_counts_from_the_next_tick(
    sleepers, marker, reader_type
):
    sleepers.extend([Sleeper(marker), Sleeper(marker)])
    pids = [s.pid for s in sleepers]

    class Listed(ProcessFinder):
        def find(self) -> list[int]:
            return pids

        def describe(self) -> str:
            return "two children"

    source = ProcessDetailSource(Listed(), reader_type())
    assert source.collect()["process_threads"] == 2
    sleepers.pop().stop()  # still listed, but gone
    values = source.collect()
    assert values["process_threads"] == 1
    assert set(values) == KEYS


@pytest.mark.parametrize("missing", [("io_counters",), ("num_fds",), ("io_counters", "num_fds")])
def test_a_platform_without_a_reading_leaves_only_its_series_out(sleepers, marker, monkeypatch,
                                                                 missing):
    """psutil has no ``io_counters`` on macOS and no ``num_fds`` on Windows: the source reads
    what the platform offers instead of failing as a whole."""
    sleepers.append(Sleeper(marker))
    for name in missing:
        monkeypatch.delattr(psutil.Process, name)
    values = ProcessDetailSource(PidFinder(sleepers[0].pid), PsutilDetailReader()).collect()
    gone = set()
    if "io_counters" in missing:
        gone |= {"process_read_bytes", "process_written_bytes"}
    if "num_fds" in missing:
        gone.add("process_open_fds")
    assert set(values) == KEYS - gone
    assert values["process_threads"] == 1


@needs_proc
def test_the_linux_reader_and_psutil_give_the_same_numbers(sleepers, marker):
    """The Linux reader may replace psutil's only while both give the same numbers for the
    same process; asleep, a process' numbers do not move between the two reads."""
    sleepers.extend([Sleeper(marker), Sleeper(marker)])
    for sleeper in sleepers:
        fast, portable = ProcDetailReader(), PsutilDetailReader()
        try:
            by_proc = fast.read(sleeper.pid)
            by_psutil = portable.read(sleeper.pid)
            again = fast.read(sleeper.pid)  # the kept descriptors read the same again
        finally:
            fast.close()
            portable.close()
        assert by_proc is not None and set(by_proc) == KEYS
        assert all(v is not None for v in by_proc.values()), by_proc
        assert by_proc == by_psutil == again
    fast_sum = ProcessDetailSource(CmdlineFinder(marker), ProcDetailReader()).collect()
    psutil_sum = ProcessDetailSource(CmdlineFinder(marker), PsutilDetailReader()).collect()
    assert fast_sum == psutil_sum and set(fast_sum) == KEYS


def _io_refused(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            f.read()
    except PermissionError:
        return True
    except OSError:
        return False
    return False


@needs_proc
@pytest.mark.skipif(not _io_refused(1), reason="this user may read PID 1's I/O counters")
def test_a_process_whose_io_is_refused_has_no_io_series_with_either_reader():
    """PID 1 belongs to another user (or is protected): its I/O is refused by the kernel,
    so those series are absent, never 0, and both readers agree on what is there."""
    keys = []
    for reader in (ProcDetailReader(), PsutilDetailReader()):
        values = ProcessDetailSource(PidFinder(1), reader).collect()
        reader.close()
        assert "process_read_bytes" not in values and "process_written_bytes" not in values
        assert values["process_threads"] >= 1
        keys.append(set(values))
    assert keys[0] == keys[1]


@needs_proc
def test_the_linux_reader_reports_a_gone_process_as_none(sleepers, marker):
    sleepers.append(Sleeper(marker))
    reader = ProcDetailReader()
    pid = sleepers[0].pid
    assert reader.read(pid) is not None  # keeps descriptors open on its /proc files
    sleepers.pop().stop()
    assert reader.read(pid) is None  # the kept descriptor says the process is gone
    assert reader.read(pid) is None
    reader.close()

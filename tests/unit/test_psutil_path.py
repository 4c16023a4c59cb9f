"""psutil is the portable path: it must agree with the Linux fast path, find targets by pid,
pidfile, full name and command line, and carry the exporter on a platform without netlink
and the boot-time clock (simulated here by removing those attributes)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.sources import connections, process
from exporter.sources.connections import ConnectionSource
from exporter.sources.process import ProcessSource
from exporter.sources.readers import tcp_connections
from exporter.sources.readers.process_stats import ProcStatReader, PsutilReader
from exporter.sources.readers.tcp_connections import (
    NetlinkDiag,
    proc_established_connections,
    psutil_established_connections,
)
from exporter.sources.targets import CmdlineFinder, NameFinder, PidfileFinder, PidFinder
from tests.helpers import Sleeper, wait_for


@pytest.fixture
def marker() -> str:
    return f"crankshaft-psutil-{uuid.uuid4().hex}"


# --- the fast path and psutil agree ----------------------------------------------------------


needs_fast_path = pytest.mark.skipif(
    not ProcStatReader.available(), reason="no /proc/PID/stat fast path here"
)


def _read_both(pid: int) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
    """(fast path, psutil) readings of a sleeping process, with a check that nothing moved
    while both read, so the comparison is fair."""
    fast, portable = ProcStatReader(), PsutilReader()
    try:
        before = fast.read(pid)
        slow = portable.read(pid)
        after = fast.read(pid)
    finally:
        fast.close()
        portable.close()
    assert before is not None and slow is not None and after is not None
    assert before[1:] == after[1:]
    return before, slow


@needs_fast_path
def test_fast_path_and_psutil_read_the_same_cpu_seconds_and_start_time(sleepers, marker):
    sleepers.append(Sleeper(marker, burn_cpu=True))
    (fast_start, fast_cpu, _), (slow_start, slow_cpu, _) = _read_both(sleepers[0].pid)
    assert fast_cpu > 0  # it burnt CPU before sleeping: not a pair of zeros
    # Both count clock ticks, utime+stime.  psutil divides each by CLK_TCK before adding,
    # the fast path adds the ticks first: the same ticks, maybe one rounding apart as floats.
    clk_tck = os.sysconf("SC_CLK_TCK")
    assert round(fast_cpu * clk_tck) == round(slow_cpu * clk_tck)
    assert fast_cpu == pytest.approx(slow_cpu, rel=0, abs=1e-9)
    # Start times are on different clocks: the fast path's counts from boot, psutil's
    # create_time from the epoch (its boot time, /proc/stat's btime, plus the same start
    # ticks).  They name the same instant within one tick; another /proc/PID/stat field
    # (itrealvalue, vsize, ...) would be far off.
    since_boot = slow_start - psutil.boot_time()
    assert fast_start > 0
    assert abs(fast_start - since_boot) <= 1 / clk_tck, (fast_start, since_boot)


# Seen on Linux 6.18: /proc/PID/stat's rss field is the kernel's approximate per-CPU count,
# 23-85 pages below statm's resident and VmRSS (what psutil and the seed read) for a
# sleeping Python, and it stays so.  A reader that took RSS from stat would fail here; with
# one process it might agree by chance (no per-CPU remainder), with four it will not.
SAME_RSS_PROCESSES = 4


@needs_fast_path
def test_fast_path_and_psutil_read_the_same_rss(sleepers, marker):
    sleepers.extend(Sleeper(marker, burn_cpu=True) for _ in range(SAME_RSS_PROCESSES))
    for sleeper in sleepers:
        (_, _, fast_rss), (_, _, slow_rss) = _read_both(sleeper.pid)
        assert slow_rss > 1024 * 1024  # a Python interpreter: megabytes
        assert fast_rss == slow_rss


@needs_fast_path
def test_process_source_gives_the_same_memory_with_either_reader(sleepers, marker):
    sleepers.extend(Sleeper(marker, burn_cpu=True) for _ in range(SAME_RSS_PROCESSES))
    for sleeper in sleepers:
        finder = PidFinder(sleeper.pid)
        fast = ProcessSource(finder, reader=ProcStatReader())
        portable = ProcessSource(finder, reader=PsutilReader())
        try:
            assert fast.collect()["memory_usage"] == portable.collect()["memory_usage"]
        finally:
            fast.close()
            portable.close()


def test_psutil_reads_what_the_kernel_calls_vmrss(sleepers, marker):
    """The seed's memory figure is VmRSS; psutil's reader gives exactly that."""
    sleepers.append(Sleeper(marker, burn_cpu=True))
    pid = sleepers[0].pid
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc/PID/status here")
    reader = PsutilReader()
    reading = reader.read(pid)
    vmrss_kb = int(
        next(ln for ln in status.read_text().splitlines() if ln.startswith("VmRSS:")).split()[1]
    )
    assert reading is not None and reading[2] == vmrss_kb * 1024


def test_psutil_reader_reports_a_gone_process_as_none(sleepers, marker):
    sleepers.append(Sleeper(marker, burn_cpu=True))
    reader = PsutilReader()
    pid = sleepers[0].pid
    assert reader.read(pid) is not None
    sleepers.pop().stop()
    assert reader.read(pid) is None


# --- finders through psutil -------------------------------------------------------------------


def test_pid_finder(sleepers, marker):
    sleepers.append(Sleeper(marker, burn_cpu=True))
    pid = sleepers[0].pid
    assert PidFinder(pid).find() == [pid]
    sleepers.pop().stop()  # reaped: the PID no longer exists
    assert PidFinder(pid).find() == []


def test_pidfile_finder_follows_a_rewritten_pidfile(tmp_path, sleepers, marker):
    pidfile = tmp_path / "service.pid"
    finder = PidfileFinder(pidfile)
    assert finder.find() == []  # no file yet
    sleepers.append(Sleeper(marker, burn_cpu=True))
    pidfile.write_text(f"{sleepers[0].pid}\n")
    assert finder.find() == [sleepers[0].pid]
    sleepers.pop().stop()
    assert finder.find() == []  # stale pidfile
    sleepers.append(Sleeper(marker, burn_cpu=True))
    pidfile.write_text(f"{sleepers[0].pid}\n")
    assert finder.find() == [sleepers[0].pid]  # the restarted service's new PID


def _run_as(exe: Path) -> subprocess.Popen:
    proc = subprocess.Popen([str(exe), "60"])
    # Popen returns once exec has closed its pipe, just before the kernel renames the
    # process: wait for the new name rather than race it.
    wait_for(lambda: psutil.Process(proc.pid).name() == exe.name, f"{exe.name} to start")
    return proc


def test_name_finder_compares_the_full_name_not_the_truncated_comm(tmp_path):
    sleep = shutil.which("sleep")
    assert sleep is not None
    long_name = "crankshaft-very-long-name"
    other_name = "crankshaft-very-other-name"  # the same first 15 bytes
    assert long_name[:15] == other_name[:15] and len(long_name.encode()) > 15
    exes = []
    for name in (long_name, other_name):
        exe = tmp_path / name
        shutil.copy(sleep, exe)
        exes.append(exe)
    procs = [_run_as(exe) for exe in exes]
    try:
        if Path(f"/proc/{procs[0].pid}/comm").exists():  # the kernel really did truncate
            comm = Path(f"/proc/{procs[0].pid}/comm").read_text().strip()
            assert comm == long_name[:15]
        assert NameFinder(long_name).find() == [procs[0].pid]
        assert NameFinder(other_name).find() == [procs[1].pid]
        # The truncated comm is not the process' name: it matches neither.
        assert NameFinder(long_name[:15]).find() == []
    finally:
        for p in procs:
            p.kill()
            p.wait()




def test_a_zombie_matched_by_name_is_not_a_running_target(tmp_path):
    sleep = shutil.which("sleep")
    assert sleep is not None
    name = f"cz{uuid.uuid4().hex[:10]}"  # short: a zombie's name is its comm, kept on exit
    exe = tmp_path / name
    shutil.copy(sleep, exe)
    proc = _run_as(exe)
    try:
        assert NameFinder(name).find() == [proc.pid]
        source = ProcessSource(NameFinder(name), reader=PsutilReader())
        proc.kill()  # not waited for: a zombie until reaped
        wait_for(
            lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE,
            "the child to become a zombie",
        )
        values = source.collect()
        assert NameFinder(name).find() == []
        assert values == {} and source.target_up() is False
    finally:
        proc.kill()
        proc.wait()


def test_cmdline_finder_matches_a_regex_over_the_arguments(sleepers, marker):
    sleepers.extend([Sleeper(marker, "one", burn_cpu=True), Sleeper(marker, "two", burn_cpu=True)])
    assert CmdlineFinder(marker).find() == sorted(s.pid for s in sleepers)
    assert CmdlineFinder(f"{marker} tw[o]$").find() == [sleepers[1].pid]
    assert CmdlineFinder(f"{marker} three").find() == []


def test_child_found_again_under_a_new_pid_after_a_restart(sleepers, marker):
    sleepers.append(Sleeper(marker, burn_cpu=True))
    source = ProcessSource(CmdlineFinder(marker), reader=PsutilReader())
    first = source.collect()
    assert source.target_up() is True and source.pids == [sleepers[0].pid]
    assert first["memory_usage"] > 1  # MB of a Python interpreter
    old_pid = sleepers[0].pid

    sleepers.pop().stop()
    assert source.collect() == {}  # absent, never a fake 0
    assert source.target_up() is False

    sleepers.append(Sleeper(marker, burn_cpu=True))
    assert sleepers[0].pid != old_pid
    back = source.collect()
    assert source.target_up() is True and source.pids == [sleepers[0].pid]
    assert back["memory_usage"] > 1 and back["cpu_usage"] >= 0
    source.close()


# --- a platform without netlink and without the boot-time clock ---------------------------


@pytest.fixture
def no_linux_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    """What psutil's other platforms look like to the exporter: no AF_NETLINK, no
    CLOCK_BOOTTIME (``HAS_NETLINK`` is computed at import, so it is patched too)."""
    if hasattr(socket, "AF_NETLINK"):
        monkeypatch.delattr(socket, "AF_NETLINK")
    if hasattr(time, "CLOCK_BOOTTIME"):
        monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    for module in (connections, tcp_connections):
        monkeypatch.setattr(module, "HAS_NETLINK", False)


def _messages(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if fragment in r.getMessage()]


def test_endpoint_builds_and_collects_through_psutil(no_linux_extras, caplog):
    caplog.set_level(logging.INFO)
    assert not ProcStatReader.available()
    endpoint = MetricsEndpoint()
    try:
        (source,) = endpoint.sources.sources
        assert isinstance(source, ProcessSource)
        assert isinstance(source.reader, PsutilReader)
        for _ in range(3):
            endpoint.collect_now()
        summary = endpoint.get_metrics_summary()
        assert summary["memory_mb"] > 1  # this test process
        assert summary["cpu_percent"] is not None and summary["cpu_percent"] >= 0
        text = endpoint.export_prometheus()
        assert "\ncrankshaft_memory_usage_mb " in text
        assert "\ncrankshaft_cpu_usage_percent " in text
        assert "crankshaft_target_up 1.0" in text
        assert endpoint.get_metrics()["memory"]["sample_count"] == 3
    finally:
        endpoint.close()
    said = _messages(caplog, "through psutil")
    assert len(said) == 1, said  # said once, not per tick
    assert "boot-time clock" in said[0]


def _can_bind(host: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


def _loopback_connections(stack: ExitStack, n: int, host: str = "127.0.0.1", port: int = 0) -> int:
    """A listener on a loopback address with ``n`` accepted connections; its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
    srv.bind((host, port))
    srv.listen(16)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    for _ in range(n):
        stack.enter_context(socket.create_connection((host, port), timeout=10))
        stack.enter_context(srv.accept()[0])
    return port


def test_connection_source_counts_through_the_fallback(no_linux_extras, caplog):
    caplog.set_level(logging.INFO)
    with ExitStack() as stack:
        port = _loopback_connections(stack, 3)
        source = ConnectionSource(port)
        values = source.collect()
        assert values == {"active_connections": 3.0, "total_connections": 3.0}
        assert source.collect()["active_connections"] == 3.0
        source.close()
    said = _messages(caplog, "no netlink")
    assert len(said) == 1, said


def test_psutil_answers_where_there_is_no_proc_net(monkeypatch, caplog):
    with ExitStack() as stack:
        port = _loopback_connections(stack, 4)
        expected = 4
        if _can_bind("::1"):  # the same port on the IPv6 loopback: both families at once
            _loopback_connections(stack, 2, "::1", port)
            expected += 2
        try:
            with NetlinkDiag() as diag:
                by_netlink = diag.established(port)
        except OSError as e:  # e.g. refused by a seccomp filter
            pytest.skip(f"no sock_diag netlink here to compare with: {e}")
        by_proc = proc_established_connections(port)

        caplog.set_level(logging.INFO)
        monkeypatch.delattr(socket, "AF_NETLINK")
        monkeypatch.delattr(time, "CLOCK_BOOTTIME")
        for module in (connections, tcp_connections):
            monkeypatch.setattr(module, "HAS_NETLINK", False)
        missing = str(Path("/nonexistent") / uuid.uuid4().hex)
        monkeypatch.setattr(
            tcp_connections,
            "_PROC_FILES",
            ((socket.AF_INET, missing + "/tcp"), (socket.AF_INET6, missing + "/tcp6")),
        )
        by_psutil = psutil_established_connections(port)
        source = ConnectionSource(port)
        values = source.collect()
        source.close()
    assert len(by_netlink) == expected
    assert by_psutil == by_netlink == by_proc
    assert values["active_connections"] == float(expected)
    assert len(_messages(caplog, "no netlink")) == 1


def test_process_source_default_reader_is_psutil_without_the_boot_clock(
    no_linux_extras, sleepers, marker
):
    sleepers.append(Sleeper(marker, burn_cpu=True))
    source = ProcessSource(PidFinder(sleepers[0].pid))
    assert isinstance(source.reader, PsutilReader)
    values = source.collect()
    assert values["memory_usage"] > 1
    # Too soon after priming for a window: the lifetime average, which needs the start time
    # and the clock on the same (epoch) scale; the child burnt CPU, so it is above 0.
    assert values["cpu_usage"] > 0
    source.close()
    assert process.default_reader().name == "psutil"

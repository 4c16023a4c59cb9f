"""A real child process as the target: sampled, growing, spinning, restarted under a new PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from exporter.endpoint import MetricsEndpoint
from exporter.sources.process import ProcessSource, ProcStatReader, parse_stat
from exporter.sources.targets import CmdlineFinder, NameFinder, PidfileFinder, PidFinder

CHILD = r"""
import sys, threading
blocks = []
print("ready", flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "alloc":
        blocks.append(b"\x01" * (int(arg[0]) * 1024 * 1024))  # written, so resident
    elif cmd == "spin":
        def spin():
            while True:
                pass
        threading.Thread(target=spin, daemon=True).start()
    print("ok", flush=True)
"""


class Child:
    """A controllable target process; ``marker`` makes its command line unique."""

    def __init__(self, marker: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, marker],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def do(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def cpu_ticks(self) -> int:
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            return parse_stat(f.read())[1]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def marker() -> str:
    return f"crankshaft-test-{uuid.uuid4().hex}"


@pytest.fixture
def children():
    started: list[Child] = []
    yield started
    for c in started:
        c.stop()


CLK_TCK = os.sysconf("SC_CLK_TCK")
boottime = ProcStatReader.clock


class SteppedClock:
    """Boot-time clock whose ``skip`` jumps ahead: lets a test open an idle CPU window
    without sleeping (CPU ticks do not advance in a skipped second)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return boottime() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds


def test_child_is_sampled_grows_spins_and_is_found_after_restart(marker, children):
    children.append(Child(marker))
    clock = SteppedClock()
    source = ProcessSource(CmdlineFinder(marker), clock=clock)
    clock.skip(10)
    idle = source.collect()
    assert source.up and source.pids == [children[0].pid]
    assert idle["memory_usage"] > 1
    assert idle["cpu_usage"] < 5, "an idle child blocked on stdin uses (almost) no CPU"

    # Memory: resident set grows by what the child allocates and writes.
    children[0].do("alloc 64")
    window_opened = clock()
    grown = source.collect()
    assert grown["memory_usage"] - idle["memory_usage"] >= 60

    # CPU: once the child has burnt half a second of CPU since the last reading, the
    # window's CPU % is at least that CPU time over the window's wall time (a real
    # wall-clock window, nothing skipped; a loaded machine makes the window longer, so
    # the bound is computed, not a fixed percentage).
    children[0].do("spin")
    start_ticks = children[0].cpu_ticks()
    while children[0].cpu_ticks() - start_ticks < CLK_TCK // 2:
        os.sched_yield()
    spun = (children[0].cpu_ticks() - start_ticks) / CLK_TCK
    busy = source.collect()
    window = clock() - window_opened
    assert busy["cpu_usage"] >= 100 * spun / window - 2, (busy, spun, window)
    assert busy["cpu_usage"] > idle["cpu_usage"]

    # The target exits: no sample (never a fake 0) and target down ...
    old_pid = children[0].pid
    children.pop().stop()
    assert source.collect() == {}
    assert not source.up

    # ... and comes back under a new PID: found again on the next tick.
    children.append(Child(marker))
    assert children[0].pid != old_pid
    back = source.collect()
    assert source.up and source.pids == [children[0].pid]
    assert back["memory_usage"] > 1


def test_several_matching_processes_are_summed(marker, children):
    children.extend([Child(marker), Child(marker)])
    one = ProcessSource(PidFinder(children[0].pid)).collect()["memory_usage"]
    two = ProcessSource(PidFinder(children[1].pid)).collect()["memory_usage"]
    both = ProcessSource(CmdlineFinder(marker))
    assert sorted(both.pids) == sorted(c.pid for c in children)
    total = both.collect()["memory_usage"]
    assert total == pytest.approx(one + two, rel=0.1)


def test_first_sample_is_meaningful_not_zero(marker, children):
    """The seed's first CPU sample is 0; ours reports the lifetime average instead."""
    children.append(Child(marker))
    children[0].do("spin")
    start_ticks = children[0].cpu_ticks()
    while children[0].cpu_ticks() - start_ticks < CLK_TCK // 5:
        os.sched_yield()
    first = ProcessSource(PidFinder(children[0].pid)).collect()
    assert first["cpu_usage"] > 10


def test_pidfile_target_follows_the_file(tmp_path, marker, children):
    pidfile = tmp_path / "target.pid"
    finder = PidfileFinder(pidfile)
    assert finder.find() == []  # no file yet
    pidfile.write_text("garbage\n")
    assert finder.find() == []
    children.append(Child(marker))
    pidfile.write_text(f"{children[0].pid}\n")
    assert finder.find() == [children[0].pid]
    children.pop().stop()
    assert finder.find() == []  # stale pidfile: process gone


def test_name_target_matches_comm(tmp_path, children):
    name = f"cs{uuid.uuid4().hex[:10]}"
    exe = tmp_path / name
    shutil.copy(shutil.which("sleep"), exe)
    procs = [subprocess.Popen([str(exe), "60"]) for _ in range(2)]
    try:
        # Popen returns once exec has closed its pipe, which the kernel does just before it
        # renames the process: wait for the new comm rather than race it.
        for p in procs:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{p.pid}/comm").read_text().strip() != name:
                assert time.monotonic() < deadline, "child never took its new name"
                os.sched_yield()
        assert sorted(NameFinder(name).find()) == sorted(p.pid for p in procs)
        assert NameFinder(name + "x").find() == []
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_endpoint_with_vanished_target_records_nothing_and_holds_alerts(marker, children):
    from exporter.alerts.rules import AlertRule

    children.append(Child(marker))
    endpoint = MetricsEndpoint(
        sources=[ProcessSource(CmdlineFinder(marker))],
        rules=[AlertRule("memory_usage", 1.0, 100000.0, "tiny threshold"),
               AlertRule("target_down", None, 0.0, "Target process not running")],
    )
    endpoint.collect_now()
    assert endpoint.target_up() is True
    assert [a["metric"] for a in endpoint.get_alerts()] == ["memory_usage"]
    samples_before = endpoint.get_metrics()["memory"]["sample_count"]

    children.pop().stop()
    endpoint.collect_now()
    assert endpoint.target_up() is False
    doc = endpoint.get_metrics()
    assert doc["memory"]["sample_count"] == samples_before  # no fake sample while down
    alerts = {a["metric"]: a for a in endpoint.get_alerts()}
    assert set(alerts) == {"memory_usage", "target_down"}  # memory alert held, not resolved
    assert "crankshaft_target_up 0.0" in endpoint.export_prometheus()
    endpoint.close()


def test_systemd_unit_target_reads_its_cgroup(tmp_path, marker, children):
    from exporter.sources.targets import SystemdUnitFinder

    children.extend([Child(marker), Child(marker)])
    unit = tmp_path / "system.slice" / "demo.service"
    (unit / "sub").mkdir(parents=True)
    (unit / "cgroup.procs").write_text(f"{children[0].pid}\n")
    (unit / "sub" / "cgroup.procs").write_text(f"{children[1].pid}\n")
    finder = SystemdUnitFinder("demo", cgroup_root=tmp_path)
    assert sorted(finder.find()) == sorted(c.pid for c in children)
    assert SystemdUnitFinder("absent.service", cgroup_root=tmp_path).find() == []


def test_self_target_reads_this_process():
    source = ProcessSource(PidFinder(os.getpid()))
    rss_kb = int(
        next(line for line in Path("/proc/self/status").read_text().splitlines()
             if line.startswith("VmRSS:")).split()[1]
    )
    memory = source.collect()["memory_usage"]
    assert memory == pytest.approx(rss_kb / 1024, rel=0.05)  # the seed's VmRSS, in MB

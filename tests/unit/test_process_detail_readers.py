"""The Linux fast path of process detail reads what psutil reads: same numbers, same process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from exporter.sources.process_detail import ProcessDetailSource
from exporter.sources.readers.process_detail import (
    ProcDetailReader,
    PsutilDetailReader,
    _count_fds_by_listing,
    _count_fds_by_size,
    fd_dir_size_counts,
)
from exporter.sources.targets import PidFinder

pytestmark = pytest.mark.skipif(
    not ProcDetailReader.available(), reason="no /proc/PID/status fast path on this platform"
)

# A child that opens a few files, starts threads, writes through to disk, then blocks: while
# it waits on stdin nothing it owns moves, so two readers in a row must agree exactly.
CHILD = r"""
import os, sys, tempfile, threading
files = [open(os.devnull) for _ in range(5)]
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as f:
    f.write(b"x" * 65536); f.flush(); os.fsync(f.fileno())
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(3)]
for t in threads: t.start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
"""


@pytest.fixture
def child(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.stdin.close()
    proc.wait(10)


def test_both_readers_give_the_same_detail(child):
    fast, portable = ProcDetailReader(), PsutilDetailReader()
    try:
        first = fast.read(child.pid)
        theirs = portable.read(child.pid)
        again = fast.read(child.pid)  # nothing moved while both read: the comparison is fair
    finally:
        fast.close()
        portable.close()
    assert first == again
    assert first == theirs
    assert first["process_threads"] == 4  # main + 3
    assert first["process_open_fds"] >= 3 + 5
    assert first["process_written_bytes"] is not None


@pytest.mark.skipif(not fd_dir_size_counts(), reason="kernel older than 6.2: listing only")
def test_descriptor_count_by_folder_size_equals_the_listing_and_follows_changes(child, tmp_path):
    """The kept /proc/PID/fd descriptor is re-read each time: a file the process opens later
    counts at once, exactly as a fresh listing counts it."""
    import psutil

    kept: dict[int, int] = {}
    before = _count_fds_by_size(child.pid, kept)
    assert before == _count_fds_by_listing(child.pid, {}) == psutil.Process(child.pid).num_fds()
    extra = [open(os.devnull) for _ in range(4)]  # noqa: SIM115 - ours, not the child's
    try:
        assert _count_fds_by_size(child.pid, kept) == before  # another process's files
    finally:
        for f in extra:
            f.close()
    mine: dict[int, int] = {}
    own = _count_fds_by_size(os.getpid(), mine)
    with open(os.devnull):
        assert _count_fds_by_size(os.getpid(), mine) == own + 1
    for fd in (*kept.values(), *mine.values()):
        os.close(fd)


def test_a_process_that_is_gone_reads_as_gone_in_both(child):
    fast, portable = ProcDetailReader(), PsutilDetailReader()
    assert fast.read(child.pid) is not None and portable.read(child.pid) is not None
    child.kill()
    child.wait()
    assert fast.read(child.pid) is None
    assert portable.read(child.pid) is None


def test_what_may_not_be_read_is_absent_in_both():
    """PID 1 belongs to another user or namespace owner: whatever one reader may not read,
    neither reports, and what both may read agrees."""
    fast, portable = ProcDetailReader(), PsutilDetailReader()
    ours, theirs = fast.read(1), portable.read(1)
    assert ours is not None and theirs is not None
    assert {k for k, v in ours.items() if v is None} == {k for k, v in theirs.items() if v is None}


def test_the_source_sums_the_same_with_either_reader(child):
    """Compared whenever nothing moved while both read (the child's CPU time can tick
    between two reads on a loaded machine)."""
    finder = PidFinder(child.pid)
    fast = ProcessDetailSource(finder, reader=ProcDetailReader())
    portable = ProcessDetailSource(finder, reader=PsutilDetailReader())
    agreed = 0
    for _ in range(20):
        first = fast.collect()
        theirs = portable.collect()
        if fast.collect() == first:
            assert theirs == first
            agreed += 1
    assert agreed > 0
    assert os.getpid() != child.pid

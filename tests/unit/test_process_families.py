"""The lean process_* families beside prometheus_client's ProcessCollector: equal families,
value for value, and the library's collector wherever the short path does not hold."""

from __future__ import annotations

import gc
import os
import resource
from pathlib import Path

import pytest
from prometheus_client.process_collector import ProcessCollector

from exporter.exposition import process
from exporter.exposition.process import ProcessFamilies

SOFT, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


def fake_proc(root: Path, stat_tail: str, open_fds: int) -> str:
    """A /proc with this process's files as the library reads them."""
    (root / "stat").write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
    me = root / "self"
    (me / "fd").mkdir(parents=True)
    for i in range(open_fds):
        (me / "fd" / str(i)).write_text("")
    (me / "stat").write_text(f"4242 (crank shaft) exporter) {stat_tail}\n")
    (me / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        f"Max open files            {SOFT}                 {HARD}                 files     \n")
    return str(root)


# state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
# cstime priority nice threads itrealvalue starttime vsize rss ...
STAT = ("S 1 4242 4242 0 -1 4194560 1000 0 0 0 {utime} {stime} 0 0 20 0 7 0 {start} {vsize} "
        "{rss} 18446744073709551615 1 1 0 0 0 0 0 16781312 0 0 0 17 1 0 0 0 0 0")


@pytest.mark.parametrize("values", [
    {"utime": 123, "stime": 45, "start": 98765, "vsize": 250_000_000, "rss": 9000},
    {"utime": 0, "stime": 0, "start": 1, "vsize": 0, "rss": 0},
    {"utime": 10**12 + 7, "stime": 3, "start": 10**11, "vsize": 2**62, "rss": 2**40},
])
def test_families_equal_the_librarys_for_the_same_proc_files(
    tmp_path: Path, values: dict[str, int]
) -> None:
    proc = fake_proc(tmp_path, STAT.format(**values), open_fds=5)
    lean = ProcessFamilies(proc=proc)
    assert lean.lean
    expected = list(ProcessCollector(registry=None, proc=proc).collect())
    assert [m.name for m in expected] == list(process._EXPECTED)
    assert lean.collect() == expected
    # The file changes (procfs makes it anew at each read): the next scrape follows it.
    later = {**values, "utime": values["utime"] + 500, "rss": values["rss"] + 1}
    (tmp_path / "self" / "stat").write_text(f"4242 (crank shaft) exporter) "
                                            f"{STAT.format(**later)}\n")
    (tmp_path / "self" / "fd" / "99").write_text("")
    assert lean.collect() == list(ProcessCollector(registry=None, proc=proc).collect())
    lean.close()


def test_families_equal_the_librarys_for_this_very_process() -> None:
    """On the real /proc: read by the library, by the lean path, by the library again;
    whenever nothing moved between the two library reads, the lean one agrees."""
    lean = ProcessFamilies()
    library = ProcessCollector(registry=None)
    assert lean.lean
    agreed = 0
    for _ in range(50):
        before = list(library.collect())
        mine = lean.collect()
        after = list(library.collect())
        if before == after:
            assert mine == before
            agreed += 1
    assert agreed > 0
    lean.close()


def test_without_a_readable_proc_the_library_serves(tmp_path: Path) -> None:
    lean = ProcessFamilies(proc=str(tmp_path))  # no stat: the library gives no family
    assert not lean.lean
    assert lean.collect() == []


def test_other_families_from_the_library_make_it_serve_them_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prometheus_client that adds or renames a family: its own collector answers."""
    proc = fake_proc(tmp_path, STAT.format(utime=1, stime=2, start=3, vsize=4, rss=5), 2)
    monkeypatch.setattr(process, "_EXPECTED", process._EXPECTED[:-1])
    lean = ProcessFamilies(proc=proc)
    assert not lean.lean
    assert lean.collect() == list(ProcessCollector(registry=None, proc=proc).collect())


def _holds(fd: int, path: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(path)
    except OSError:
        return False


def test_a_closed_one_falls_back_and_its_descriptor_is_given_back(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, STAT.format(utime=1, stime=2, start=3, vsize=4, rss=5), 2)
    stat = tmp_path / "self" / "stat"
    lean = ProcessFamilies(proc=proc)
    fd = lean._stat_fd
    assert _holds(fd, stat)
    lean.close()
    assert not lean.lean
    assert not _holds(fd, stat)
    assert lean.collect() == list(ProcessCollector(registry=None, proc=proc).collect())
    forgotten = ProcessFamilies(proc=proc)  # never closed: collected with its descriptor
    fd = forgotten._stat_fd
    assert _holds(fd, stat)
    del forgotten
    gc.collect()
    assert not _holds(fd, stat)

"""Threads, open descriptors, storage I/O and context switches of one process, read two
ways: psutil (portable) and, on Linux, a faster reader of the same files psutil reads
(``/proc/PID/status``, ``/proc/PID/io``, the ``fd`` folder) with one ``pread`` each on
descriptors kept open per process: a fraction of psutil's cost, which was most of a tick.
A test proves both give the same numbers; ``make bench`` shows the difference.  Readings
are keyed by the series keys of :mod:`exporter.sources.process_detail`.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import psutil

from exporter.sources.readers.psutil_processes import PsutilProcesses

#: one process's readings: series key -> value, None where it may not be read
Detail = dict[str, float | None]
_KEYS = (
    "process_threads",
    "process_open_fds",
    "process_read_bytes",
    "process_written_bytes",
    "process_voluntary_context_switches",
    "process_involuntary_context_switches",
)


class PsutilDetailReader(PsutilProcesses):
    """The portable reader."""

    name = "psutil"

    def read(self, pid: int) -> Detail | None:
        """The process's detail; None if it is gone."""
        try:
            proc = self.process(pid)
            with proc.oneshot():
                out: Detail = {"process_threads": proc.num_threads()}
                switches = proc.num_ctx_switches()
                out["process_voluntary_context_switches"] = switches.voluntary
                out["process_involuntary_context_switches"] = switches.involuntary
                out["process_open_fds"] = _optional(proc, "num_fds")
                io = _optional(proc, "io_counters")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self.drop(pid)
            return None
        except (psutil.Error, OSError):
            return dict.fromkeys(_KEYS)
        out["process_read_bytes"] = None if io is None else io.read_bytes
        out["process_written_bytes"] = None if io is None else io.write_bytes
        return out


_STATUS_FIELDS = re.compile(
    rb"^(Threads|voluntary_ctxt_switches|nonvoluntary_ctxt_switches):\s*(\d+)", re.MULTILINE
)
_IO_FIELDS = re.compile(rb"^(read_bytes|write_bytes): (\d+)", re.MULTILINE)
_STATUS_KEYS = {
    b"Threads": "process_threads",
    b"voluntary_ctxt_switches": "process_voluntary_context_switches",
    b"nonvoluntary_ctxt_switches": "process_involuntary_context_switches",
}
_IO_KEYS = {b"read_bytes": "process_read_bytes", b"write_bytes": "process_written_bytes"}


class ProcDetailReader:
    """Linux: the files psutil reads, one pread each on descriptors kept per process (a kept
    descriptor fails with ESRCH once its process is gone, even if the PID is reused)."""

    name = "procfs"

    def __init__(self) -> None:
        self._fds: dict[int, tuple[int, int | None]] = {}  # pid -> (status, io or None)
        self._fd_dirs: dict[int, int] = {}  # pid -> descriptor of /proc/PID/fd, when kept
        self._count_fds = _count_fds_by_size if fd_dir_size_counts() else _count_fds_by_listing

    @staticmethod
    def available() -> bool:
        if not sys.platform.startswith("linux"):
            return False
        try:
            with open("/proc/self/status", "rb") as f:
                return b"voluntary_ctxt_switches" in f.read()
        except OSError:
            return False

    @staticmethod
    def _open(pid: int) -> tuple[int, int | None]:
        status = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            io: int | None = os.open(f"/proc/{pid}/io", os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:  # another user's process: its I/O stays absent
            io = None
        except FileNotFoundError:  # a kernel without task I/O accounting
            io = None
        except OSError:
            os.close(status)
            raise
        return status, io

    def read(self, pid: int) -> Detail | None:
        """The process's detail; None if it is gone."""
        fds = self._fds.get(pid)
        try:
            if fds is None:
                fds = self._fds[pid] = self._open(pid)
            out: Detail = dict.fromkeys(_KEYS)
            for name, value in _STATUS_FIELDS.findall(os.pread(fds[0], 4096, 0)):
                out[_STATUS_KEYS[name]] = int(value)
            if fds[1] is not None:
                for name, value in _IO_FIELDS.findall(self._read_io(pid, fds)):
                    out[_IO_KEYS[name]] = int(value)
            out["process_open_fds"] = self._count_fds(pid, self._fd_dirs)
        except (ProcessLookupError, FileNotFoundError):  # gone (a kept fd says ESRCH)
            self.forget({pid})
            return None
        except OSError:
            return dict.fromkeys(_KEYS)
        return out

    def _read_io(self, pid: int, fds: tuple[int, int | None]) -> bytes:
        """/proc/PID/io, which the kernel checks at each read: refused once, left absent."""
        assert fds[1] is not None
        try:
            return os.pread(fds[1], 512, 0)
        except PermissionError:
            os.close(fds[1])
            self._fds[pid] = (fds[0], None)
            return b""

    def forget(self, pids: set[int]) -> None:
        for pid in pids:
            for fd in self._fds.pop(pid, ()):
                if fd is not None:
                    os.close(fd)
            fd_dir = self._fd_dirs.pop(pid, None)
            if fd_dir is not None:
                os.close(fd_dir)

    def close(self) -> None:
        self.forget(set(self._fds) | set(self._fd_dirs))


def fd_dir_size_counts() -> bool:
    """Whether this kernel reports a process's open descriptors as the size of /proc/PID/fd.

    Linux 6.2 and later do; older kernels (and some sandboxes) say 0, and then the folder is
    listed, as psutil does.  Checked on a descriptor this process holds open itself.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_size > 0
    finally:
        os.close(fd)


def _count_fds_by_size(pid: int, fd_dirs: dict[int, int]) -> int | None:
    """One fstat of a kept /proc/PID/fd descriptor: no listing of every descriptor each tick.

    The count equals listing the folder, except that a listing of one's own folder also
    counts the descriptor the listing itself holds open.
    """
    fd = fd_dirs.get(pid)
    try:
        if fd is None:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            fd = fd_dirs[pid] = os.open(f"/proc/{pid}/fd", flags)
        return os.fstat(fd).st_size
    except PermissionError:  # another user's process
        return None


def _count_fds_by_listing(pid: int, fd_dirs: dict[int, int]) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:  # another user's process
        return None


def default_detail_reader() -> ProcDetailReader | PsutilDetailReader:
    return ProcDetailReader() if ProcDetailReader.available() else PsutilDetailReader()


def _optional(proc: psutil.Process, method: str) -> Any:
    """A reading psutil may refuse (not our process) or not have on this platform: None.

    psutil defines some methods only where the platform has them (no ``io_counters`` on
    macOS, no ``num_fds`` on Windows), so the method is looked up here, not by the caller.
    """
    read = getattr(proc, method, None)
    if read is None:
        return None
    try:
        return read()
    except (psutil.AccessDenied, NotImplementedError, AttributeError, OSError):
        return None

"""psutil's Process objects kept per PID, for the portable readers: one is made at a PID's
first read and dropped when the process is gone or no longer watched."""

from __future__ import annotations

import psutil


class PsutilProcesses:
    """The base of the psutil readers: ``process(pid)`` and forgetting."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def process(self, pid: int) -> psutil.Process:
        """The kept Process of ``pid`` (made at the first read; psutil errors pass on)."""
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def drop(self, pid: int) -> None:
        self._procs.pop(pid, None)

    def forget(self, pids: set[int]) -> None:
        for pid in pids:
            self._procs.pop(pid, None)

    def close(self) -> None:
        self._procs.clear()

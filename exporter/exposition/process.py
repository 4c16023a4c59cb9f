"""The exporter's own process_* families: prometheus_client's ProcessCollector, with the
system calls a scrape pays cut to one read and one directory listing.

At every scrape the library opens /proc/self/stat and /proc/self/limits and lists
/proc/self/fd.  Measured in the running daemon at one scrape a second, that was the
largest part of rendering a scrape whose other families were unchanged (~0.2 ms of CPU on
cold caches; tests/bench/bench_scrape_cpu.py).  Here /proc/self/stat is read with one
``os.pread`` on a descriptor kept open (procfs makes its contents afresh at each read from
offset 0), the file limit comes from ``getrlimit`` (the "Max open files" soft limit the
limits file shows), and the start time, which never changes, is the library's own.

The families are the library's: made once by it, then the same names, help and types
with new values.  Wherever this process's /proc is not what it expects, or the library
makes other families (another version), the library's collector serves every scrape.  A
test holds both to equal families, value for value.
"""

from __future__ import annotations

import os
import resource
import threading
import weakref

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

_EXPECTED = (  # the library's families, in its order
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds",
    "process_open_fds",
    "process_max_fds",
)


class ProcessFamilies:
    """``collect()`` as ``ProcessCollector(registry=None).collect()`` for this process."""

    def __init__(self, proc: str = "/proc") -> None:
        self.library = ProcessCollector(registry=None, proc=proc)
        self._ticks = float(self.library._ticks)
        self._pagesize = float(self.library._pagesize)
        self._fd_dir = os.path.join(proc, "self", "fd")
        self._lock = threading.Lock()  # the descriptor is shared by concurrent scrapes
        self._stat_fd = -1
        template = list(self.library.collect())
        self._docs = {m.name: m.documentation for m in template}
        self._start = next((m.samples[0].value for m in template
                            if m.name == "process_start_time_seconds"), None)
        if tuple(m.name for m in template) == _EXPECTED and self._start is not None:
            try:
                self._stat_fd = os.open(os.path.join(proc, "self", "stat"),
                                        os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._stat_fd = -1
            else:
                self._closer = weakref.finalize(self, os.close, self._stat_fd)

    @property
    def lean(self) -> bool:
        """Whether scrapes take the short path (else the library's)."""
        return self._stat_fd >= 0

    def collect(self) -> list[Metric]:
        if self._stat_fd < 0:
            return list(self.library.collect())
        try:
            with self._lock:  # not closed meanwhile (pread itself moves no offset)
                stat = os.pread(self._stat_fd, 4096, 0)
            fds = len(os.listdir(self._fd_dir))
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except OSError:
            return list(self.library.collect())
        if soft == resource.RLIM_INFINITY:
            return list(self.library.collect())
        parts = stat.rsplit(b")", 1)[-1].split()
        docs = self._docs
        return [
            GaugeMetricFamily("process_virtual_memory_bytes",
                              docs["process_virtual_memory_bytes"], value=float(parts[20])),
            GaugeMetricFamily("process_resident_memory_bytes",
                              docs["process_resident_memory_bytes"],
                              value=float(parts[21]) * self._pagesize),
            GaugeMetricFamily("process_start_time_seconds",
                              docs["process_start_time_seconds"], value=self._start),
            CounterMetricFamily("process_cpu_seconds_total", docs["process_cpu_seconds"],
                                value=float(parts[11]) / self._ticks
                                + float(parts[12]) / self._ticks),
            GaugeMetricFamily("process_open_fds", docs["process_open_fds"], value=fds),
            GaugeMetricFamily("process_max_fds", docs["process_max_fds"], value=float(soft)),
        ]

    def close(self) -> None:
        with self._lock:
            if self._stat_fd >= 0:
                self._stat_fd = -1
                self._closer()

"""The composition root: builds the monitor and its HTTP server, runs them until told to stop.

Nothing else in the package reads configuration or process-wide state; this module wires
the pieces and owns the process lifecycle (signals, readiness).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, HttpSettings
from exporter.http.server import ExporterServer

log = logging.getLogger("exporter.daemon")


@dataclass(frozen=True)
class DaemonOptions:
    listen: str = ":9001"
    interval_ms: int = 60_000


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.endpoint = MetricsEndpoint(interval_ms=options.interval_ms)
        self.server = ExporterServer(options.listen, App(self.endpoint, HttpSettings()))
        self._stop = threading.Event()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        self.endpoint.start_collection(self.options.interval_ms)
        self.server.start()
        host, port = self.server.server_address[:2]
        log.info(
            "listening on %s port %d, collecting every %d ms", host, port, self.options.interval_ms
        )
        self._stop.wait()
        log.info("stopping")
        self.server.stop()
        self.endpoint.close()
        return 0

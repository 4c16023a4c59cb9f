"""The composition root: builds everything from the configuration and runs the process.

Nothing else in the package reads the configuration file or process-wide state.  This
module wires the monitor, its sources, the HTTP server and the notifiers, and owns the
lifecycle systemd sees: READY=1 once the port is bound and the first collection has run,
WATCHDOG=1 from the collector loop, SIGHUP reloads (an invalid file keeps the running
configuration, as Prometheus does), SIGTERM stops cleanly.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, replace

from exporter.config import Config, ConfigError, Problem, load_config
from exporter.endpoint import MetricsEndpoint
from exporter.http.app import App, HttpSettings
from exporter.http.server import ExporterServer
from exporter.logs import setup_logging
from exporter.notifiers import build_notifiers
from exporter.sdnotify import SystemdNotifier
from exporter.snapshot import StatusFamily
from exporter.sources import registry
from exporter.sources.base import Source
from exporter.sources.registry import SourceContext
from exporter.sources.targets import SharedFinder

log = logging.getLogger("exporter.daemon")

RELOAD_OK = "crankshaft_config_last_reload_successful"
RELOAD_TIME = "crankshaft_config_last_reload_success_timestamp_seconds"
FIRST_COLLECTION_TIMEOUT_S = 20.0


class StartupError(Exception):
    """The daemon cannot start; the message is the one line the user sees."""


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that win over the file, on start and on every reload."""

    listen: str | None = None
    interval: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    target: str | None = None


def read_config(path: str | None, overrides: Overrides) -> Config:
    config = Config.default() if path is None else load_config(path)
    try:
        return config.with_overrides(
            listen=overrides.listen,
            interval=overrides.interval,
            log_level=overrides.log_level,
            target=overrides.target,
        )
    except ValueError as e:
        raise ConfigError([Problem("command line", None, "", str(e))]) from None


def build_sources(config: Config) -> list[Source]:
    """Every enabled registered source that has something to read, in registration order;
    one that cannot start is logged and left out (its series stay absent)."""
    sources: list[Source] = []
    finder = config.target.finder()
    shared = None if finder is None else SharedFinder(finder)
    for source_type in registry.source_types():
        wanted = config.source(source_type.name)
        if wanted is None or not wanted.enabled:
            continue
        try:
            context = SourceContext(config.target, dict(wanted.options), shared)
            source = source_type.build(context)
        except Exception as e:  # a broken optional source must not keep the daemon down
            log.warning("source %s cannot start, its series stay absent: %s",
                        source_type.name, e)
            continue
        if source is not None:
            sources.append(source)
    return sources


def http_settings(config: Config) -> HttpSettings:
    return HttpSettings(
        max_body_bytes=config.http.max_body_bytes,
        request_timeout_s=config.http.request_timeout,
        ingest_allow=tuple(config.http.ingest_allow),
        ingest_token=config.http.ingest_token,
        target=describe_target(config),
    )


def describe_target(config: Config) -> str:
    finder = config.target.finder()
    return "none (values are pushed)" if finder is None else finder.describe()


class Daemon:
    def __init__(
        self,
        config_path: str | None,
        overrides: Overrides | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.overrides = overrides or Overrides()
        self.notifier = notifier or SystemdNotifier()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        # Before the config is read: a SIGHUP from here on is a reload, never a kill.
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        self.config = read_config(config_path, self.overrides)
        self._log_format = setup_logging(
            self.config.logging.level, self.overrides.log_format or self.config.logging.format
        )
        c = self.config
        self.endpoint = MetricsEndpoint(
            interval_ms=c.interval_ms,
            rules=c.alerts,
            sources=build_sources(c),
            settings=c.store_settings(),
        )
        self.app = App(self.endpoint, http_settings(c))
        try:
            self.server = ExporterServer(c.listen.host, c.listen.port, self.app)
        except OSError as e:
            self.endpoint.close()
            raise StartupError(f"cannot listen on {c.listen}: {e.strerror or e}") from None
        self.notifiers = build_notifiers(c.notifiers, self.endpoint)
        self._record_reload(True)
        self.endpoint.add_status_provider(self._reload_status)

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        first = threading.Event()
        self.endpoint.on_metrics_collected(first.set)
        self.server.start()
        host, port = self.server.server_address[:2]
        log.info(
            "listening on %s port %d, collecting every %d ms, target %s",
            host,
            port,
            self.config.interval_ms,
            describe_target(self.config),
        )
        self.endpoint.start_collection(self.config.interval_ms)
        watchdog = self.notifier.watchdog_seconds()
        if watchdog is not None:
            # Several pings per period, all from the collector loop: a hung loop goes silent.
            self.endpoint.set_heartbeat(self.notifier.watchdog, watchdog / 3)
        if not self._wait_first_collection(first):
            return self._shutdown(0)
        self.endpoint.metrics_collected.disconnect(first.set)
        self.notifier.ready(self._status())
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        return self._shutdown(0)

    def _wait_first_collection(self, first: threading.Event) -> bool:
        deadline = time.monotonic() + FIRST_COLLECTION_TIMEOUT_S
        while not first.wait(0.1):
            if self._stop.is_set():
                return False
            if time.monotonic() > deadline:
                log.warning("first collection has not finished; reporting ready anyway")
                break
        return True

    def _shutdown(self, code: int) -> int:
        log.info("stopping")
        self.notifier.stopping()
        self.server.stop()
        self.notifiers.close()
        self.endpoint.close()
        log.info("stopped")
        return code

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._stop.set()
        self._wake.set()

    def _on_reload_signal(self, signum: int, frame: object) -> None:
        self._reload.set()
        self._wake.set()

    def _status(self) -> str:
        up = self.endpoint.target_up()
        target = {True: "up", False: "down", None: "not sampled"}[up]
        host, port = self.server.server_address[:2]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"serving on {where}, collecting every {self.config.interval_ms} ms, target {target}"

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep running as before."""
        self.notifier.reloading()
        try:
            new = read_config(self.config_path, self.overrides)
        except ConfigError as e:
            for problem in e.problems:
                log.error("reload rejected: %s", problem)
            log.error("configuration reload failed; keeping the running configuration")
            self._record_reload(False)
            self.notifier.ready(
                f"reload failed, running the previous configuration; {self._status()}"
            )
            return False
        self._apply(new)
        self._record_reload(True)
        log.info("configuration reloaded from %s", self.config_path or "built-in defaults")
        self.notifier.ready(self._status())
        return True

    def _apply(self, new: Config) -> None:
        old, ep = self.config, self.endpoint
        if new.notifiers != old.notifiers:  # unchanged notifiers keep running, queues and all
            self.notifiers.reconfigure(new.notifiers)
        if new.listen != old.listen:
            log.warning("listen address change (%s -> %s) needs a restart", old.listen, new.listen)
        if new.latency.buckets != old.latency.buckets:
            log.warning("histogram bucket changes need a restart; keeping the current buckets")
        if (new.target, new.sources) != (old.target, old.sources):
            ep.set_sources(build_sources(new))
        ep.reconfigure_storage(new.store_settings())
        ep.set_alert_rules(new.alerts)
        if new.interval_ms != old.interval_ms:
            ep.set_collection_interval(new.interval_ms)
        self.app.settings = http_settings(new)
        if new.logging != old.logging:
            setup_logging(new.logging.level, self.overrides.log_format or new.logging.format)
        # Keep what only a restart can change, so the next diff compares like with like.
        self.config = replace(
            new, listen=old.listen, latency=replace(new.latency, buckets=old.latency.buckets)
        )

    def _record_reload(self, ok: bool) -> None:
        self._reload_ok = ok
        if ok:
            self._reload_time = time.time()

    def _reload_status(self) -> list[StatusFamily]:
        """The config-reload gauges, named and meant as Prometheus' own."""
        return [
            StatusFamily(
                RELOAD_OK,
                "gauge",
                "Whether the last configuration reload attempt was successful",
                [({}, 1.0 if self._reload_ok else 0.0)],
            ),
            StatusFamily(
                RELOAD_TIME,
                "gauge",
                "Timestamp of the last successful configuration reload",
                [({}, self._reload_time)],
            ),
        ]

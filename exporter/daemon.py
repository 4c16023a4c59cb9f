"""The composition root: builds everything from the configuration and runs the process.

Nothing else in the package reads the configuration file or process-wide state.  This
module wires the monitor, its sources, the HTTP server and the notifiers, and owns the
lifecycle systemd sees: READY=1 once the port is bound and the first collection has run,
WATCHDOG=1 from the collector loop, SIGHUP reloads (an invalid file keeps the running
configuration, as Prometheus does), SIGTERM stops cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from exporter.config import Config, ConfigError, Problem, load_config
from exporter.config.durations import format_duration
from exporter.endpoint import MetricsEndpoint
from exporter.history.snapshots import Snapshotter
from exporter.http.app import App, HttpSettings
from exporter.http.fdlimit import connection_cap, raise_open_files_limit
from exporter.http.server import ExporterServer
from exporter.http.webconfig import load_web_config
from exporter.http.webwatch import WebConfigWatcher
from exporter.libcheck import installed_version, library_problems
from exporter.logs import setup_logging
from exporter.metric_names import CONFIG_RELOAD_OK
from exporter.notifiers import build_notifiers
from exporter.sdnotify import SystemdNotifier
from exporter.snapshot import StatusFamily
from exporter.sources import registry
from exporter.sources.base import Source
from exporter.sources.registry import SourceContext
from exporter.sources.targets import SharedFinder

if TYPE_CHECKING:
    from exporter.remote_write.writer import RemoteWriter

log = logging.getLogger("exporter.daemon")

RELOAD_OK = CONFIG_RELOAD_OK
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
    web_config_file: str | None = None
    target: str | None = None


def read_config(path: str | None, overrides: Overrides) -> Config:
    config = Config.default() if path is None else load_config(path)
    try:
        config = config.with_overrides(
            listen=overrides.listen,
            interval=overrides.interval,
            log_level=overrides.log_level,
            target=overrides.target,
        )
    except ValueError as e:
        raise ConfigError([Problem("command line", None, "", str(e))]) from None
    if overrides.web_config_file is not None:  # --web.config.file wins over the file's key
        web_file = os.path.abspath(overrides.web_config_file)
        web = load_web_config(web_file)
        config = replace(config, http=replace(config.http, web_config_file=web_file,
                                              web_config=web))
    return config


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


def http_settings(config: Config, open_files: int) -> HttpSettings:
    h = config.http
    return HttpSettings(
        max_body_bytes=h.max_body_bytes,
        request_timeout_s=h.request_timeout,
        idle_timeout_s=h.idle_timeout,
        max_connections=connection_cap(h.max_connections, open_files),
        ingest_allow=h.ingest_allow,
        ingest_allow_listed=h.ingest_allow_listed,
        ingest_token=h.ingest_token,
        target=describe_target(config),
    )


def state_directory(config: Config) -> str | None:
    """Where the history file lives; the send log and notification outboxes go beside it."""
    path = config.history.state_path(os.environ)
    return None if path is None else (os.path.dirname(path) or ".")


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
        problems = library_problems()
        if problems:
            raise StartupError("; ".join(problems) + "; not starting")
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
        self._probe_exposition()
        self._open_files = raise_open_files_limit()
        self.app = App(self.endpoint, http_settings(c, self._open_files))
        self._config_ok = self._web_ok = True
        self.web = WebConfigWatcher(c.http.web_config, self._record_web_reload)
        try:
            self.server = ExporterServer(c.listen.host, c.listen.port, self.app, self.web)
        except OSError as e:
            self.endpoint.close()
            raise StartupError(f"cannot listen on {c.listen}: {e.strerror or e}") from None
        self.notifiers = build_notifiers(c.notifiers, self.endpoint,
                                         state_dir=state_directory(c))
        self._record_reload(True)
        self.endpoint.add_status_provider(self._reload_status)
        self.history: Snapshotter | None = None
        self._set_history(c, restore=True)
        self.remote: RemoteWriter | None = None
        self._set_remote_write(c)

    def _probe_exposition(self) -> None:
        """Both exposition formats once before serving: a library that cannot render them
        stops the start here, with its name and version, instead of failing every scrape."""
        for openmetrics in (False, True):
            try:
                self.endpoint.render_exposition(openmetrics)
            except Exception as e:
                self.endpoint.close()
                version = installed_version("prometheus_client")
                raise StartupError(
                    f"prometheus_client {version} cannot render the exposition "
                    f"({type(e).__name__}: {e}); not starting"
                ) from None

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
        log.info("open %s for the dashboard; the API: %smetrics (JSON), %smetrics/summary, "
                 "%smetrics/prometheus, %shealthz, all of it described in %sopenapi.yaml",
                 *[self._base_url()] * 6)
        if self.config.http.web_config is not None:
            log.info("web config %s: %s", self.config.http.web_config_file,
                     self.config.http.web_config.describe())
        if self.remote is not None:
            self.remote.start()
        self.endpoint.start_collection(self.config.interval_ms)
        if self.history is not None:
            self.history.start()
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
        self.endpoint.close()  # stops collection: the last snapshot holds everything
        if self.history is not None:
            self.history.stop()
        if self.remote is not None:
            self.remote.stop()
        log.info("stopped")
        return code

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._stop.set()
        self._wake.set()

    def _on_reload_signal(self, signum: int, frame: object) -> None:
        self._reload.set()
        self._wake.set()

    def _base_url(self) -> str:
        """Where a person opens the page: a wildcard address is reached as localhost."""
        host, port = self.server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        web = self.config.http.web_config
        scheme = "https" if web is not None and web.tls is not None else "http"
        return f"{scheme}://{host}:{port}/"

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
        if new.history.max_samples != old.history.max_samples and self.history is not None:
            self.history.snapshot()  # the longer history, on disk, before a shrink drops it
        ep.reconfigure_storage(new.store_settings())
        if new.history != old.history:
            self._set_history(new, restore=False)
        if new.remote_write != old.remote_write:
            self._set_remote_write(new, start=True)
        ep.set_alert_rules(new.alerts)
        if new.interval_ms != old.interval_ms:
            ep.set_collection_interval(new.interval_ms)
        self.app.settings = http_settings(new, self._open_files)
        self.web.replace(new.http.web_config)
        if new.logging != old.logging:
            setup_logging(new.logging.level, self.overrides.log_format or new.logging.format)
        # Keep what only a restart can change, so the next diff compares like with like.
        self.config = replace(
            new, listen=old.listen, latency=replace(new.latency, buckets=old.latency.buckets)
        )

    # --- history ----------------------------------------------------------------------------

    def _set_history(self, config: Config, restore: bool) -> None:
        """Keep the history in the configured state file: restore it at start; on reload
        follow a new path or interval (the history in memory is the live one, so a new
        file is written, not read)."""
        path = config.history.state_path(os.environ)
        interval = config.history.snapshot_interval
        current = self.history
        if current is not None and current.path == path:
            if current.interval_s != interval:
                current.set_interval(interval)
            return
        if current is not None:
            current.stop()  # a last write to the old file
            self.endpoint.remove_status_provider(current.status)
            self.history = None
        if path is None:
            why = ("history.state_file is null" if config.history.state_file is None
                   else "no $STATE_DIRECTORY (systemd's StateDirectory=) to put it in")
            log.info("history is kept in memory only: %s", why)
            return
        self.history = Snapshotter(self.endpoint.recorder, path, interval)
        log.info("history file %s, written every %s", path, format_duration(interval))
        if restore:
            self.history.restore()
        else:
            self.history.start()
        self.endpoint.add_status_provider(self.history.status)

    # --- remote write -------------------------------------------------------------------------

    def _set_remote_write(self, config: Config, start: bool = False) -> None:
        """Senders for the configured receivers; the send log stays where it was first put
        (beside the history file) for the process' life."""
        if self.remote is not None:
            self.remote.reconfigure(config.remote_write)
            return
        if not config.remote_write:
            return
        # Imported here: protobuf and snappy take ~4 MiB a car without remote write
        # would hold for nothing.
        from exporter.remote_write.writer import RemoteWriter

        state = state_directory(config)
        directory = None if state is None else os.path.join(state, "remote-write")
        self.remote = RemoteWriter(self.endpoint, config.remote_write, directory)
        if start:
            self.remote.start()

    def _record_reload(self, ok: bool) -> None:
        """A reload of the config file; a successful one has also read the web config."""
        self._config_ok = ok
        if ok:
            self._web_ok = True
        self._settle_reload()

    def _record_web_reload(self, ok: bool) -> None:
        """The web config re-read on its own (it changed on disk): it must not make a failed
        reload of the config file look successful, nor the other way round."""
        self._web_ok = ok
        self._settle_reload()

    def _settle_reload(self) -> None:
        self._reload_ok = self._config_ok and self._web_ok
        if self._reload_ok:
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

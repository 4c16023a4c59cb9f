"""The validated configuration: frozen dataclasses whose defaults are the seed's.

Only the loader builds these from a file, after checking every field, so the daemon can use
them without checking again.  ``Config()`` (or ``Config.default()``) is what an absent or
empty file means.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from exporter.alerts.rules import SHIPPED_RULES, AlertRule
from exporter.config.durations import format_duration, parse_duration
from exporter.config.errors import quote
from exporter.extensions import DEFAULT_EVICT_AFTER_S as EXTENSION_EVICT_AFTER_S
from exporter.extensions import DEFAULT_MAX_EXTENSIONS
from exporter.http.webconfig import WebConfig
from exporter.latency import (
    DEFAULT_BUCKETS_SECONDS,
    DEFAULT_EVICT_AFTER_S,
    DEFAULT_MAX_ENDPOINTS,
    DEFAULT_QUIET_AFTER_S,
    DEFAULT_WINDOW,
)
from exporter.sources import registry
from exporter.sources.targets import TARGET_KINDS, TargetSpec
from exporter.store import DEFAULT_CAPACITY, StoreSettings
from exporter.values import DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS, MIN_INTERVAL_MS

INTERVAL_MIN = MIN_INTERVAL_MS / 1000
INTERVAL_MAX = MAX_INTERVAL_MS / 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "text", "json", "journal")
DEFAULT_PORT = 9001
DEFAULT_INGEST_ALLOW: tuple[IPv4Network | IPv6Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the HTTP server binds; ``host`` "" means every interface (``":9001"``)."""

    host: str = ""
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``":9001"``, ``"127.0.0.1:9001"``, ``"localhost:9001"`` or ``"[::1]:9001"``."""
        text = text.strip()
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f'missing "]" in {quote(text)}')
            host, rest = text[1:end], text[end + 1 :]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{quote(host)} in brackets is not an IPv6 address") from None
            if not rest.startswith(":"):
                raise ValueError(f'{quote(text)} has no port; write "[{host}]:{DEFAULT_PORT}"')
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep and text.isascii() and text.isdigit():  # `--listen 19303`
                raise ValueError(
                    f'{quote(text)} has no host part; write HOST:PORT, e.g. ":{text}" (every '
                    f'interface) or "127.0.0.1:{text}"'
                )
            if not sep:
                raise ValueError(
                    f'{quote(text)} has no port; write HOST:PORT, e.g. ":{DEFAULT_PORT}" '
                    f'or "127.0.0.1:{DEFAULT_PORT}"'
                )
            if ":" in host:
                raise ValueError(f'IPv6 addresses need brackets, e.g. "[::1]:{DEFAULT_PORT}"')
            if host and not _valid_host(host):
                raise ValueError(f"{quote(host)} is not an IPv4 address or a host name")
        # Port 0 lets the kernel choose a free port (the daemon logs which): for tests.
        if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port must be a number in 0..65535, got {quote(port_text)}")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _valid_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def check_interval(value: object) -> float:
    """Collection interval in seconds from a duration, within what the endpoint accepts."""
    seconds = parse_duration(value)
    if not INTERVAL_MIN <= seconds <= INTERVAL_MAX:
        raise ValueError(
            f"must be between {format_duration(INTERVAL_MIN)} and "
            f"{format_duration(INTERVAL_MAX)}, got {format_duration(seconds)}"
        )
    return seconds


def check_log_level(value: object) -> str:
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        shown = quote(value) if isinstance(value, str) else repr(value)
        raise ValueError(f"unknown log level {shown}; one of {', '.join(LOG_LEVELS)}")
    return value.upper()


STATE_DIRECTORY = "$STATE_DIRECTORY"  # what systemd's StateDirectory= sets
DEFAULT_STATE_FILE = STATE_DIRECTORY + "/history.bin"
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    max_samples: int = DEFAULT_CAPACITY  # ring-buffer capacity per series
    # Where the history is kept across restarts; None: not kept.  A leading
    # "$STATE_DIRECTORY/" is the folder systemd gives the service (see ``state_path``).
    state_file: str | None = DEFAULT_STATE_FILE
    snapshot_interval: float = DEFAULT_SNAPSHOT_INTERVAL_S  # seconds between writes

    def state_path(self, environ: Mapping[str, str]) -> str | None:
        """The state file to use in this environment: ``$STATE_DIRECTORY`` is the first
        folder of that variable (systemd sets it for ``StateDirectory=``); unset, the
        history is not kept."""
        if self.state_file is None or not self.state_file.startswith(STATE_DIRECTORY + "/"):
            return self.state_file
        folders = environ.get("STATE_DIRECTORY", "")
        if not folders:
            return None
        rest = self.state_file[len(STATE_DIRECTORY) + 1 :]
        return os.path.join(folders.split(":")[0], rest)


@dataclass(frozen=True, slots=True)
class ConnectionsConfig:
    port: int | None = None  # count ESTABLISHED TCP connections to this local port


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One registered source's section: whether it runs, and its checked options."""

    enabled: bool
    options: tuple[tuple[str, Any], ...] = ()


def default_sources() -> tuple[tuple[str, SourceConfig], ...]:
    return tuple(
        (t.name, SourceConfig(t.default_enabled, tuple(t.defaults().items())))
        for t in registry.source_types()
    )


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    window: int = DEFAULT_WINDOW  # observations per endpoint kept for exact percentiles
    max_endpoints: int = DEFAULT_MAX_ENDPOINTS
    buckets: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS  # seconds, strictly increasing
    quiet_after: float = DEFAULT_QUIET_AFTER_S  # seconds without observations: "no traffic"
    evict_after: float = DEFAULT_EVICT_AFTER_S  # an idle endpoint's slot may be reused


@dataclass(frozen=True, slots=True)
class ExtensionsConfig:
    max_extensions: int = DEFAULT_MAX_EXTENSIONS
    evict_after: float = EXTENSION_EVICT_AFTER_S  # an unreported extension's slot may be reused


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``ingest_token`` is the content of ``ingest_token_file`` and ``web_config`` the checked
    content of ``web_config_file``, both read when the config loads.  ``ingest_allow_listed``
    says whether the user wrote ``ingest_allow`` (then only the listed networks write without
    the token) or left the default (loopback, and only while no token is configured)."""

    max_body_bytes: int = 1_048_576
    request_timeout: float = 10.0  # seconds, for a whole request: line, headers and body
    idle_timeout: float = 60.0  # seconds a keep-alive connection may wait for a request
    max_connections: int = 1024
    ingest_allow: tuple[IPv4Network | IPv6Network, ...] = DEFAULT_INGEST_ALLOW
    ingest_allow_listed: bool = False
    ingest_token_file: str | None = None
    ingest_token: str | None = field(default=None, repr=False)
    web_config_file: str | None = None
    web_config: WebConfig | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"  # one of LOG_LEVELS
    format: str = "auto"  # one of LOG_FORMATS


# A notifier's delivery defaults (webhooks and the Alertmanager; DeliveryWorker's too).
DEFAULT_NOTIFY_TIMEOUT = 5.0  # seconds, per attempt
DEFAULT_MAX_RETRIES = 5
# A day: a car out of coverage for hours (and restarted meanwhile) still reports what happened.
DEFAULT_RETRY_WINDOW_S = 86400.0


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    timeout: float = DEFAULT_NOTIFY_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_window: float = DEFAULT_RETRY_WINDOW_S  # an undelivered event is dropped after it
    headers: tuple[tuple[str, str], ...] = ()  # (name, value) pairs, in file order


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    url: str = "http://127.0.0.1:9093"
    timeout: float = DEFAULT_NOTIFY_TIMEOUT
    resend_interval: float = 60.0  # firing alerts are re-sent this often, as Prometheus does
    retry_window: float = DEFAULT_RETRY_WINDOW_S  # undelivered resolutions are kept this long


@dataclass(frozen=True, slots=True)
class NotifiersConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    alertmanager: AlertmanagerConfig | None = None


@dataclass(frozen=True, slots=True)
class TlsClientConfig:
    """A receiver's TLS, as Prometheus' ``tls_config`` (file paths already resolved)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


REMOTE_WRITE_JOB = "crankshaft"  # the job label a scrape of the shipped prometheus.yml sets


@dataclass(frozen=True, slots=True)
class RemoteWriteConfig:
    """One receiver of Prometheus remote write, as an entry of Prometheus' ``remote_write``."""

    url: str
    name: str = ""  # a short name for metrics and the cursor file; derived from the URL
    labels: tuple[tuple[str, str], ...] = ()  # added to every series (e.g. vehicle)
    instance: str | None = None  # the instance label; None: this machine's host name
    max_sample_age: float = 3600.0  # older unsent samples are dropped, never retried
    remote_timeout: float = 30.0
    max_samples_per_send: int = 500
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    tls_config: TlsClientConfig | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    authorization: tuple[str, str] | None = field(default=None, repr=False)  # (type, credentials)


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenAddress = field(default_factory=ListenAddress)
    interval: float = DEFAULT_INTERVAL_MS / 1000  # seconds
    history: HistoryConfig = field(default_factory=HistoryConfig)
    target: TargetSpec = field(default_factory=TargetSpec)
    sources: tuple[tuple[str, SourceConfig], ...] = field(default_factory=default_sources)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    extensions: ExtensionsConfig = field(default_factory=ExtensionsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alerts: tuple[AlertRule, ...] = SHIPPED_RULES
    notifiers: NotifiersConfig = field(default_factory=NotifiersConfig)
    remote_write: tuple[RemoteWriteConfig, ...] = ()

    @classmethod
    def default(cls) -> Config:
        """What no config file, or an empty one, means: the seed's defaults."""
        return cls()

    @property
    def interval_ms(self) -> int:
        """The interval as MetricsEndpoint takes it."""
        return round(self.interval * 1000)

    @property
    def connections(self) -> ConnectionsConfig:
        """The connections source's section (kept under its own top-level key)."""
        return ConnectionsConfig(port=self.source_options("connections").get("port"))

    def source(self, name: str) -> SourceConfig | None:
        """A registered source's section (None for a source registered after loading)."""
        return dict(self.sources).get(name)

    def source_options(self, name: str) -> dict[str, Any]:
        found = self.source(name)
        return {} if found is None else dict(found.options)

    def store_settings(self) -> StoreSettings:
        return StoreSettings(
            capacity=self.history.max_samples,
            latency_window=self.latency.window,
            max_endpoints=self.latency.max_endpoints,
            max_extensions=self.extensions.max_extensions,
            buckets_seconds=self.latency.buckets,
            latency_quiet_after_s=self.latency.quiet_after,
            latency_evict_after_s=self.latency.evict_after,
            extensions_evict_after_s=self.extensions.evict_after,
        )

    def with_overrides(
        self,
        *,
        listen: str | None = None,
        interval: object = None,
        log_level: str | None = None,
        target: str | None = None,
    ) -> Config:
        """This config with the command line's ``--listen/--interval/--log-level/--target``
        applied.

        Raises ValueError with a one-line reason; None leaves a setting as the file has it.
        """
        config = self
        if listen is not None:
            try:
                config = replace(config, listen=ListenAddress.parse(listen))
            except ValueError as e:
                raise ValueError(f"listen: {e}") from None
        if interval is not None:
            try:
                config = replace(config, interval=check_interval(interval))
            except ValueError as e:
                raise ValueError(f"interval: {e}") from None
        if log_level is not None:
            config = replace(
                config, logging=replace(config.logging, level=check_log_level(log_level))
            )
        if target is not None:
            try:
                config = replace(config, target=parse_target(target))
            except ValueError as e:
                raise ValueError(f"target: {e}") from None
        return config


def parse_target(text: str) -> TargetSpec:
    """``--target KIND:VALUE`` (``self`` and ``none`` alone): the ``target:`` section of the
    file in one word, for a quick try.  A relative pidfile is relative to the current
    directory, as a path on a command line is."""
    kind, sep, value = text.strip().partition(":")
    kinds = ", ".join(TARGET_KINDS)
    if kind not in TARGET_KINDS:
        raise ValueError(
            f"unknown kind {quote(kind)}; write KIND:VALUE with KIND one of {kinds}, "
            'e.g. "name:crankshaft" or "systemd_unit:crankshaft.service"'
        )
    if kind in ("self", "none"):
        if sep:
            raise ValueError(f'kind "{kind}" takes no value; write just "{kind}"')
        return TargetSpec(kind)
    if not value:
        raise ValueError(f'kind "{kind}" needs a value: "{kind}:VALUE"')
    if kind == "pidfile":
        value = os.path.abspath(value)
    spec = TargetSpec(kind, value)
    try:  # validates (a pid is a positive integer, a cmdline regex compiles)
        spec.finder()
    except RecursionError:
        raise ValueError("the regex is nested too deeply") from None
    except (re.error, OverflowError) as e:
        raise ValueError(str(e).splitlines()[0]) from None
    return TargetSpec("pid", int(value)) if kind == "pid" else spec

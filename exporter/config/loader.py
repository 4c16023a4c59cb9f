"""Reads the YAML config into a :class:`Config`, reporting every problem with its line.

Validation walks the composed node tree rather than ``safe_load``'s dicts, so each problem
names file, line and key path, and all problems are collected before giving up: whoever
fixes a config file sees every mistake at once.  No input makes it raise anything but
:class:`ConfigError`, because the daemon re-reads the file on SIGHUP and must keep running
on the old config when the new one is bad.
"""

from __future__ import annotations

import os
from pathlib import Path

from yaml.nodes import MappingNode, Node

from exporter.config import checks
from exporter.config.alerting import alert_rules
from exporter.config.errors import ConfigError, one_line
from exporter.config.model import (
    INTERVAL_MAX,
    INTERVAL_MIN,
    LOG_FORMATS,
    LOG_LEVELS,
    STATE_DIRECTORY,
    Config,
    ExtensionsConfig,
    HistoryConfig,
    HttpConfig,
    LatencyConfig,
    LoggingConfig,
    SourceConfig,
)
from exporter.config.notifiers import notifiers
from exporter.config.remote_write import remote_write
from exporter.config.secrets import read_secret
from exporter.config.yamltree import Fields, Walker, compose, is_null, read_text, show
from exporter.http.webconfig import load_web_config
from exporter.sources import registry
from exporter.sources.targets import TARGET_KINDS, TargetSpec

CORE_KEYS = (
    "listen",
    "interval",
    "history",
    "target",
    "latency",
    "extensions",
    "http",
    "logging",
    "alerts",
    "notifiers",
    "remote_write",
)


def top_keys() -> tuple[str, ...]:
    """The core keys and one section per registered source that has options."""
    sections = [t.config_key for t in registry.source_types() if t.section != ""]
    return (*CORE_KEYS[:4], *sections, *CORE_KEYS[4:])

MAX_SAMPLES = 10_000_000
MAX_LATENCY_WINDOW = 1_000_000
MAX_LABEL_VALUES = 100_000  # endpoints / extensions: each is a Prometheus series
MAX_BODY_BYTES = 1 << 30
MAX_TIMEOUT = 3600.0
MAX_FILE_BYTES = 16 << 20  # a config is a few KiB; a larger one is the wrong file
MAX_RETENTION = 366 * 86400.0  # quiet/evict durations: a year is already "never"
_DEFAULT = Config()


def load_config(path: str | os.PathLike[str]) -> Config:
    """The config in the file at ``path``; relative paths in it are relative to its folder."""
    name = os.fspath(path)
    return parse_config(read_text(name, MAX_FILE_BYTES), name, base_dir=Path(path).parent)


def parse_config(
    text: str, source_name: str = "<config>", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """The config in ``text``; ``source_name`` prefixes problems, ``base_dir`` anchors
    relative paths (the current directory when None).  Raises ConfigError."""
    loader, root = compose(text, source_name)
    walker = Walker(source_name, loader)
    config = _build(walker, root, Path(base_dir) if base_dir is not None else None)
    if walker.problems:
        raise ConfigError(walker.problems)
    return config


def _build(w: Walker, root: Node | None, base_dir: Path | None) -> Config:
    if root is not None and not is_null(root) and not isinstance(root, MappingNode):
        w.report(root, "", f"the top level must be a mapping of keys, got {w.describe(root)}")
        return _DEFAULT
    top = w.mapping(root, "", top_keys())
    return Config(
        listen=top.get("listen", checks.listen, _DEFAULT.listen),
        interval=top.get(
            "interval", checks.duration(INTERVAL_MIN, INTERVAL_MAX), _DEFAULT.interval
        ),
        history=_history(top.section("history", _HISTORY_KEYS), base_dir),
        target=_target(w, top.section("target", ("kind", "value")), base_dir),
        sources=_sources(top),
        latency=_latency(w, top.section("latency", _LATENCY_KEYS)),
        extensions=_extensions(top.section("extensions", ("max_extensions", "evict_after"))),
        http=_http(w, top.section("http", _HTTP_KEYS), base_dir),
        logging=_logging(top.section("logging", ("level", "format"))),
        alerts=alert_rules(w, top),
        notifiers=notifiers(w, top.section("notifiers", ("webhooks", "alertmanager"))),
        remote_write=remote_write(w, top, lambda p: str(_resolve(p, base_dir))),
    )


_HISTORY_KEYS = ("max_samples", "state_file", "snapshot_interval")
MIN_SNAPSHOT_INTERVAL = 1.0
MAX_SNAPSHOT_INTERVAL = 86400.0


def _history(f: Fields, base_dir: Path | None) -> HistoryConfig:
    d = _DEFAULT.history
    state_file = f.get("state_file", checks.optional(_state_file), d.state_file)
    if state_file is not None and not state_file.startswith(STATE_DIRECTORY + "/"):
        state_file = str(_resolve(state_file, base_dir))
    return HistoryConfig(
        max_samples=f.get("max_samples", checks.integer(1, MAX_SAMPLES), d.max_samples),
        state_file=state_file,
        snapshot_interval=f.get(
            "snapshot_interval",
            checks.duration(MIN_SNAPSHOT_INTERVAL, MAX_SNAPSHOT_INTERVAL),
            d.snapshot_interval,
        ),
    )


def _state_file(value: object) -> str:
    """A file path; ``$STATE_DIRECTORY/NAME`` names a file in systemd's state folder."""
    path = checks.string()(value)
    if "\0" in path:
        raise ValueError("a path cannot contain a NUL character")
    if path.endswith("/") or os.path.basename(path) in (".", ".."):
        raise ValueError(f"{one_line(path)} names a folder; give a file name, e.g. history.bin")
    if path.startswith("$") and not path.startswith(STATE_DIRECTORY + "/"):
        raise ValueError(
            f"only {STATE_DIRECTORY}/ is expanded (systemd's StateDirectory=); "
            f"got {one_line(path)}"
        )
    return path


def _target(w: Walker, f: Fields, base_dir: Path | None) -> TargetSpec:
    before = len(w.problems)
    kind = f.get("kind", checks.choice(TARGET_KINDS, "kind"), "self")
    value = f.get("value", checks.optional(_target_value), None)
    if len(w.problems) > before:
        return _DEFAULT.target
    value_node = f.value_node("value")
    if kind in ("self", "none"):
        if value is not None:
            others = ", ".join(k for k in TARGET_KINDS if k not in ("self", "none"))
            w.report(
                value_node,
                f.key_path("value"),
                f'kind "{kind}" takes no value; set target.kind to one of {others}',
            )
        return TargetSpec(kind)
    if value is None:
        where = f.value_node("kind")
        w.report(where, f.key_path("value"), f'required for kind "{kind}"')
        return _DEFAULT.target
    if kind == "pidfile":
        value = str(_resolve(str(value), base_dir))
    spec = TargetSpec(kind, value)
    try:  # builds the finder without touching the pidfile or the unit: both may come later
        spec.finder()
    except RecursionError:  # re.compile of a pattern nested thousands deep
        w.report(value_node, f.key_path("value"), "the regex is nested too deeply")
        return _DEFAULT.target
    except (ValueError, OverflowError) as e:
        w.report(value_node, f.key_path("value"), one_line(str(e)))
        return _DEFAULT.target
    return TargetSpec("pid", int(value)) if kind == "pid" else spec


def _target_value(value: object) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a pid, path, name, regex or unit name, got {show(value)}")
    return value


def _sources(top: Fields) -> tuple[tuple[str, SourceConfig], ...]:
    """Each registered source's section: ``enabled`` and the options it declares."""
    out = {}
    for t in registry.source_types():
        if t.section == "":
            out[t.name] = SourceConfig(t.default_enabled, tuple(t.defaults().items()))
            continue
        f = top.section(t.config_key, t.option_keys())
        enabled = f.get("enabled", checks.boolean, t.default_enabled)
        options = tuple((o.key, f.get(o.key, o.check, o.default)) for o in t.options)
        out[t.name] = SourceConfig(enabled, options)
    return tuple(out.items())


def _extensions(f: Fields) -> ExtensionsConfig:
    d = _DEFAULT.extensions
    return ExtensionsConfig(
        max_extensions=f.get(
            "max_extensions", checks.integer(1, MAX_LABEL_VALUES), d.max_extensions
        ),
        evict_after=f.get("evict_after", checks.duration(0, MAX_RETENTION), d.evict_after),
    )


_LATENCY_KEYS = ("window", "max_endpoints", "buckets", "quiet_after", "evict_after")


def _latency(w: Walker, f: Fields) -> LatencyConfig:
    d = _DEFAULT.latency
    buckets = d.buckets
    node = f.value_node("buckets")
    if node is not None:
        path = f.key_path("buckets")
        items = w.sequence(node, path)
        before = len(w.problems)
        values: list[float] = []
        for i, item in enumerate(items):
            bound = w.value(item, f"{path}[{i}]", checks.number(positive=True), None)
            if bound is not None and values and bound <= values[-1]:
                w.report(item, f"{path}[{i}]", f"{bound:g} is not above the bucket before it")
            if bound is not None:
                values.append(bound)
        if not items and len(w.problems) == before:
            w.report(node, path, "needs at least one bucket")
        if len(w.problems) == before:
            buckets = tuple(values)
    return LatencyConfig(
        window=f.get("window", checks.integer(1, MAX_LATENCY_WINDOW), d.window),
        max_endpoints=f.get("max_endpoints", checks.integer(1, MAX_LABEL_VALUES), d.max_endpoints),
        buckets=buckets,
        quiet_after=f.get(
            "quiet_after", checks.duration(0, MAX_RETENTION, lo_open=True), d.quiet_after
        ),
        evict_after=f.get("evict_after", checks.duration(0, MAX_RETENTION), d.evict_after),
    )


_HTTP_KEYS = (
    "max_body_bytes",
    "request_timeout",
    "idle_timeout",
    "max_connections",
    "ingest_allow",
    "ingest_token_file",
    "web_config_file",
)
MAX_CONNECTIONS = 1_000_000


def _http(w: Walker, f: Fields, base_dir: Path | None) -> HttpConfig:
    d = _DEFAULT.http
    allow = d.ingest_allow
    node = f.value_node("ingest_allow")
    if node is not None:
        path = f.key_path("ingest_allow")
        nets = [w.value(n, f"{path}[{i}]", checks.network, None) for i, n in
                enumerate(w.sequence(node, path))]  # fmt: skip
        allow = tuple(n for n in nets if n is not None)
    token_file = f.get("ingest_token_file", checks.optional(checks.string()), None)
    token = None
    if token_file is not None:
        token_file = str(_resolve(token_file, base_dir))
        try:
            token = read_secret(Path(token_file))
        except ValueError as e:
            w.report(f.value_node("ingest_token_file"), f.key_path("ingest_token_file"), str(e))
    web_file = f.get("web_config_file", checks.optional(checks.string()), None)
    web = None
    if web_file is not None:
        web_file = str(_resolve(web_file, base_dir))
        try:
            web = load_web_config(web_file)
        except ConfigError as e:
            w.problems.extend(e.details)
    timeout = checks.duration(0, MAX_TIMEOUT, lo_open=True)
    return HttpConfig(
        max_body_bytes=f.get("max_body_bytes", checks.integer(1, MAX_BODY_BYTES), d.max_body_bytes),
        request_timeout=f.get("request_timeout", timeout, d.request_timeout),
        idle_timeout=f.get("idle_timeout", timeout, d.idle_timeout),
        max_connections=f.get(
            "max_connections", checks.integer(1, MAX_CONNECTIONS), d.max_connections
        ),
        ingest_allow=allow,
        ingest_allow_listed=node is not None,
        ingest_token_file=token_file,
        ingest_token=token,
        web_config_file=web_file,
        web_config=web,
    )


def _logging(f: Fields) -> LoggingConfig:
    d = _DEFAULT.logging
    return LoggingConfig(
        level=f.get("level", checks.choice(LOG_LEVELS, "log level", fold_case=True), d.level),
        format=f.get("format", checks.choice(LOG_FORMATS, "log format"), d.format),
    )


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p

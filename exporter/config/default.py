"""The commented default config, generated from the declarations it documents.

``crankshaft-exporter default-config`` prints it, and ``config/exporter.yaml`` (what ``make
install`` puts in /etc) is its output, kept byte-equal by a test.  Every default shown comes
from the config model (``Config()``) and every source section from the registered source
types (:mod:`exporter.sources.registry`: ``SourceType.help``, each ``Option`` with its
default and help), so a new source needs no edit here and no value is written twice.

A new top-level section (say ``remote_write:``) is a key in the loader's ``CORE_KEYS``
and an entry in :data:`CORE_SECTIONS` (its commented text, defaults as ``{placeholders}``
filled by :func:`default_values`); a test fails while a top-level key has no text here.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import yaml

from exporter.alerts.rules import ENDPOINT_METRICS, EXTENSION_METRICS, AlertRule
from exporter.config.durations import format_duration
from exporter.config.loader import (
    MAX_SNAPSHOT_INTERVAL,
    MIN_SNAPSHOT_INTERVAL,
    top_keys,
)
from exporter.config.model import (
    INTERVAL_MAX,
    INTERVAL_MIN,
    LOG_LEVELS,
    AlertmanagerConfig,
    Config,
    WebhookConfig,
)
from exporter.sources import registry
from exporter.sources.registry import SourceType

_WEBHOOK = WebhookConfig(url="")  # the defaults of a webhook's optional keys
_ALERTMANAGER = AlertmanagerConfig()
WIDTH = 92  # the longest line of the text, comments included

HEADER = """\
# crankshaft-exporter configuration.
#
# Every key is optional: a missing key means the default shown here, which are the defaults
# of the Crankshaft Performance Monitoring System (running without --config uses them all;
# a --config naming a file that cannot be read is an error, exit 78).  Check a file with
#   crankshaft-exporter check-config FILE
# and apply changes to a running daemon with `systemctl reload crankshaft-exporter` (SIGHUP);
# an invalid file is rejected and the running configuration kept.
#
# Durations are a number of seconds (60, 0.5) or Prometheus-style strings: 500ms, 30s, 5m,
# 1h30m, 24h, 7d, 2w.  Relative file paths are relative to this file's folder.
"""

SOURCES_INTRO = """\
# Sources: one section each, named after the source (`check-config FILE --explain` lists
# them with their options).  `enabled: false` turns one off.  A source that finds nothing
# to read (no target process, no sensor) leaves its series absent, never 0.
"""

# Top-level key -> its commented text; ``{name}`` is a default from :func:`default_values`.
CORE_SECTIONS: dict[str, str] = {
    "listen": """\
# HOST:PORT of the HTTP server.  ":{port}" listens on every interface; "127.0.0.1:{port}" on
# loopback only.  Quote IPv6 addresses, which YAML would otherwise misread: "[::1]:{port}".
listen: "{listen}"
""",
    "interval": """\
# How often the target is sampled and alerts are evaluated ({interval_min} .. {interval_max}).
interval: {interval}
""",
    "history": """\
history:
  # Samples kept per series, in a ring buffer: {max_samples} x {interval} = {history_span}.
  max_samples: {max_samples}
  # The file that keeps the history (every series, latency windows and histogram counts,
  # extension states) across restarts, written atomically.  $STATE_DIRECTORY/ is the
  # folder systemd's StateDirectory= gives the service (/var/lib/crankshaft-exporter with
  # the shipped unit); when it is not set (run by hand), the history is not kept unless a
  # path is given here (a relative path is relative to this file).  null: never kept.
  # A damaged file is moved aside (FILE.corrupt-TIME) and the exporter starts empty; a full
  # or read-only disk is logged and counted (crankshaft_history_snapshot_errors_total).
  state_file: {state_file}
  # How often the history is written ({snapshot_min} .. {snapshot_max}), besides at stop and
  # before a reload that changes max_samples.  A crash (kill -9, power loss) loses at
  # most this much.
  snapshot_interval: {snapshot_interval}
""",
    "target": """\
# The process whose memory (RSS) and CPU are sampled.
#   self          this exporter itself (value: null)
#   pid           one process ID                    value: 1234
#   pidfile       the PID in a file, re-read each interval
#                                                   value: /run/crankshaft.pid
#   name          processes with this command name  value: crankshaft
#   cmdline       processes whose command line matches a regular expression
#                                                   value: "python3 .*openauto"
#   systemd_unit  every process of a systemd unit   value: crankshaft.service
#   none          sample nothing; values are only pushed (POST /metrics/record)
# A pidfile or unit need not exist yet: until it does, the target counts as down.
target:
  kind: {target_kind}
  value: {target_value}
""",
    "latency": """\
latency:
  # Observations kept per endpoint for exact p50/p95/p99.
  window: {window}
  # Endpoints tracked; observations of further endpoints are counted as dropped.
  max_endpoints: {max_endpoints}
  # Histogram bucket bounds for crankshaft_request_duration_seconds, in seconds,
  # positive and strictly increasing.
  buckets: {buckets}
  # No observation for this long means "no traffic": the average latency is absent (null
  # in JSON) and the request_latency alerts resolve until requests come back.
  quiet_after: {quiet_after}
  # At max_endpoints, an endpoint not observed for this long gives its slot to a new one,
  # so a burst of invented names cannot lock the real endpoints out.
  evict_after: {latency_evict_after}
""",
    "extensions": """\
extensions:
  # Extensions tracked; updates for further extensions are counted as dropped.
  max_extensions: {max_extensions}
  # At max_extensions, an extension not reported for this long gives its slot to a new one
  # (reporting the same status again counts as a report).
  evict_after: {extensions_evict_after}
""",
    "http": """\
http:
  # Largest request body accepted (POST /metrics/record); larger ones get 413.
  max_body_bytes: {max_body_bytes}
  # Deadline for a whole request (request line, headers and body), from its first byte;
  # a client that has not sent it all by then gets 408 and is disconnected.
  request_timeout: {request_timeout}
  # How long a keep-alive connection may wait for its next request before it is closed.
  idle_timeout: {idle_timeout}
  # Connections open at once.  At the limit the connection idle the longest is closed to
  # make room (new clients are not refused); capped by the open-files limit.
  max_connections: {max_connections}
  # Client networks allowed to POST /metrics/record without the token.  Left out, it means
  # loopback, and only while no ingest_token_file is set: with a token, every client needs
  # it (loopback too) unless its network is listed here.  [] lets nobody in without it.
  # ingest_allow: {ingest_allow}
  # A file holding a bearer token; a client sending "Authorization: Bearer TOKEN" (or
  # "X-Ingest-Token: TOKEN" when basic auth uses Authorization) may POST /metrics/record
  # from anywhere.  Read when the configuration is loaded.
  ingest_token_file: null
  # TLS and basic auth: an exporter-toolkit web-config file, the format node_exporter and
  # Prometheus read (--web.config.file wins over this).  Re-read when it or its certificate
  # files change.  See README, "TLS and basic auth".
  web_config_file: null
""",
    "logging": """\
logging:
  # {log_levels}.
  level: {log_level}
  # auto (journal under systemd, else text), text, json (one object per line) or journal.
  format: {log_format}
""",
    "alerts": """\
# Alert rules.  A level fires when the value is above its threshold; a rule needs a warning
# threshold, a critical one, or both.  When this key is present its list replaces the
# built-in rules (the ones below); an empty list means no alerts.
#   metric          {alert_metrics}
#   warning, critical       thresholds
#   description             text sent with the alert
#   for                     how long the value must stay above before the alert fires
#   warning_clear, critical_clear
#                   once firing, the level stays until the value is at or below this
#                   (hysteresis); default: the threshold itself
#   enabled                 false keeps the rule but never fires it
#   endpoint        request_latency_p95/p99 only: watch this endpoint only (default: each)
#   extension       extension_crashed only: watch this extension only (default: each)
# The four measured defaults wait `for: 5m`: at the 60 s interval that is six samples in a
# row above the threshold, so an app start or one slow minute does not page, a leak or an
# overload still does within minutes.  target_down waits 2m, so neither a service restarted
# between two samples nor one "down" sample pages; a crashed extension stays crashed and
# pages at once.  Without `for` a level fires on the first sample above its threshold.
alerts:
{alert_rules}""",
    "notifiers": """\
# Where alert transitions (fired, escalated, de-escalated, resolved) are sent, besides the
# log.  Deliveries are retried in the background and never delay collection; with a state
# directory (beside the history file), what is not yet delivered survives restarts.
notifiers:
  # JSON POSTs to each URL (http or https), e.g.
  #   - url: https://hooks.example.com/crankshaft
  #     timeout: {webhook_timeout}            # per attempt
  #     max_retries: {webhook_max_retries}         # failed answers; an unreachable receiver
  #                            # (an outage) waits
  #     retry_window: {webhook_retry_window}       # give up on an event this long after it happened
  #     headers: {{Authorization: "Bearer s3cret"}}
  webhooks: []
  # A Prometheus Alertmanager, e.g.
  #   alertmanager:
  #     url: {am_url}
  #     timeout: {am_timeout}
  #     resend_interval: {am_resend}    # firing alerts are re-sent this often
  #     retry_window: {am_retry_window}       # resolutions not yet delivered are kept this long
  alertmanager: null
""",
    "remote_write": """\
# Receivers this exporter pushes every collection to with Prometheus remote write 1.0 (a
# central Prometheus with --web.enable-remote-write-receiver, Mimir, Thanos Receive,
# VictoriaMetrics): for cars that are online only part of the time.  Samples wait in a send
# log beside the history file (StateDirectory=) until the receiver acknowledges them, across
# outages, SIGTERM, kill -9 and power loss (at most the last minute unsynced); delivery
# resumes oldest first, never sends a sample twice, and drops (and counts) what a receiver
# refuses or what grew older than max_sample_age.  Entries as Prometheus' remote_write, e.g.
#   - url: https://metrics.example.com/api/v1/write
#     name: central            # in self-metrics (remote_name) and the send log;
#                              # default from the url
#     labels: {{vehicle: car-17}}  # added to every series (a series' own label wins)
#     instance: car-17         # the instance label; default this machine's host name
#                              # (job is crankshaft)
#     max_sample_age: 1h       # keep below the receiver's out_of_order_time_window
#     remote_timeout: 30s
#     queue_config: {{max_samples_per_send: 500, min_backoff: 1s, max_backoff: 1m}}
#     tls_config: {{ca_file: /etc/crankshaft-exporter/ca.pem}}
#                              # also cert_file, key_file, insecure_skip_verify
#     basic_auth: {{username: car-17, password_file: /etc/crankshaft-exporter/rw-password}}
#     # or: authorization: {{type: Bearer, credentials_file: /etc/crankshaft-exporter/rw-token}}
remote_write: []
""",
}


def default_config_text() -> str:
    """The default ``exporter.yaml``: every key, its default and what it does."""
    values = default_values(Config())
    blocks = [HEADER]
    sources_started = False
    for key in top_keys():
        source = next((t for t in registry.source_types() if t.config_key == key), None)
        if source is not None:
            text = source_section(source)
            if not sources_started:
                text, sources_started = SOURCES_INTRO + text, True
        else:
            text = CORE_SECTIONS[key].format(**values)
        blocks.append(text)
    return "\n".join(blocks)


def source_section(t: SourceType) -> str:
    """One source's section: what it reads, ``enabled``, each option with its help."""
    lines = [f"{t.config_key}:"]
    lines += comment(t.help, "  ")
    lines.append(f"  enabled: {yaml_scalar(t.default_enabled)}")
    for option in t.options:
        lines += comment(option.help, "  ")
        lines.append(f"  {option.key}: {yaml_scalar(option.default)}")
    return "\n".join(lines) + "\n"


def comment(text: str, indent: str = "") -> list[str]:
    """``text`` as comment lines, a sentence with its first letter capitalized and a stop."""
    text = " ".join(text.split())
    if not text:
        return []
    text = text[0].upper() + text[1:]
    if not text.endswith((".", "!", "?")):
        text += "."
    return textwrap.wrap(text, WIDTH, initial_indent=indent + "# ",
                         subsequent_indent=indent + "# ", break_on_hyphens=False)


_PLAIN = re.compile(r"[A-Za-z0-9_./$-](?:[A-Za-z0-9_./$ -]*[A-Za-z0-9_./$-])?")


def yaml_scalar(value: Any) -> str:
    """A default as YAML reads it back: null, true/false, a number, a plain or quoted word."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:  # not read as null, 1, ...
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def number(value: float) -> str:
    """1536 rather than 1536.0; 0.005 as written."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def default_values(c: Config) -> dict[str, str]:
    """Every ``{placeholder}`` of :data:`CORE_SECTIONS`, from the model's defaults."""
    rules = c.alerts
    return {
        "listen": str(c.listen),
        "port": str(c.listen.port),
        "interval": format_duration(c.interval),
        "interval_min": format_duration(INTERVAL_MIN),
        "interval_max": format_duration(INTERVAL_MAX),
        "max_samples": str(c.history.max_samples),
        "history_span": _span(c.history.max_samples * c.interval),
        "state_file": yaml_scalar(c.history.state_file),
        "snapshot_interval": format_duration(c.history.snapshot_interval),
        "snapshot_min": format_duration(MIN_SNAPSHOT_INTERVAL),
        "snapshot_max": format_duration(MAX_SNAPSHOT_INTERVAL),
        "target_kind": c.target.kind,
        "target_value": yaml_scalar(c.target.value),
        "window": str(c.latency.window),
        "max_endpoints": str(c.latency.max_endpoints),
        "buckets": "[" + ", ".join(number(b) for b in c.latency.buckets) + "]",
        "quiet_after": format_duration(c.latency.quiet_after),
        "latency_evict_after": format_duration(c.latency.evict_after),
        "max_extensions": str(c.extensions.max_extensions),
        "extensions_evict_after": format_duration(c.extensions.evict_after),
        "max_body_bytes": str(c.http.max_body_bytes),
        "request_timeout": format_duration(c.http.request_timeout),
        "idle_timeout": format_duration(c.http.idle_timeout),
        "max_connections": str(c.http.max_connections),
        "ingest_allow": "[" + ", ".join(json.dumps(str(n)) for n in c.http.ingest_allow) + "]",
        "log_levels": ", ".join(LOG_LEVELS[:-1]) + " or " + LOG_LEVELS[-1],
        "log_level": c.logging.level,
        "log_format": c.logging.format,
        "alert_metrics": "\n#                   ".join(_alert_metric_lines()),
        "alert_rules": "".join(rule_yaml(r, every_key=i == 0) for i, r in enumerate(rules)),
        "webhook_timeout": format_duration(_WEBHOOK.timeout),
        "webhook_max_retries": str(_WEBHOOK.max_retries),
        "webhook_retry_window": format_duration(_WEBHOOK.retry_window),
        "am_url": _ALERTMANAGER.url,
        "am_timeout": format_duration(_ALERTMANAGER.timeout),
        "am_resend": format_duration(_ALERTMANAGER.resend_interval),
        "am_retry_window": format_duration(_ALERTMANAGER.retry_window),
    }


def _span(seconds: float) -> str:
    hours = seconds / 3600
    return f"{number(hours)} hours" if hours >= 1 else format_duration(seconds)


def _alert_metric_lines() -> list[str]:
    """The alert metric names with their units, wrapped to the comment's column."""
    names = [f"{s.key} ({s.unit})" for s in registry.all_series() if s.alert]
    names += [f"{m} (ms, per endpoint)" for m in ENDPOINT_METRICS]
    names += [f"{m} (1 while an extension is crashed)" for m in EXTENSION_METRICS]
    names.append("target_down (1 while no target process runs)")
    return textwrap.wrap(", ".join(names), WIDTH - len("#   metric          "),
                         break_on_hyphens=False)


def rule_yaml(rule: AlertRule, every_key: bool = False) -> str:
    """One rule as a list item of ``alerts:``; ``every_key`` also writes the optional keys
    left at their defaults (the first shipped rule shows them all)."""
    lines = [f"  - metric: {rule.metric}"]
    for key, value in (("warning", rule.warning_threshold), ("critical", rule.critical_threshold)):
        if value is not None:
            lines.append(f"    {key}: {number(value)}")
    lines.append(f"    description: {yaml_scalar(rule.description)}")
    if rule.for_seconds or every_key:
        lines.append(f"    for: {format_duration(rule.for_seconds)}")
    for key, value in (("warning_clear", rule.warning_clear),
                       ("critical_clear", rule.critical_clear)):
        if value is not None or every_key:
            lines.append(f"    {key}: {yaml_scalar(value)}")
    if not rule.enabled or every_key:
        lines.append(f"    enabled: {yaml_scalar(rule.enabled)}")
    if rule.selector is not None:
        key = "endpoint" if rule.metric in ENDPOINT_METRICS else "extension"
        lines.append(f"    {key}: {yaml_scalar(rule.selector)}")
    return "\n".join(lines) + "\n"


def explain(config: Config) -> str:
    """What ``check-config --explain`` adds: each source, whether it runs, what it reads,
    and each option's value in ``config`` with what it means."""
    lines = ["sources:"]
    for t in registry.source_types():
        found = config.source(t.name)
        enabled = t.default_enabled if found is None else found.enabled
        options = config.source_options(t.name)
        where = "the target: section" if t.section == "" else f"section {t.config_key}:"
        state = "enabled" if enabled else "disabled"
        lines.append(f"  {t.name} ({state}; {where})")
        lines += textwrap.wrap(t.help, WIDTH, initial_indent="    ", subsequent_indent="    ")
        for o in t.options:
            value = yaml_scalar(options.get(o.key, o.default))
            lines.append(f"    {o.key}: {value}")
            lines += textwrap.wrap(o.help, WIDTH, initial_indent="      ",
                                   subsequent_indent="      ")
    return "\n".join(lines) + "\n"

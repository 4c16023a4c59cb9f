"""Config: durations, defaults, the default file, the AlertRule mapping, and bad files.

Every bad file must produce a one-line problem naming its key path and line; no input may
produce anything but a Config or a ConfigError (the daemon re-reads the file on SIGHUP).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.alerts.rules import DEFAULT_RULES, SHIPPED_RULES, AlertRule
from exporter.config import (
    AlertmanagerConfig,
    Config,
    ConfigError,
    ListenAddress,
    WebhookConfig,
    default_config_text,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
)
from exporter.config.alerting import ALERT_KEYS
from exporter.config.default import CORE_SECTIONS, comment, default_values, yaml_scalar
from exporter.config.loader import top_keys
from exporter.latency import DEFAULT_BUCKETS_SECONDS
from exporter.sources import registry
from exporter.sources.targets import TargetSpec
from exporter.store import DEFAULT_CAPACITY

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "exporter.yaml"  # generated: what `make install` puts in /etc


def problems_of(text: str, **kwargs: object) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "exporter.yaml", **kwargs)  # type: ignore[arg-type]
    return [(p.line, p.path, p.message) for p in info.value.details]


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (60, 60.0),
        (0.5, 0.5),
        ("0", 0.0),
        ("60", 60.0),
        ("0.25", 0.25),
        ("500ms", 0.5),
        ("60s", 60.0),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1d2h3m4s5ms", 93784.005),
        ("1h1ms", 3600.001),
        (" 5s ", 5.0),
    ],
)
def test_durations_parse(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "got boolean true"),
        (None, "got null"),
        ([1], "got a list"),
        (-1, "must not be negative"),
        (-0.5, "must not be negative"),
        ("-5s", "must not be negative"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (10**400, "too large"),
        ("", 'invalid duration ""'),
        ("1x", 'invalid duration "1x"'),
        ("5s1m", "invalid duration"),  # not in descending order
        ("1m1m", "invalid duration"),
        ("1.5s", "invalid duration"),  # Prometheus takes whole numbers per unit
        ("s", "invalid duration"),
        ("nan", "invalid duration"),
        ("inf", "invalid duration"),
        ("1 m", "invalid duration"),
        ("9" * 400 + "w", "too large"),
    ],
)
def test_durations_reject(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (60, "1m"), (90, "1m30s"), (86400, "1d"), (604800, "1w")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**12))
def test_format_duration_round_trips(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == ms / 1000


# --- defaults and the default file ------------------------------------------------------------


def test_defaults_are_the_seeds() -> None:
    c = Config.default()
    assert c == Config()
    assert str(c.listen) == ":9001"
    assert c.interval_ms == 60_000
    assert c.history.max_samples == DEFAULT_CAPACITY == 1440
    assert c.target == TargetSpec("self", None)
    assert c.connections.port is None
    assert c.latency.buckets == DEFAULT_BUCKETS_SECONDS
    assert c.http.ingest_allow == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert c.http.ingest_token is None
    assert (c.logging.level, c.logging.format) == ("INFO", "auto")
    assert c.alerts == SHIPPED_RULES
    assert c.notifiers.webhooks == ()
    assert c.notifiers.alertmanager is None


def test_shipped_rules_are_the_seeds_with_a_for_that_waits_out_a_single_sample() -> None:
    """The shipped configuration does not page on one 60 s sample; the seed's own
    MetricsEndpoint() defaults (DEFAULT_RULES) keep firing on the first crossing sample."""
    assert [(r.metric, r.warning_threshold, r.critical_threshold, r.description)
            for r in SHIPPED_RULES] == [
        (r.metric, r.warning_threshold, r.critical_threshold, r.description)
        for r in DEFAULT_RULES
    ]
    fors = {r.metric: r.for_seconds for r in SHIPPED_RULES}
    assert fors == {"memory_usage": 300.0, "cpu_usage": 300.0, "active_connections": 300.0,
                    "request_latency": 300.0, "target_down": 120.0, "extension_crashed": 0.0}
    assert all(r.for_seconds == 0 for r in DEFAULT_RULES)
    assert AlertRule("memory_usage", 1800.0, 2200.0, "Custom memory alert").for_seconds == 0


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "~\n", "---\n", "\ufeff"])
def test_empty_file_means_defaults(text: str) -> None:
    assert parse_config(text) == Config.default()


def test_default_file_equals_defaults() -> None:
    assert parse_config(default_config_text(), "exporter.yaml") == Config.default()
    assert load_config(SHIPPED) == Config.default()


def test_shipped_file_is_the_generated_text_byte_for_byte() -> None:
    assert SHIPPED.read_bytes() == default_config_text().encode("utf-8"), (
        "config/exporter.yaml is generated: run "
        "`.venv/bin/crankshaft-exporter default-config > config/exporter.yaml`"
    )


def test_every_top_level_key_has_its_commented_text() -> None:
    """The loader's keys and the generated file's agree: a new core section needs its text
    in CORE_SECTIONS, a source section comes from its declaration."""
    source_keys = {t.config_key for t in registry.source_types()}
    assert set(top_keys()) - source_keys <= set(CORE_SECTIONS)
    text = default_config_text()
    for t in registry.source_types():
        if t.section == "":
            continue
        for line in comment(t.help, "  ") + [
            line for o in t.options for line in comment(o.help, "  ")
        ]:
            assert line in text.splitlines()


@pytest.mark.parametrize("key", sorted(CORE_SECTIONS))
def test_each_core_section_text_is_yaml_of_its_key_alone(key: str) -> None:
    text = CORE_SECTIONS[key].format(**default_values(Config()))
    assert list(yaml.safe_load(text)) == [key]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "null"), (True, "true"), (1536.0, "1536"), (0.005, "0.005"), ("auto", "auto"),
     ("Memory usage high", "Memory usage high"), ("yes", '"yes"'), ("1.5", '"1.5"'),
     ("a: b", '"a: b"'), ("# x", '"# x"'), ("", '""'), ("é", '"é"'), ("/sys", "/sys")],
)
def test_defaults_are_written_as_yaml_reads_them_back(value: object, shown: str) -> None:
    assert yaml_scalar(value) == shown
    assert yaml.safe_load(f"k: {shown}")["k"] == value


def test_default_file_shows_every_key() -> None:
    data = yaml.safe_load(default_config_text())
    assert tuple(data) == top_keys()
    assert set(data["alerts"][0]) | {"endpoint", "extension"} == set(ALERT_KEYS)
    text = default_config_text()
    for key in ("endpoint", "extension", "url", "timeout", "max_retries", "retry_window"):
        assert key in text  # documented in comments where the default is absent


def test_empty_sections_mean_their_defaults() -> None:
    text = "history:\nlatency:\nhttp: {}\nnotifiers:\nlogging:\n"
    assert parse_config(text) == Config.default()


# --- a full, valid file ---------------------------------------------------------------------

FULL = """\
listen: "127.0.0.1:9100"
interval: 500ms
history: {max_samples: 10}
target: {kind: pidfile, value: run/app.pid}
connections: {port: 8080}
latency: {window: 50, max_endpoints: 7, buckets: [0.1, 1, 10]}
extensions: {max_extensions: 3}
http:
  max_body_bytes: 4096
  request_timeout: 2.5
  ingest_allow: ["10.0.0.0/8", "192.168.1.5", "fd00::/8"]
  ingest_token_file: token
logging: {level: debug, format: json}
alerts: []
notifiers:
  webhooks:
    - url: https://hooks.example.com/x
      timeout: 2s
      max_retries: 0
      retry_window: 1h
      headers: {Authorization: "Bearer abc", X-Team: ops}
    - url: http://127.0.0.1:8000/hook
  alertmanager: {}
"""


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  s3cret-token\n")
    (tmp_path / "exporter.yaml").write_text(FULL)
    c = load_config(tmp_path / "exporter.yaml")
    assert c.listen == ListenAddress("127.0.0.1", 9100)
    assert c.interval == 0.5 and c.interval_ms == 500
    assert c.history.max_samples == 10
    assert c.target == TargetSpec("pidfile", str(tmp_path / "run" / "app.pid"))
    assert c.connections.port == 8080
    assert (c.latency.window, c.latency.max_endpoints, c.latency.buckets) == (50, 7, (0.1, 1, 10))
    assert c.extensions.max_extensions == 3
    assert c.http.max_body_bytes == 4096
    assert c.http.request_timeout == 2.5
    assert [str(n) for n in c.http.ingest_allow] == ["10.0.0.0/8", "192.168.1.5/32", "fd00::/8"]
    assert c.http.ingest_token_file == str(tmp_path / "token")
    assert c.http.ingest_token == "s3cret-token"
    assert "s3cret" not in repr(c)
    assert (c.logging.level, c.logging.format) == ("DEBUG", "json")
    assert c.alerts == ()
    assert c.notifiers.webhooks == (
        WebhookConfig(
            url="https://hooks.example.com/x",
            timeout=2.0,
            max_retries=0,
            retry_window=3600.0,
            headers=(("Authorization", "Bearer abc"), ("X-Team", "ops")),
        ),
        WebhookConfig(url="http://127.0.0.1:8000/hook"),
    )
    assert c.notifiers.alertmanager == AlertmanagerConfig()
    hash(c)  # frozen all the way down


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":9001", "", 9001),
        ("127.0.0.1:9001", "127.0.0.1", 9001),
        ("[::1]:9001", "::1", 9001),
        ("localhost:80", "localhost", 80),
        ("0.0.0.0:65535", "0.0.0.0", 65535),
    ],
)
def test_listen_addresses(text: str, host: str, port: int) -> None:
    address = ListenAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert str(address) == text
    assert parse_config(f'listen: "{text}"').listen == address


@pytest.mark.parametrize(
    "kind, value", [("pid", 1), ("pid", "42"), ("name", "crankshaft"), ("cmdline", "a.*b"),
                    ("systemd_unit", "no-such-unit.service"), ("pidfile", "/no/such/file.pid"),
                    ("none", None)],
)  # fmt: skip
def test_targets_need_not_exist_yet(kind: str, value: object) -> None:
    text = yaml.safe_dump({"target": {"kind": kind, "value": value}})
    target = parse_config(text).target
    assert target.kind == kind
    target.finder()
    if kind == "pid":
        assert target.value == int(value)  # type: ignore[call-overload]


def test_null_lists_are_empty() -> None:
    c = parse_config("alerts:\nhttp:\n  ingest_allow:\nnotifiers:\n  webhooks:\n")
    assert c.alerts == ()
    assert c.http.ingest_allow == ()
    assert c.notifiers.webhooks == ()


def test_merge_keys_and_anchors() -> None:
    text = """\
base: &base {metric: request_latency_p95, warning: 100, critical: 200, for: 1m}
"""
    # "base" is not a config key; anchors are defined where they are used instead.
    assert problems_of(text)[0][1] == "base"
    text = """\
alerts:
  - &p95 {metric: request_latency_p95, warning: 100, critical: 200, for: 1m}
  - <<: *p95
    endpoint: /api
    critical: 300
"""
    rules = parse_config(text).alerts
    assert rules[1] == AlertRule(
        "request_latency_p95", 100.0, 300.0, for_seconds=60.0, selector="/api"
    )


def test_recursive_aliases_are_harmless() -> None:
    assert problems_of("alerts: &a [*a]") == [
        (1, "alerts[0]", "expected a mapping of keys, got a list")
    ]
    assert parse_config("history: &h {<<: *h}") == Config.default()  # merging itself: a no-op
    with pytest.raises(ConfigError):
        parse_config("history: &h {<<: *h, max_samples: 0}")


# --- the AlertRule mapping ------------------------------------------------------------------


def test_alert_rule_mapping() -> None:
    text = """\
alerts:
  - metric: request_latency_p99
    warning: 250
    critical: 1000.5
    description: Slow API
    for: 5m
    warning_clear: 200
    critical_clear: 900
    enabled: false
    endpoint: /api/v1
  - metric: extension_crashed
    critical: 0
    extension: navigation
  - metric: cpu_usage
    warning: 70
"""
    assert parse_config(text).alerts == (
        AlertRule(
            metric="request_latency_p99",
            warning_threshold=250.0,
            critical_threshold=1000.5,
            description="Slow API",
            enabled=False,
            for_seconds=300.0,
            warning_clear=200.0,
            critical_clear=900.0,
            selector="/api/v1",
        ),
        AlertRule("extension_crashed", None, 0.0, selector="navigation"),
        AlertRule("cpu_usage", 70.0, None),
    )


def test_alert_problems_are_all_reported_at_once() -> None:
    text = """\
alerts:
  - metric: cpu_usage
    warning: 80
    critical: 70
    warning_clear: 90
"""
    assert problems_of(text) == [
        (3, "alerts[0].warning", "80 is above critical (70)"),
        (5, "alerts[0].warning_clear", "90 is above warning (80)"),
    ]


def test_a_rejected_field_does_not_hide_the_other_problems_of_its_rule() -> None:
    text = """\
alerts:
  - metric: cpu_usage
    warning: 90
    critical: 70
    for: -5
  - metric: memory_usage
    warning: lots
    critical: 70
    warning_clear: 80
"""
    assert problems_of(text) == [
        (3, "alerts[0].warning", "90 is above critical (70)"),
        (5, "alerts[0].for", "duration must not be negative, got -5"),
        (7, "alerts[1].warning", 'expected a number, got string "lots"'),
    ]


def test_selectors_may_repeat_a_metric() -> None:
    text = """\
alerts:
  - {metric: request_latency_p95, critical: 1}
  - {metric: request_latency_p95, critical: 2, endpoint: /a}
  - {metric: request_latency_p95, critical: 3, endpoint: /b}
"""
    assert [r.selector for r in parse_config(text).alerts] == [None, "/a", "/b"]


# --- bad files: each problem names its key and line -----------------------------------------

BAD = [
    ("interval: 1x", "interval", 1, 'invalid duration "1x"'),
    ("interval: -5", "interval", 1, "must not be negative"),
    ("interval: -5s", "interval", 1, "must not be negative"),
    ("interval: 5ms", "interval", 1, "at least 10ms"),
    ("interval: 25h", "interval", 1, "at most 1d"),
    ("interval: yes", "interval", 1, "YAML reads yes as a boolean"),
    ("# c\n\nhistroy:\n  max_samples: 5", "histroy", 3, 'unknown key (did you mean "history"?)'),
    ("history:\n  snapshot_interval: 0s", "history.snapshot_interval", 2, "at least 1s"),
    ("history:\n  snapshot_interval: 2d", "history.snapshot_interval", 2, "at most 1d"),
    ("history:\n  snapshot_interval: -1", "history.snapshot_interval", 2, "must not be negative"),
    ("history:\n  state_file: /var/lib/x/", "history.state_file", 2, "names a folder"),
    ("history:\n  state_file: $HOME/h.bin", "history.state_file", 2, "only $STATE_DIRECTORY/"),
    ("history:\n  state_file: 5", "history.state_file", 2, "expected a string"),
    ("history:\n  max_samples: 0", "history.max_samples", 2, "between 1 and"),
    ('history:\n  max_samples: "100"', "history.max_samples", 2, 'got string "100"'),
    ("history:\n  max_sample: 100", "history.max_sample", 2, 'did you mean "max_samples"'),
    ("history: 5", "history", 1, "expected a mapping"),
    ("listen: localhost", "listen", 1, "has no port"),
    ('listen: "19303"', "listen", 1, 'has no host part; write HOST:PORT, e.g. ":19303"'),
    ('listen: ":99999"', "listen", 1, "0..65535"),
    ('listen: "::1:9001"', "listen", 1, "need brackets"),
    ("listen: 9001", "listen", 1, "HOST:PORT"),
    ("target:\n  kind: proc", "target.kind", 2, 'unknown kind "proc"; one of self, pid,'),
    ("target:\n  kind: pid", "target.value", 2, 'required for kind "pid"'),
    ("target:\n  kind: pid\n  value: -3", "target.value", 3, "positive integer"),
    ('target:\n  kind: cmdline\n  value: "(x"', "target.value", 3, "regex"),
    ("target:\n  value: 1234", "target.value", 2, 'kind "self" takes no value'),
    ("target:\n  kind: name\n  value: 1.5", "target.value", 3, "got 1.5"),
    ("connections:\n  port: 0", "connections.port", 2, "between 1 and 65535"),
    ("latency:\n  buckets: [0.1, 0.05]", "latency.buckets[1]", 2, "not above the bucket"),
    ("latency:\n  buckets:\n    - 1\n    - -2", "latency.buckets[1]", 4, "must be above 0"),
    ("latency:\n  buckets: []", "latency.buckets", 2, "at least one bucket"),
    ("latency:\n  window: on", "latency.window", 2, "YAML reads on as a boolean"),
    ('http:\n  ingest_allow: ["10.0.0.300/8"]', "http.ingest_allow[0]", 2, "invalid network"),
    ("http:\n  ingest_allow: 10.0.0.0/8", "http.ingest_allow", 2, "expected a list"),
    ("http:\n  ingest_token_file: /no/such/token", "http.ingest_token_file", 2, "cannot read"),
    ("http:\n  request_timeout: 0s", "http.request_timeout", 2, "above 0s"),
    ("http:\n  max_body_bytes: 1e6", "http.max_body_bytes", 2, "YAML 1.1 reads this as text"),
    ("logging:\n  level: LOUD", "logging.level", 2, 'unknown log level "LOUD"'),
    ("logging:\n  format: jsn", "logging.format", 2, 'did you mean "json"'),
    ("alerts: 5", "alerts", 1, "expected a list"),
    ("alerts:\n  - metric: cpu_usage\n    warning: 80\n    critical: 70", "alerts[0].warning", 3,
     "80 is above critical (70)"),
    ('alerts:\n  - metric: cpu_usage\n    warning: "80"', "alerts[0].warning", 3,
     'expected a number, got string "80"'),
    ("alerts:\n  - metric: cpu_usage\n    warning: off", "alerts[0].warning", 3,
     "got boolean false (YAML reads off as a boolean)"),
    ("alerts:\n  - metric: cpu_usage\n    critical: .inf", "alerts[0].critical", 3, "finite"),
    ("alerts:\n  - metric: cpu\n    warning: 1", "alerts[0].metric", 2,
     'unknown metric "cpu" (did you mean "cpu_usage"?)'),
    ("alerts:\n  - warning: 1", "alerts[0].metric", 2, "required"),
    ("alerts:\n  - metric: cpu_usage", "alerts[0]", 2, "needs a warning threshold"),
    ("alerts:\n  -", "alerts[0]", 2, "expected a mapping"),
    ("alerts:\n  - metric: cpu_usage\n    critical: 5\n    for: 1x", "alerts[0].for", 4,
     "invalid duration"),
    ("alerts:\n  - metric: cpu_usage\n    critical: 5\n    endpoint: /api", "alerts[0].endpoint",
     4, "only request_latency_p95 and request_latency_p99"),
    ("alerts:\n  - metric: target_down\n    critical: 0\n    extension: x",
     "alerts[0].extension", 4, "only extension_crashed"),
    ("alerts:\n  - metric: cpu_usage\n    critical: 5\n    critical_clear: 9",
     "alerts[0].critical_clear", 4, "9 is above critical (5)"),
    ("alerts:\n  - metric: cpu_usage\n    warning_clear: 1\n    critical: 5",
     "alerts[0].warning_clear", 3, "set but warning threshold is not"),
    ('alerts:\n  - metric: cpu_usage\n    critical: 1\n    enabled: "no"', "alerts[0].enabled", 4,
     "expected true or false"),
    ("alerts:\n  - metric: cpu_usage\n    critical: 1\n    severity: 1", "alerts[0].severity", 4,
     "unknown key"),
    ("alerts:\n  - {metric: cpu_usage, critical: 1}\n  - {metric: cpu_usage, critical: 2}",
     "alerts[1].metric", 3, "a second rule for cpu_usage (the first is alerts[0])"),
    ("interval: 1m\nhistory: {}\ninterval: 2m", "interval", 3, "duplicate key (first on line 1)"),
    ("alerts:\n  - metric: cpu_usage\n    critical: 1\n    critical: 2", "alerts[0].critical", 4,
     "duplicate key (first on line 3)"),
    ("notifiers:\n  webhooks:\n    - url: ftp://x", "notifiers.webhooks[0].url", 3,
     "http:// or https://"),
    ("notifiers:\n  webhooks:\n    - timeout: 1s", "notifiers.webhooks[0].url", 3, "required"),
    ('notifiers:\n  webhooks:\n    - url: http://h\n      headers: {"A B": x}',
     'notifiers.webhooks[0].headers["A B"]', 4, "header name"),
    ("notifiers:\n  webhooks:\n    - url: http://h\n      max_retries: -1",
     "notifiers.webhooks[0].max_retries", 4, "between 0 and"),
    ("notifiers:\n  alertmanager:\n    url: http://h\n    timeout: 1x",
     "notifiers.alertmanager.timeout", 4, "invalid duration"),
    ("notifiers:\n  alertmanager: http://h", "notifiers.alertmanager", 2, "expected a mapping"),
    ('notifiers:\n  webhooks:\n    - url: http://h\n      headers: {X-A: "a\\r\\nX-B: b"}',
     "notifiers.webhooks[0].headers.X-A", 4, "line breaks"),
    ("interval: !!int abc", "interval", 1, "cannot read this value"),
    ("interval: !custom 5", "interval", 1, "cannot read this value"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "path", "line", "fragment"), BAD)
def test_bad_file_names_key_and_line(text: str, path: str, line: int, fragment: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0][:2] == (line, path)
    assert fragment in problems[0][2]


def test_problem_lines_have_the_compiler_format() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("a: 1\nalerts:\n  - metric: cpu_usage\n    warning: 80\n    critical: 70\n",
                     "exporter.yaml")  # fmt: skip
    assert info.value.problems == [
        "exporter.yaml:1: a: unknown key; known keys: " + ", ".join(top_keys()),
        "exporter.yaml:4: alerts[0].warning: 80 is above critical (70)",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_every_problem_is_collected() -> None:
    text = "interval: 1x\nhistory:\n  max_samples: -1\nlogging: {level: x, format: y}\nfoo: 1\n"
    assert [(line, path) for line, path, _ in problems_of(text)] == [
        (1, "interval"),
        (3, "history.max_samples"),
        (4, "logging.level"),
        (4, "logging.format"),
        (5, "foo"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("- a\n- b\n", 1, "top level must be a mapping"),
        ("just text\n", 1, "top level must be a mapping"),
        ("a: [1, 2\nb: 3\n", 2, "invalid YAML"),
        ("history:\n  max_samples: 1\n max: 2\n", 3, "invalid YAML"),
        ("a: b\n\tc: d\n", 2, "invalid YAML"),
        ("x: *undefined\n", 1, "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, "invalid YAML"),
        ("a: 1\nb: \x00\n", 2, "invalid YAML"),
        ("[" * 5000, None, "invalid YAML"),
    ],
)
def test_bad_yaml_names_its_line(text: str, line: int | None, fragment: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0][0] == line
    assert problems[0][1] == ""
    assert fragment in problems[0][2]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read: No such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        load_config(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"listen: ':9001'\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.yaml:2: not UTF-8 text \(byte 0xe9\)"):
        load_config(latin1)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "is empty"), (b" \n\t\n", "is empty"), (b"two words", "one word"),
     (b"a\nb", "one word"), (b"\xff\xfe", "not UTF-8"), (b"x" * 5000, "larger than")],
)  # fmt: skip
def test_bad_token_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    (tmp_path / "token").write_bytes(content)
    problems = problems_of("http:\n  ingest_token_file: token\n", base_dir=tmp_path)
    assert [(line, path) for line, path, _ in problems] == [(2, "http.ingest_token_file")]
    assert fragment in problems[0][2]


def test_token_file_must_be_readable(tmp_path: Path) -> None:
    problems = problems_of(f"http:\n  ingest_token_file: {tmp_path}\n")
    assert "Is a directory" in problems[0][2] or "not a regular file" in problems[0][2]
    if os.geteuid() != 0:  # root reads anything
        token = tmp_path / "token"
        token.write_text("t")
        token.chmod(0)
        problems = problems_of(f"http:\n  ingest_token_file: {token}\n")
        assert "Permission denied" in problems[0][2]


# --- command-line overrides -----------------------------------------------------------------


def test_overrides() -> None:
    c = Config.default().with_overrides(listen="127.0.0.1:1234", interval="90", log_level="debug")
    assert c.listen == ListenAddress("127.0.0.1", 1234)
    assert c.interval_ms == 90_000
    assert c.logging.level == "DEBUG"
    assert Config.default().with_overrides() == Config.default()
    assert Config.default().with_overrides(interval="1m30s").interval == 90.0
    for kwargs in ({"listen": "nope"}, {"interval": "1x"}, {"interval": 0}, {"log_level": "x"}):
        with pytest.raises(ValueError):
            Config.default().with_overrides(**kwargs)


# --- no input gives a traceback -------------------------------------------------------------


def assert_config_or_config_error(text: str) -> None:
    try:
        result = parse_config(text, "fuzz.yaml")
    except ConfigError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.startswith("fuzz.yaml")
            assert "\n" not in problem and "\r" not in problem
            problem.encode("utf-8")  # printable: no lone surrogates
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    assert_config_or_config_error(text)


KEYS = sorted(set(top_keys()) | set(ALERT_KEYS) | {
    "max_samples", "kind", "value", "port", "window", "max_endpoints", "buckets",
    "max_extensions", "max_body_bytes", "request_timeout", "ingest_allow", "ingest_token_file",
    "idle_timeout", "max_connections", "web_config_file",
    "level", "format", "webhooks", "alertmanager", "url", "timeout", "max_retries",
    "retry_window", "resend_interval", "headers", "state_file", "snapshot_interval",
})  # fmt: skip
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["5m", "-1s", "1x", "500ms", ":9001", "[::1]:80", "10.0.0.0/8", "http://h:1/x", "pid",
         "pidfile", "cmdline", "(", "cpu_usage", "request_latency_p95", "extension_crashed",
         "/dev/zero", "/", "DEBUG", "json", "self", "none"]
    )
)  # fmt: skip
STRUCTURES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), STRUCTURES, max_size=6) | STRUCTURES)
def test_arbitrary_structures_never_raise_anything_else(data: object) -> None:
    assert_config_or_config_error(yaml.safe_dump(data, allow_unicode=True))


DEFAULT_LINES = default_config_text().splitlines()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=len(DEFAULT_LINES) - 1),
    st.text(alphabet=st.sampled_from(" :-[]{}#&*!|>'\"%@`,?\tabc019.\n"), max_size=12),
)
def test_mutated_default_file_never_raises_anything_else(index: int, junk: str) -> None:
    lines = list(DEFAULT_LINES)
    lines[index] = lines[index][: len(lines[index]) // 2] + junk
    assert_config_or_config_error("\n".join(lines))


# --- history persistence keys -----------------------------------------------------------------


def test_history_state_file_defaults_to_the_systemd_state_directory() -> None:
    h = Config.default().history
    assert h.state_file == "$STATE_DIRECTORY/history.bin" and h.snapshot_interval == 300.0
    assert h.state_path({"STATE_DIRECTORY": "/var/lib/crankshaft-exporter"}) == (
        "/var/lib/crankshaft-exporter/history.bin")
    # several folders (StateDirectory=a b): the first one
    assert h.state_path({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == "/var/lib/a/history.bin"
    assert h.state_path({}) is None  # run by hand: kept in memory only


def test_history_state_file_null_or_relative(tmp_path: Path) -> None:
    assert parse_config("history:\n  state_file: null").history.state_path(
        {"STATE_DIRECTORY": "/s"}) is None
    config = tmp_path / "exporter.yaml"
    config.write_text("history:\n  state_file: data/h.bin\n  snapshot_interval: 30s\n")
    h = load_config(str(config)).history
    assert h.state_file == str(tmp_path / "data" / "h.bin")  # relative to the config file
    assert h.state_path({}) == h.state_file and h.snapshot_interval == 30.0


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("self", "self", None), ("none", "none", None), ("pid:42", "pid", 42),
     ("name:crankshaft", "name", "crankshaft"), ("cmdline:python3 .*openauto", "cmdline",
                                                "python3 .*openauto"),
     ("systemd_unit:crankshaft.service", "systemd_unit", "crankshaft.service")],
)
def test_target_override(text: str, kind: str, value: object) -> None:
    c = Config.default().with_overrides(target=text)
    assert (c.target.kind, c.target.value) == (kind, value)


def test_target_override_pidfile_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = Config.default().with_overrides(target="pidfile:run/x.pid")
    assert c.target.value == str(tmp_path / "run" / "x.pid")


@pytest.mark.parametrize(
    ("text", "message"),
    [("nope:1", 'target: unknown kind "nope"'), ("pid", 'kind "pid" needs a value'),
     ("self:1", 'kind "self" takes no value'), ("pid:x", "positive integer"),
     ("cmdline:(x", "regex")],
)
def test_bad_target_override(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Config.default().with_overrides(target=text)

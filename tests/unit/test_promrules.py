"""Tests for exporter.promrules: the Prometheus alerting rules generated from the exporter's
alert rules (structure, selectors, hysteresis, the committed rules file, the CLI command).

Whether Prometheus evaluates them like the exporter does is tests/real/test_alert_rules.py
(promtool); here only the generated text and structure are checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.rules import DEFAULT_RULES, AlertRule
from exporter.cli import EX_CONFIG, main
from exporter.config import Config, format_duration, load_config, parse_duration
from exporter.promrules import alert_name, build_rules, render_rules

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "config" / "crankshaft-exporter.rules.yml"
GROUP = "crankshaft-exporter"
P95 = "request_latency_p95"
P99 = "request_latency_p99"
EXT = "extension_crashed"


def entries(*rules: AlertRule) -> list[dict]:
    doc = build_rules(rules)
    (group,) = doc["groups"]
    assert group["name"] == GROUP
    return group["rules"]


def by_severity(*rules: AlertRule) -> dict[str, dict]:
    out = {}
    for e in entries(*rules):
        assert e["labels"]["severity"] not in out
        out[e["labels"]["severity"]] = e
    return out


def promql_string(expr: str, label: str, op: str) -> str:
    """The value of the ``label op "..."`` matcher in expr, with PromQL's escapes undone."""
    m = re.search(re.escape(label) + re.escape(op) + r'"((?:[^"\\]|\\.)*)"', expr)
    assert m is not None, f"no {label}{op}... matcher in {expr!r}"
    return re.sub(r"\\(.)", r"\1", m.group(1))


# --- structure ------------------------------------------------------------------------------


def test_alert_names_are_camel_case_per_metric():
    assert alert_name("memory_usage") == "CrankshaftMemoryUsage"
    assert alert_name("request_latency_p95") == "CrankshaftRequestLatencyP95"
    assert alert_name("target_down") == "CrankshaftTargetDown"


def test_default_rules_one_group_one_rule_per_defined_level():
    rules = entries(*DEFAULT_RULES)
    expected = [
        (alert_name(r.metric), lvl.lower(), r.metric)
        for r in DEFAULT_RULES
        for lvl in ("WARNING", "CRITICAL")
        if r.threshold(lvl) is not None
    ]
    assert [(e["alert"], e["labels"]["severity"], e["labels"]["metric"]) for e in rules] == expected
    assert len(rules) == 10  # four seed rules x 2 levels, extension_crashed and target_down x 1
    for e in rules:
        assert list(e) == ["alert", "expr", "labels", "annotations"]  # no `for` by default
        assert e["labels"] == {"severity": e["labels"]["severity"], "metric": e["labels"]["metric"]}
        assert set(e["annotations"]) == {"summary", "description"}


def test_default_memory_rules_exactly():
    warning, critical = entries(DEFAULT_RULES[0])
    description = (
        "memory_usage on {{ $labels.instance }} is {{ $value }} MB "
        "(warning above 1536 MB, critical above 2048 MB)."
    )
    assert warning == {
        "alert": "CrankshaftMemoryUsage",
        "expr": "crankshaft_memory_usage_mb > 1536",
        "labels": {"severity": "warning", "metric": "memory_usage"},
        "annotations": {"summary": "Memory usage high", "description": description},
    }
    assert critical["expr"] == "crankshaft_memory_usage_mb > 2048"
    assert critical["labels"] == {"severity": "critical", "metric": "memory_usage"}
    assert critical["annotations"] == warning["annotations"]


@pytest.mark.parametrize(
    ("metric", "expr"),
    [
        ("cpu_usage", "crankshaft_cpu_usage_percent > 70"),
        ("active_connections", "crankshaft_websocket_active_connections > 70"),
        ("total_connections", "crankshaft_websocket_connections_total > 70"),
        ("request_latency", "crankshaft_request_latency_ms > 70"),
        ("target_down", "(1 - crankshaft_target_up) > 70"),
        (EXT, 'crankshaft_extension_status{status="crashed"} > 70'),
        (
            P95,
            "histogram_quantile(0.95, sum by (job, instance, endpoint, le) "
            "(rate(crankshaft_request_duration_seconds_bucket[5m]))) * 1000 > 70",
        ),
        (
            P99,
            "histogram_quantile(0.99, sum by (job, instance, endpoint, le) "
            "(rate(crankshaft_request_duration_seconds_bucket[5m]))) * 1000 > 70",
        ),
    ],
)
def test_value_expression_per_metric(metric, expr):
    (e,) = entries(AlertRule(metric, 70, None))
    assert e["expr"] == expr
    assert e["alert"] == alert_name(metric)


def test_only_defined_levels_become_rules():
    (w,) = entries(AlertRule("cpu_usage", 70, None, "CPU"))
    assert w["labels"]["severity"] == "warning"
    assert "(warning above 70%)." in w["annotations"]["description"]
    (c,) = entries(AlertRule("cpu_usage", None, 90, "CPU"))
    assert c["labels"]["severity"] == "critical"
    assert c["annotations"]["description"].endswith("(critical above 90%).")


def test_annotations_summary_defaults_and_units():
    s = by_severity(AlertRule("request_latency", 500, 1000))
    assert s["warning"]["annotations"]["summary"] == "request_latency above warning threshold"
    assert s["critical"]["annotations"]["summary"] == "request_latency above critical threshold"
    assert s["warning"]["annotations"]["description"] == (
        "request_latency on {{ $labels.instance }} is {{ $value }} ms "
        "(warning above 500 ms, critical above 1000 ms)."
    )
    (p,) = entries(AlertRule(P95, None, 250.5, "slow"))
    assert p["annotations"]["description"] == (
        "request_latency_p95 {{ $labels.endpoint }} on {{ $labels.instance }} is {{ $value }} ms "
        "(critical above 250.5 ms)."
    )
    (x,) = entries(AlertRule(EXT, None, 0))
    assert x["annotations"]["description"] == (
        "extension_crashed {{ $labels.extension }} on {{ $labels.instance }} is {{ $value }} "
        "(critical above 0)."
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(120, "2m"), (90, "1m30s"), (30, "30s"), (0.5, "500ms"), (3600, "1h"), (5400, "1h30m")],
)
def test_for_is_a_prometheus_duration(seconds, text):
    s = by_severity(AlertRule("cpu_usage", 70, 90, for_seconds=seconds))
    assert s["warning"]["for"] == s["critical"]["for"] == text
    assert list(s["warning"]) == ["alert", "expr", "for", "labels", "annotations"]
    assert parse_duration(text) == seconds  # Prometheus reads back the same duration
    assert format_duration(seconds) == text


def test_for_zero_is_omitted():
    for e in entries(AlertRule("cpu_usage", 70, 90, for_seconds=0)):
        assert "for" not in e


@pytest.mark.parametrize(
    ("threshold", "text"), [(1536.0, "1536"), (0.5, "0.5"), (0, "0"), (-5, "-5"), (99.25, "99.25")]
)
def test_thresholds_print_without_float_noise(threshold, text):
    (e,) = entries(AlertRule("memory_usage", threshold, None))
    assert e["expr"] == f"crankshaft_memory_usage_mb > {text}"


def test_thresholds_keep_every_significant_digit():
    rule = AlertRule("total_connections", 1234567, 2345678.5, warning_clear=1234560.25)
    s = by_severity(rule)
    assert s["warning"]["expr"].startswith("(crankshaft_websocket_connections_total > 1234567)")
    assert "> 1234560.25 and on" in s["warning"]["expr"]
    assert s["critical"]["expr"] == "crankshaft_websocket_connections_total > 2345678.5"
    assert (
        "warning above 1234567, critical above 2345678.5"
        in (s["warning"]["annotations"]["description"])
    )


def test_disabled_rules_are_omitted():
    assert entries(AlertRule("cpu_usage", 70, 90, enabled=False)) == []
    rules = entries(
        AlertRule("cpu_usage", 70, 90, enabled=False),
        AlertRule("memory_usage", 1, 2),
        AlertRule("target_down", None, 0, enabled=False),
    )
    assert [e["alert"] for e in rules] == ["CrankshaftMemoryUsage"] * 2
    assert build_rules([]) == {"groups": [{"name": GROUP, "rules": []}]}


# --- selectors ------------------------------------------------------------------------------


def test_selector_rule_matches_its_endpoint_and_general_rule_excludes_it():
    general = AlertRule(P95, 500, 1000, "slow")
    specific = AlertRule(P95, 100, None, "login slow", selector="/login")
    rules = entries(general, specific)
    assert len(rules) == 3
    gw, gc, sw = rules
    for e in (gw, gc):
        assert 'crankshaft_request_duration_seconds_bucket{endpoint!~"/login"}[5m]' in e["expr"]
        assert "endpoint" not in e["labels"]
    assert 'crankshaft_request_duration_seconds_bucket{endpoint="/login"}[5m]' in sw["expr"]
    assert sw["expr"].endswith(" * 1000 > 100")
    assert sw["labels"] == {"severity": "warning", "metric": P95, "endpoint": "/login"}
    assert sw["annotations"]["summary"] == "login slow"
    assert {e["alert"] for e in rules} == {"CrankshaftRequestLatencyP95"}


def test_selectors_are_per_metric():
    """A p99 selector rule does not carve its endpoint out of the p95 general rule."""
    rules = entries(AlertRule(P95, 500, None), AlertRule(P99, 900, None, selector="/login"))
    assert "{endpoint!~" not in rules[0]["expr"]
    assert "bucket[5m]" in rules[0]["expr"]


def test_extension_selector_joins_the_status_matcher():
    rules = entries(
        AlertRule(EXT, None, 0), AlertRule(EXT, None, 0, selector="nav", for_seconds=120)
    )
    general, specific = rules
    assert general["expr"] == 'crankshaft_extension_status{status="crashed",extension!~"nav"} > 0'
    assert specific["expr"] == 'crankshaft_extension_status{status="crashed",extension="nav"} > 0'
    assert specific["for"] == "2m" and "for" not in general
    assert specific["labels"] == {"severity": "critical", "metric": EXT, "extension": "nav"}


def test_several_selectors_sorted_into_one_regex():
    rules = entries(
        AlertRule(EXT, None, 0, selector="media"),
        AlertRule(EXT, None, 0),
        AlertRule(EXT, None, 0, selector="bluetooth"),
    )
    general = rules[1]
    assert promql_string(general["expr"], "extension", "!~") == "bluetooth|media"


NASTY = ["/a.b", "a|b", "p+", "(x)*", "/x/{id}?q=[1]", "sp ace#~&-", 'say "hi"', "back\\slash",
         "^$", "ünïcødé"]  # fmt: skip


def test_regex_escaping_of_special_characters():
    """The general rule's regex must exclude exactly the selector values, literally."""
    rules = [AlertRule(P95, 500, None)] + [AlertRule(P95, 1, None, selector=n) for n in NASTY]
    general, *specific = entries(*rules)
    regex = promql_string(general["expr"], "endpoint", "!~")
    for name in NASTY:
        assert re.fullmatch(regex, name), name  # Prometheus anchors label regexes
    for near_miss in ["/aXb", "a", "b", "pp", "x", "xx", "/x/id", "say hi", "back", "", "unicode"]:
        assert not re.fullmatch(regex, near_miss), near_miss
    for name, e in zip(NASTY, specific, strict=True):
        assert promql_string(e["expr"], "endpoint", "=") == name
        assert e["labels"]["endpoint"] == name


def test_quotes_and_backslashes_escaped_in_specific_matcher():
    (e,) = entries(AlertRule(EXT, None, 0, selector='q"x\\y'))
    assert 'extension="q\\"x\\\\y"' in e["expr"]


def test_disabled_selector_rule_still_excluded_from_general_rule_like_the_evaluator():
    """The evaluator does not fall back to the general rule for a label whose own rule is
    disabled (that label is silenced); the generated rules do the same."""
    general = AlertRule(EXT, None, 0)
    off = AlertRule(EXT, None, 0, selector="nav", enabled=False)
    (rule,) = entries(general, off)
    assert promql_string(rule["expr"], "extension", "!~") == "nav"
    ev = AlertEvaluator([general, off])
    ev.evaluate(0, {(EXT, "nav"): 1.0, (EXT, "media"): 1.0})
    assert ev.firing() == [(EXT, "media", "CRITICAL")]


# --- hysteresis -----------------------------------------------------------------------------


def test_hysteresis_expression_shape():
    s = by_severity(
        AlertRule("active_connections", 50, 100, "conns", warning_clear=40, critical_clear=80)
    )
    v = "crankshaft_websocket_active_connections"
    assert s["warning"]["expr"] == (
        f"({v} > 50) or ({v} > 40 and on (job, instance) "
        'ALERTS{alertname="CrankshaftActiveConnections", severity="warning", alertstate="firing"})'
    )
    assert s["critical"]["expr"] == (
        f"({v} > 100) or ({v} > 80 and on (job, instance) "
        'ALERTS{alertname="CrankshaftActiveConnections", severity="critical", alertstate="firing"})'
    )


def test_hysteresis_only_where_clear_is_below_threshold():
    s = by_severity(AlertRule("cpu_usage", 70, 90, warning_clear=70, critical_clear=85))
    assert s["warning"]["expr"] == "crankshaft_cpu_usage_percent > 70"  # clear == threshold
    assert "ALERTS{" in s["critical"]["expr"]
    s = by_severity(AlertRule("cpu_usage", 70, 90, warning_clear=60))
    assert "ALERTS{" in s["warning"]["expr"]
    assert s["critical"]["expr"] == "crankshaft_cpu_usage_percent > 90"


def test_hysteresis_joins_on_the_instance_labels_of_labelled_metrics():
    (p,) = entries(AlertRule(P95, 500, None, warning_clear=400, selector="/a.b"))
    assert "and on (job, instance, endpoint) ALERTS{" in p["expr"]
    assert p["expr"].count('{endpoint="/a.b"}') == 2  # both branches watch only /a.b
    (x,) = entries(AlertRule(EXT, None, 0.5, critical_clear=0))
    assert x["expr"] == (
        '(crankshaft_extension_status{status="crashed"} > 0.5) or '
        '(crankshaft_extension_status{status="crashed"} > 0 and on (job, instance, extension) '
        'ALERTS{alertname="CrankshaftExtensionCrashed", severity="critical", '
        'alertstate="firing"})'
    )
    (t,) = entries(AlertRule("target_down", None, 0.5, critical_clear=0, for_seconds=90))
    assert t["expr"].startswith("((1 - crankshaft_target_up) > 0.5) or ((1 - crankshaft_target_up)")
    assert t["for"] == "1m30s"


# --- rendering, the committed file, the CLI -------------------------------------------------


def test_render_is_yaml_of_build_with_a_header():
    text = render_rules(DEFAULT_RULES, 60)
    assert yaml.safe_load(text) == build_rules(DEFAULT_RULES)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) == 3
    assert "every 1m:" in header[2]
    assert "every" not in render_rules(DEFAULT_RULES)
    assert "every 30s:" in render_rules(DEFAULT_RULES, 30)


def test_render_keeps_long_expressions_on_one_line():
    text = render_rules([AlertRule(P95, 500, 1000, warning_clear=400, selector="/x")])
    exprs = [line for line in text.splitlines() if line.strip().startswith("expr:")]
    assert len(exprs) == 2
    assert all("ALERTS{" in line or "> 1000" in line for line in exprs)


def test_committed_rules_file_is_current():
    default = Config.default()
    assert COMMITTED.read_text() == render_rules(default.alerts, default.interval), (
        "config/crankshaft-exporter.rules.yml is stale: regenerate it with "
        "`python -m exporter alert-rules > config/crankshaft-exporter.rules.yml`"
    )


def test_cli_alert_rules_prints_the_default_rules(capsys):
    assert main(["alert-rules"]) == 0
    out, err = capsys.readouterr()
    assert out == COMMITTED.read_text()
    assert err == ""


def test_cli_alert_rules_from_a_config(tmp_path, capsys):
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(
        "interval: 30s\n"
        "alerts:\n"
        "  - {metric: cpu_usage, warning: 70, critical: 90, for: 2m, description: CPU}\n"
        "  - {metric: active_connections, warning: 50, warning_clear: 40}\n"
        "  - {metric: request_latency_p95, critical: 800, endpoint: /api/items}\n"
        "  - {metric: request_latency_p95, warning: 500}\n"
        "  - {metric: memory_usage, warning: 1000, enabled: false}\n"
    )
    assert main(["alert-rules", "--config", str(cfg)]) == 0
    out, _ = capsys.readouterr()
    config = load_config(cfg)
    assert out == render_rules(config.alerts, config.interval)
    doc = yaml.safe_load(out)
    rules = doc["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "CrankshaftCpuUsage",
        "CrankshaftCpuUsage",
        "CrankshaftActiveConnections",
        "CrankshaftRequestLatencyP95",
        "CrankshaftRequestLatencyP95",
    ]
    assert rules[0]["for"] == "2m"
    assert "ALERTS{" in rules[2]["expr"]
    assert rules[3]["labels"]["endpoint"] == "/api/items"
    assert 'endpoint!~"/api/items"' in rules[4]["expr"]
    assert "every 30s:" in out


@pytest.mark.parametrize(
    "text",
    [
        "alerts:\n  - {metric: nonsense, warning: 1}\n",
        "alerts:\n  - {metric: cpu_usage, warning: 90, critical: 70}\n",
        "alerts:\n  - {metric: cpu_usage, warning: 70, for: soon}\n",
        "alerts: [\n",
    ],
)
def test_cli_alert_rules_bad_config_exits_78(tmp_path, capsys, text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["alert-rules", "--config", str(cfg)]) == EX_CONFIG == 78
    out, err = capsys.readouterr()
    assert out == ""  # no half-written rules file
    assert err.strip() and str(cfg) in err


def test_cli_alert_rules_missing_config_exits_78(tmp_path, capsys):
    assert main(["alert-rules", "--config", str(tmp_path / "absent.yaml")]) == 78
    out, err = capsys.readouterr()
    assert out == "" and "absent.yaml" in err

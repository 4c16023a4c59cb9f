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
from exporter.alerts.rules import DEFAULT_RULES, SHIPPED_RULES, AlertRule, alertable_metrics
from exporter.cli import EX_CONFIG, main
from exporter.config import Config, format_duration, load_config, parse_duration
from exporter.promrules import (
    GENERIC_RUNBOOK,
    HEALTH_RULES,
    RUNBOOK_SECTIONS,
    alert_name,
    build_rules,
    render_rules,
    runbook_anchor,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "config" / "crankshaft-exporter.rules.yml"
GROUP = "crankshaft-exporter"
P95 = "request_latency_p95"
P99 = "request_latency_p99"
EXT = "extension_crashed"


def entries(*rules: AlertRule) -> list[dict]:
    doc = build_rules(rules)
    group, health, fleet = doc["groups"]
    assert group["name"] == GROUP and health["name"] == GROUP + "-health"
    assert fleet["name"] == GROUP + "-fleet"
    return group["rules"]


def thr(metric: str, level: str, selector: str = "", family: str = "crankshaft_alert_threshold"):
    return f'{family}{{metric="{metric}",level="{level}",selector="{selector}"}}'


def compare(value: str, metric: str, level: str, selector: str = "",
            ident: str = "job, instance, vehicle",
            alert: str | None = None) -> str:
    """The generated comparison of ``value`` with the instance's own thresholds."""
    join = "on (job, instance, vehicle) group_left ()"
    alert = alert or alert_name(metric)
    return (
        f"({value} > {join} {thr(metric, level, selector)}) or ({value} > {join} "
        f"{thr(metric, level, selector, 'crankshaft_alert_clear_threshold')} and on ({ident}) "
        f'ALERTS{{alertname="{alert}", severity="{level}", alertstate="firing"}})'
    )


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
        assert set(e["annotations"]) == {"summary", "description", "runbook_url"}


def test_shipped_rules_carry_their_for():
    rules = entries(*SHIPPED_RULES)
    fors = {(e["alert"], e["labels"]["severity"]): e.get("for") for e in rules}
    assert fors[("CrankshaftMemoryUsage", "critical")] == "5m"
    assert fors[("CrankshaftTargetDown", "critical")] == "2m"
    assert fors[("CrankshaftExtensionCrashed", "critical")] is None


def test_default_memory_rules_exactly():
    warning, critical = entries(DEFAULT_RULES[0])
    where = "{{ $labels.instance }}{{ with $labels.vehicle }} (vehicle {{ . }}){{ end }}"
    lookup = (
        '{{ with printf "crankshaft_alert_threshold{job=%q,instance=%q,vehicle=%q,metric=%q,'
        'level=%q,selector=%q}" $labels.job $labels.instance $labels.vehicle "memory_usage" '
        '"warning" "" | query }}'
        '{{ . | first | value | printf "%.1f" }}{{ end }}'
    )
    assert warning == {
        "alert": "CrankshaftMemoryUsage",
        "expr": compare("crankshaft_memory_usage_mb", "memory_usage", "warning"),
        "labels": {"severity": "warning", "metric": "memory_usage"},
        "annotations": {
            "summary": f"Memory usage high on {where}",
            "description": (
                'Memory (RSS) of the monitored process is {{ $value | printf "%.1f" }} MiB on '
                f"{where}, above its warning threshold of {lookup} MiB."
            ),
            "runbook_url": "README.md#crankshaftmemoryusage",
        },
    }
    assert critical["expr"] == compare("crankshaft_memory_usage_mb", "memory_usage", "critical")
    assert critical["labels"] == {"severity": "critical", "metric": "memory_usage"}
    assert critical["annotations"]["description"] == warning["annotations"][
        "description"
    ].replace('"warning"', '"critical"').replace("its warning", "its critical")


def test_no_threshold_is_written_into_the_rules():
    """Each instance's own thresholds decide: the configured numbers appear nowhere."""
    text = render_rules([AlertRule("memory_usage", 1234.5, 2345.5, warning_clear=1111.5)])
    assert "1234" not in text and "2345" not in text and "1111" not in text


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("cpu_usage", "crankshaft_cpu_usage_percent"),
        ("active_connections", "crankshaft_websocket_active_connections"),
        ("total_connections", "crankshaft_websocket_connections_total"),
        ("request_latency", "crankshaft_request_latency_ms"),
        ("target_down", "(1 - crankshaft_target_up)"),
        # the sources' declarations: a gauge with an OpenMetrics unit, a state set of one
        # `when`, process detail
        ("cpu_temperature", "crankshaft_board_cpu_temperature_celsius"),
        ("board_throttled", "(sum without (crankshaft_board_throttling) "
                            '(crankshaft_board_throttling{when="now"}))'),
        ("process_open_fds", "crankshaft_process_open_fds"),
    ],
)
def test_value_expression_per_metric(metric, value):
    (e,) = entries(AlertRule(metric, 70, None))
    assert e["expr"] == compare(value, metric, "warning")
    assert e["alert"] == alert_name(metric)


@pytest.mark.parametrize("q", ["0.95", "0.99"])
def test_percentile_rules_keep_every_label_of_the_histogram(q):
    """No `sum by`: labels a scrape config adds (vehicle) reach the alert."""
    metric = P95 if q == "0.95" else P99
    (e,) = entries(AlertRule(metric, 70, None))
    value = (f"histogram_quantile({q}, rate(crankshaft_request_duration_seconds_bucket[5m]))"
             " * 1000")
    assert e["expr"] == compare(value, metric, "warning", ident="job, instance, vehicle, endpoint")
    (x,) = entries(AlertRule(EXT, None, 0))
    assert x["expr"] == compare('crankshaft_extension_status{status="crashed"}', EXT, "critical",
                                ident="job, instance, vehicle, extension")


def test_only_defined_levels_become_rules():
    (w,) = entries(AlertRule("cpu_usage", 70, None, "CPU"))
    assert w["labels"]["severity"] == "warning"
    assert "its warning threshold" in w["annotations"]["description"]
    (c,) = entries(AlertRule("cpu_usage", None, 90, "CPU"))
    assert c["labels"]["severity"] == "critical"
    assert "its critical threshold" in c["annotations"]["description"]


def test_annotations_name_the_instance_vehicle_unit_and_runbook():
    s = by_severity(AlertRule("request_latency", 500, 1000))
    where = "{{ $labels.instance }}{{ with $labels.vehicle }} (vehicle {{ . }}){{ end }}"
    assert s["warning"]["annotations"]["summary"] == (
        f"request_latency above warning threshold on {where}"
    )
    assert s["critical"]["annotations"]["summary"] == (
        f"request_latency above critical threshold on {where}"
    )
    assert s["warning"]["annotations"]["description"].startswith(
        'Average request latency is {{ $value | printf "%.1f" }} ms on '
    )
    (p,) = entries(AlertRule(P95, None, 250.5, "slow"))
    assert p["annotations"]["summary"] == f"slow ({{{{ $labels.endpoint }}}}) on {where}"
    assert p["annotations"]["description"].startswith("p95 latency of {{ $labels.endpoint }} is")
    (x,) = entries(AlertRule(EXT, None, 0))
    # The description adds to the summary (which names the extension and the instance).
    assert x["annotations"]["summary"].endswith(f"({{{{ $labels.extension }}}}) on {where}")
    assert x["annotations"]["description"] == (
        "The extension reported the state crashed (POST /metrics/record or "
        "record_extension_status); this resolves when it reports starting, running or stopped."
    )
    (c,) = entries(AlertRule("cpu_usage", 70, None))
    assert '{{ $value | printf "%.1f" }}% on' in c["annotations"]["description"]
    for e in (*s.values(), p, x, c):
        assert e["annotations"]["runbook_url"] == f"README.md#{e['alert'].lower()}"


def test_runbook_base_and_job_are_parameters():
    doc = build_rules([AlertRule("cpu_usage", 70, None)], job='car"s',
                      runbook_base="https://git.example/README.md")
    rule, *health = [e for g in doc["groups"] for e in g["rules"] if "alert" in e]
    assert rule["annotations"]["runbook_url"] == "https://git.example/README.md#crankshaftcpuusage"
    assert health[0]["expr"] == 'up{job="car\\"s",vehicle=""} == 0'
    (record,) = [e for g in doc["groups"] for e in g["rules"] if "record" in e]
    assert record["expr"].startswith('crankshaft_last_collection_timestamp_seconds{job="car\\"s"}')
    assert all(h["annotations"]["runbook_url"].startswith("https://git.example/") for h in health)


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


def test_disabled_rules_are_omitted():
    assert entries(AlertRule("cpu_usage", 70, 90, enabled=False)) == []
    rules = entries(
        AlertRule("cpu_usage", 70, 90, enabled=False),
        AlertRule("memory_usage", 1, 2),
        AlertRule("target_down", None, 0, enabled=False),
    )
    assert [e["alert"] for e in rules] == ["CrankshaftMemoryUsage"] * 2
    assert build_rules([])["groups"][0] == {"name": GROUP, "rules": []}


def test_health_group_offline_and_self_monitoring():
    (_, health, _) = build_rules([])["groups"]
    by_name = {e["alert"]: e for e in health["rules"]}
    # scrape failures of always-on machines only: a car (vehicle label) is off when parked
    assert by_name["CrankshaftExporterDown"]["expr"] == 'up{job="crankshaft",vehicle=""} == 0'
    assert by_name["CrankshaftExporterDown"]["for"] == "5m"
    assert by_name["CrankshaftNoTargets"]["expr"] == (
        'absent(up{job="crankshaft"}) unless on () '
        'crankshaft:last_seen_timestamp_seconds{job="crankshaft"}')
    assert set(by_name) == {
        "CrankshaftExporterDown", "CrankshaftExporterGone", "CrankshaftNoTargets",
        "CrankshaftVehicleExporterDown",
        "CrankshaftMetricsMissing", "CrankshaftConfigReloadFailed", "CrankshaftCollectionErrors",
        "CrankshaftSourceFailing",
        "CrankshaftNotificationsFailing", "CrankshaftNotificationsDropped",
        "CrankshaftLatencyObservationsDropped", "CrankshaftExtensionUpdatesDropped",
    }
    for e in health["rules"]:
        paging = e["alert"] == "CrankshaftVehicleExporterDown"
        assert e["labels"] == {"severity": "critical" if paging else "warning"}
        assert 'job="crankshaft"' in e["expr"]


def test_fleet_group_records_last_seen_and_alerts_on_silence_and_remote_write():
    (_, _, fleet) = build_rules([])["groups"]
    assert fleet["interval"] == "1m"
    record, *alerts = fleet["rules"]
    assert record == {
        "record": "crankshaft:last_seen_timestamp_seconds",
        "expr": 'crankshaft_last_collection_timestamp_seconds{job="crankshaft"} or '
                'last_over_time(crankshaft:last_seen_timestamp_seconds{job="crankshaft"}[1d])',
    }
    by_name = {e["alert"]: e for e in alerts}
    assert set(by_name) == {"CrankshaftVehicleSilent", "CrankshaftRemoteWriteDropped",
                            "CrankshaftRemoteWriteBacklog"}
    silent = by_name["CrankshaftVehicleSilent"]
    assert silent["labels"] == {"severity": "info"} and "for" not in silent
    assert silent["expr"].endswith("> 259200")  # SILENT_AFTER, 3 days
    assert by_name["CrankshaftRemoteWriteDropped"]["labels"] == {"severity": "warning"}
    assert "{{ $labels.reason }}" in by_name["CrankshaftRemoteWriteDropped"]["annotations"][
        "summary"]
    assert by_name["CrankshaftRemoteWriteBacklog"]["for"] == "15m"
    for e in alerts:
        assert 'job="crankshaft"' in e["expr"]


# --- selectors ------------------------------------------------------------------------------


def test_selector_rule_matches_its_endpoint_and_general_rule_excludes_it():
    general = AlertRule(P95, 500, 1000, "slow")
    specific = AlertRule(P95, 100, None, "login slow", selector="/login")
    rules = entries(general, specific)
    assert len(rules) == 3
    gw, gc, sw = rules
    for e in (gw, gc):
        assert 'crankshaft_request_duration_seconds_bucket{endpoint!~"/login"}[5m]' in e["expr"]
        assert 'selector=""' in e["expr"]
        assert "endpoint" not in e["labels"]
    assert 'crankshaft_request_duration_seconds_bucket{endpoint="/login"}[5m]' in sw["expr"]
    assert thr(P95, "warning", "/login") in sw["expr"]
    assert sw["labels"] == {"severity": "warning", "metric": P95, "endpoint": "/login"}
    assert sw["annotations"]["summary"].startswith("login slow ({{ $labels.endpoint }}) on ")
    assert '"warning" $labels.endpoint | query' in sw["annotations"]["description"]
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
    assert general["expr"].startswith(
        '(crankshaft_extension_status{status="crashed",extension!~"nav"} > on'
    )
    assert specific["expr"].startswith(
        '(crankshaft_extension_status{status="crashed",extension="nav"} > on'
    )
    assert thr(EXT, "critical", "nav") in specific["expr"]
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
        assert promql_string(e["expr"], "selector", "=") == name
        assert e["labels"]["endpoint"] == name


def test_quotes_and_backslashes_escaped_in_specific_matcher():
    (e,) = entries(AlertRule(EXT, None, 0, selector='q"x\\y'))
    assert 'extension="q\\"x\\\\y"' in e["expr"]
    assert 'selector="q\\"x\\\\y"' in e["expr"]


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


def test_hysteresis_branch_always_present_so_each_instance_brings_its_own():
    """Whether a car has hysteresis is its YAML's business (its clear threshold equals the
    threshold when it has none): the rule is the same either way."""
    with_h = by_severity(AlertRule("active_connections", 50, 100, warning_clear=40))
    without = by_severity(AlertRule("active_connections", 50, 100))
    assert with_h == without
    assert with_h["warning"]["expr"] == compare(
        "crankshaft_websocket_active_connections", "active_connections", "warning"
    )


def test_hysteresis_joins_on_the_instance_labels_of_labelled_metrics():
    (p,) = entries(AlertRule(P95, 500, None, warning_clear=400, selector="/a.b"))
    assert "and on (job, instance, vehicle, endpoint) ALERTS{" in p["expr"]
    assert p["expr"].count('{endpoint="/a.b"}') == 2  # both branches watch only /a.b
    (t,) = entries(AlertRule("target_down", None, 0.5, critical_clear=0, for_seconds=90))
    assert t["expr"].startswith("((1 - crankshaft_target_up) > on (job, instance, vehicle)")
    assert t["for"] == "1m30s"


# --- rendering, the committed file, the CLI -------------------------------------------------


def test_render_is_yaml_of_build_with_a_header():
    text = render_rules(DEFAULT_RULES, 60)
    assert yaml.safe_load(text) == build_rules(DEFAULT_RULES)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert len(header) == 4
    assert "every 1m:" in header[3]
    assert "every" not in render_rules(DEFAULT_RULES)
    assert "every 30s:" in render_rules(DEFAULT_RULES, 30)


def test_render_keeps_long_expressions_on_one_line():
    text = render_rules([AlertRule(P95, 500, 1000, warning_clear=400, selector="/x")])
    exprs = [line for line in text.splitlines() if line.strip().startswith("expr:")]
    assert len(exprs) == 2 + len(HEALTH_RULES) + 4  # two levels, the health and fleet groups
    assert all(line.rstrip().endswith('alertstate="firing"})') for line in exprs[:2])


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
    assert [r["alert"] for r in rules] == [  # then the health group
        "CrankshaftCpuUsage",
        "CrankshaftCpuUsage",
        "CrankshaftActiveConnections",
        "CrankshaftRequestLatencyP95",
        "CrankshaftRequestLatencyP95",
    ]
    assert rules[0]["for"] == "2m"
    assert 'crankshaft_alert_clear_threshold{metric="active_connections"' in rules[2]["expr"]
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


# --- what the rules join on: the exporter's own families ---------------------------------------


def test_exposition_publishes_thresholds_clear_thresholds_and_the_listed_alert_count():
    from prometheus_client.parser import text_string_to_metric_families

    from exporter.endpoint import MetricsEndpoint

    ep = MetricsEndpoint(
        rules=[
            AlertRule("memory_usage", 1000, 2000, "mem", warning_clear=900),
            AlertRule("cpu_usage", 70, None, "cpu"),
            AlertRule(EXT, None, 0, "nav", selector="nav"),
        ],
        sources=[],
    )
    try:

        def families() -> dict:
            text = ep.export_prometheus()
            return {f.name: f for f in text_string_to_metric_families(text)}

        def samples(name: str) -> dict:
            return {
                tuple(sorted(s.labels.items())): s.value for s in families()[name].samples
            }

        key = lambda m, lvl, sel="": (("level", lvl), ("metric", m), ("selector", sel))  # noqa: E731
        assert samples("crankshaft_alert_threshold") == {
            key("memory_usage", "warning"): 1000, key("memory_usage", "critical"): 2000,
            key("cpu_usage", "warning"): 70, key(EXT, "critical", "nav"): 0,
        }
        assert samples("crankshaft_alert_clear_threshold") == {
            key("memory_usage", "warning"): 900, key("memory_usage", "critical"): 2000,
            key("cpu_usage", "warning"): 70, key(EXT, "critical", "nav"): 0,
        }
        listed = lambda: samples("crankshaft_active_alerts")  # noqa: E731
        assert listed() == {(("level", "warning"),): 0, (("level", "critical"),): 0}
        ep.record_memory_usage(2100)  # warning and critical fire; /metrics/alerts lists one
        ep.record_cpu_usage(75)
        assert len(ep.get_alerts()) == 2
        assert listed() == {(("level", "warning"),): 1, (("level", "critical"),): 1}
        alert_active = families()["crankshaft_alert_active"].samples
        assert sum(s.value for s in alert_active) == 3  # why the dashboard does not sum this
    finally:
        ep.close()


# --- runbook_url anchors ------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def readme_anchors(text: str) -> set[str]:
    """The anchors of README's headings (lines in fenced code blocks are not headings)."""
    anchors, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


def test_github_anchor():
    assert github_anchor(" From `make install` to the dashboard") == (
        "from-make-install-to-the-dashboard"
    )
    assert github_anchor("Prometheus, Grafana and alerts") == "prometheus-grafana-and-alerts"
    assert readme_anchors("# A\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c"}


def test_every_runbook_url_points_at_a_readme_section_that_exists():
    anchors = readme_anchors((REPO / "README.md").read_text())
    doc = yaml.safe_load(COMMITTED.read_text())
    every_metric = [AlertRule(m, 1, 2) for m in alertable_metrics()]
    rules = [e for g in doc["groups"] + build_rules(every_metric)["groups"] for e in g["rules"]
             if "alert" in e]
    assert len(rules) > 20
    for e in rules:
        base, _, anchor = e["annotations"]["runbook_url"].partition("#")
        assert base == "README.md"
        assert anchor in anchors, f"{e['alert']}: README has no section #{anchor}"


def test_runbook_sections_are_readmes_alert_headings():
    """Each alert name promrules links to its own section has one, and each alert heading
    in README is linked to (no section left over)."""
    headings = set(re.findall(r"^#### (Crankshaft\w+)$", (REPO / "README.md").read_text(), re.M))
    assert headings == set(RUNBOOK_SECTIONS)
    assert GENERIC_RUNBOOK in readme_anchors((REPO / "README.md").read_text())
    assert runbook_anchor("CrankshaftSomethingNew") == GENERIC_RUNBOOK


@pytest.mark.parametrize(
    ("metric", "value_text", "unit"),
    [
        ("memory_usage", '{{ $value | printf "%.1f" }} MiB', " MiB"),  # the seed's MB: RSS/2**20
        ("cpu_temperature", '{{ $value | printf "%.1f" }} °C', " °C"),
        ("process_threads", '{{ $value | printf "%.0f" }} on', ""),  # a count: whole, no unit
        ("board_throttled", '{{ $value | printf "%.0f" }} on', ""),
    ],
)
def test_units_and_number_formats_come_from_the_declarations(metric, value_text, unit):
    from exporter.promrules import unit_text

    assert unit_text(metric) == unit
    (e,) = entries(AlertRule(metric, None, 0 if metric == "board_throttled" else 100))
    assert value_text in e["annotations"]["description"]
    assert "None" not in e["annotations"]["description"]

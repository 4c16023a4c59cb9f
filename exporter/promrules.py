"""Prometheus alerting rules equivalent to the exporter's own alert rules.

``crankshaft-exporter alert-rules`` prints them, so the thresholds live in one place (the
exporter's YAML) and Prometheus alerts on the same conditions with the same ``for``.  Each
level of a rule becomes one Prometheus rule with a ``severity`` label, like the exporter's
evaluator, where a warning level keeps firing while the critical one does too; route or
inhibit in Alertmanager on ``severity``.  Hysteresis becomes "above the clear threshold and
already firing" through the ``ALERTS`` series.

Gauge-based rules are exact equivalents (the promtool tests feed both evaluators the same
series).  Per-endpoint percentile rules are approximations: Prometheus computes p95/p99 from
histogram buckets over 5 minutes, the exporter exactly over its window of observations.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml

from exporter.alerts.rules import CRITICAL, LEVELS, WARNING, AlertRule
from exporter.config.durations import format_duration
from exporter.series import STATESET, SeriesSpec
from exporter.sources.registry import all_series

# Metrics that are no declared series: metric -> (PromQL for the watched value, ``{m}``
# standing for its label matchers; labels identifying one alert instance).
SPECIAL_EXPR: dict[str, tuple[str, tuple[str, ...]]] = {
    "request_latency_p95": (
        "histogram_quantile(0.95, sum by (job, instance, endpoint, le) "
        "(rate(crankshaft_request_duration_seconds_bucket{m}[5m]))) * 1000",
        ("endpoint",),
    ),
    "request_latency_p99": (
        "histogram_quantile(0.99, sum by (job, instance, endpoint, le) "
        "(rate(crankshaft_request_duration_seconds_bucket{m}[5m]))) * 1000",
        ("endpoint",),
    ),
    "extension_crashed": ("crankshaft_extension_status{m}", ("extension",)),
    "target_down": ("(1 - crankshaft_target_up{m})", ()),
}
SPECIAL_MATCHERS = {"extension_crashed": ('status="crashed"',)}
SPECIAL_UNITS = {"request_latency_p95": " ms", "request_latency_p99": " ms"}
# How the seed's units read after a number in an annotation.
_UNIT_TEXT = {"%": "%", "count": "", "flags": ""}


def _series_expr(spec: SeriesSpec) -> str:
    if spec.kind == STATESET:  # any state true
        return f"(sum without ({spec.metric}) ({spec.metric}{{m}}))"
    return spec.sample_name + "{m}"


def value_exprs() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every alert metric's PromQL: declared series (from their declarations) and the rest."""
    exprs = {s.key: (_series_expr(s), ()) for s in all_series() if s.alert}
    return {**exprs, **SPECIAL_EXPR}


def _base_matchers(metric: str) -> tuple[str, ...]:
    spec = {s.key: s for s in all_series()}.get(metric)
    if spec is not None:
        return tuple(f'{k}="{_escape(v)}"' for k, v in spec.labels)
    return SPECIAL_MATCHERS.get(metric, ())


def unit_text(metric: str) -> str:
    """How the metric's unit reads after a number ("%", " MB", "" for counts)."""
    spec = {s.key: s for s in all_series()}.get(metric)
    if spec is not None:
        return _UNIT_TEXT.get(spec.unit, " " + spec.unit)
    return SPECIAL_UNITS.get(metric, "")


def alert_name(metric: str) -> str:
    return "Crankshaft" + "".join(part.capitalize() for part in metric.split("_"))


def _selector(metric: str, rule: AlertRule, siblings: list[AlertRule]) -> str:
    """Label matchers: a selector rule watches its label value; the general rule of the
    same metric then leaves those values to it (as the exporter's evaluator does)."""
    identity = value_exprs()[metric][1]
    label = identity[0] if identity else None
    if label is None:
        return ""
    if rule.selector is not None:
        return f'{label}="{_escape(rule.selector)}"'
    taken = sorted(s.selector for s in siblings if s.selector is not None)
    if not taken:
        return ""
    return f'{label}!~"{_escape("|".join(re.escape(t) for t in taken))}"'


def _number(x: float | None) -> str:
    """Every significant digit (``:g`` would turn 1234567 into 1.23457e+06)."""
    assert x is not None
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _literal(text: str) -> str:
    """Prometheus expands labels and annotations as Go templates: keep ``{{`` literal."""
    return text.replace("{{", '{{ "{{" }}')


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _value_expr(metric: str, selector: str) -> str:
    matchers = [*_base_matchers(metric), *([selector] if selector else [])]
    block = "{" + ",".join(matchers) + "}" if matchers else ""
    return value_exprs()[metric][0].replace("{m}", block)


def rule_entries(rule: AlertRule, siblings: list[AlertRule]) -> list[dict[str, object]]:
    """The Prometheus rules for one exporter rule (one per level it defines)."""
    if not rule.enabled:
        return []
    name = alert_name(rule.metric)
    identity = ("job", "instance", *value_exprs()[rule.metric][1])
    value = _value_expr(rule.metric, _selector(rule.metric, rule, siblings))
    unit = unit_text(rule.metric)
    entries = []
    for level in LEVELS:
        threshold = rule.threshold(level)
        if threshold is None:
            continue
        severity = level.lower()
        expr = f"{value} > {_number(threshold)}"
        clear = rule.clear_threshold(level)
        if clear is not None and clear < threshold:
            firing = f'ALERTS{{alertname="{name}", severity="{severity}", alertstate="firing"}}'
            expr = (
                f"({expr}) or ({value} > {_number(clear)} and on ({', '.join(identity)}) {firing})"
            )
        entry: dict[str, object] = {"alert": name, "expr": expr}
        if rule.for_seconds > 0:
            entry["for"] = format_duration(rule.for_seconds)
        labels = {"severity": severity, "metric": rule.metric}
        if rule.selector is not None:  # keeps it distinct from the metric's general rule
            labels[identity[2]] = _literal(rule.selector)
        entry["labels"] = labels
        subject = "".join(f" {{{{ $labels.{lbl} }}}}" for lbl in identity[2:])
        limits = ", ".join(
            f"{lvl.lower()} above {_number(rule.threshold(lvl))}{unit}"
            for lvl in LEVELS
            if rule.threshold(lvl) is not None
        )
        entry["annotations"] = {
            "summary": _literal(rule.description or f"{rule.metric} above {severity} threshold"),
            "description": (
                f"{rule.metric}{subject} on {{{{ $labels.instance }}}} is {{{{ $value }}}}{unit}"
                f" ({limits})."
            ),
        }
        entries.append(entry)
    return entries


def build_rules(rules: Iterable[AlertRule]) -> dict[str, object]:
    rules = list(rules)
    entries: list[dict[str, object]] = []
    for rule in rules:
        siblings = [r for r in rules if r.metric == rule.metric and r is not rule]
        entries.extend(rule_entries(rule, siblings))
    return {"groups": [{"name": "crankshaft-exporter", "rules": entries}]}


def render_rules(rules: Iterable[AlertRule], interval_seconds: float | None = None) -> str:
    header = (
        "# Prometheus alerting rules generated by `crankshaft-exporter alert-rules` from the\n"
        "# exporter's alert configuration; severity is warning or critical.\n"
    )
    if interval_seconds is not None:
        header += (
            f"# The exporter samples every {format_duration(interval_seconds)}: scrape at least "
            "that often.\n"
        )
    body = yaml.safe_dump(build_rules(rules), sort_keys=False, width=1000, allow_unicode=True)
    return header + body


__all__ = ["CRITICAL", "WARNING", "alert_name", "build_rules", "render_rules"]

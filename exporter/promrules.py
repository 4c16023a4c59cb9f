"""Prometheus alerting rules equivalent to the exporter's own alert rules, for a whole fleet.

``crankshaft-exporter alert-rules`` prints them.  Each level of a configured rule becomes one
Prometheus rule with a ``severity`` label, like the exporter's evaluator, where a warning
level keeps firing while the critical one does too; route or inhibit in Alertmanager on
``severity`` (config/alertmanager.yml).

The thresholds are not written into the rules: each one compares a series with the threshold
*that instance* publishes (``crankshaft_alert_threshold{metric,level,selector}`` and, for
hysteresis, ``crankshaft_alert_clear_threshold``), joined on ``job`` and ``instance``.  So one
rules file serves a fleet of head units whose YAML files set different thresholds, and editing
a car's YAML changes its alerts without regenerating the rules.  What the configuration used
to generate the file still fixes: which metrics and levels have rules, their ``for`` (a
Prometheus rule has one), endpoint/extension selectors and the descriptions.  A level that an
instance does not configure publishes no threshold there, so it cannot fire there.
Hysteresis is "above the clear threshold and already firing" through the ``ALERTS`` series;
an instance without hysteresis publishes a clear threshold equal to its threshold, which makes
that branch a no-op.

Gauge-based rules are exact equivalents (the promtool tests feed both evaluators the same
series).  Per-endpoint percentile rules are approximations: Prometheus computes p95/p99 from
histogram buckets over 5 minutes, the exporter exactly over its window of observations.

Besides the threshold rules, a second group watches what the exporter cannot report itself:
the exporter or the car being offline, and the exporter's self-metrics (reloads, collection
errors, notifier failures and drops, cardinality caps).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml

from exporter import metric_names as names
from exporter.alerts.rules import CRITICAL, LEVELS, WARNING, AlertRule
from exporter.config.durations import format_duration
from exporter.series import STATESET, SeriesSpec
from exporter.sources.registry import all_series

# Metrics that are no declared series: metric -> (PromQL for the watched value, ``{m}``
# standing for its label matchers; labels identifying one alert instance).  No aggregation,
# so labels a scrape config adds (such as the example's ``vehicle``) reach the alert.
SPECIAL_EXPR: dict[str, tuple[str, tuple[str, ...]]] = {
    "request_latency_p95": (
        f"histogram_quantile(0.95, rate({names.REQUEST_DURATION}_bucket{{m}}[5m])) * 1000",
        ("endpoint",),
    ),
    "request_latency_p99": (
        f"histogram_quantile(0.99, rate({names.REQUEST_DURATION}_bucket{{m}}[5m])) * 1000",
        ("endpoint",),
    ),
    "extension_crashed": (names.EXTENSION_STATUS + "{m}", ("extension",)),
    "target_down": (f"(1 - {names.TARGET_UP}{{m}})", ()),
}
SPECIAL_MATCHERS = {"extension_crashed": ('status="crashed"',)}
SPECIAL_UNITS = {"request_latency_p95": " ms", "request_latency_p99": " ms"}
# How the seed's units read after a number in an annotation.  The seed's "MB" is RSS / 2**20
# (exporter/sources/process.py), so it reads as MiB.
_UNIT_TEXT = {"%": "%", "count": "", "flags": "", "MB": " MiB"}
THRESHOLD = names.ALERT_THRESHOLD
CLEAR_THRESHOLD = names.ALERT_CLEAR_THRESHOLD
JOIN = ("job", "instance")
DEFAULT_JOB = "crankshaft"  # the job name of config/prometheus.yml
DEFAULT_RUNBOOK_BASE = "README.md"

# What the value is, in an annotation.  The seed's five series keep its HELP texts, which
# read poorly in a sentence ("Process memory usage in megabytes is 2100.0 MiB"); every other
# declared series is named by its HELP text.
SPECIAL_WHAT = {
    "memory_usage": "Memory (RSS) of the monitored process",
    "cpu_usage": "CPU usage of the monitored process",
    "active_connections": "Active connections",
    "total_connections": "Connections since start",
    "request_latency": "Average request latency",
    "request_latency_p95": "p95 latency of {{ $labels.endpoint }}",
    "request_latency_p99": "p99 latency of {{ $labels.endpoint }}",
}
WHERE = "{{ $labels.instance }}{{ with $labels.vehicle }} (vehicle {{ . }}){{ end }}"


def _declared(metric: str) -> SeriesSpec | None:
    return {s.key: s for s in all_series()}.get(metric)


def _series_expr(spec: SeriesSpec) -> str:
    if spec.kind == STATESET:  # any state true
        return f"(sum without ({spec.metric}) ({spec.metric}{{m}}))"
    return spec.sample_name + "{m}"


def value_exprs() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every alert metric's PromQL: declared series (from their declarations) and the rest."""
    exprs = {s.key: (_series_expr(s), ()) for s in all_series() if s.alert}
    return {**exprs, **SPECIAL_EXPR}


def _base_matchers(metric: str) -> tuple[str, ...]:
    spec = _declared(metric)
    if spec is not None:
        return tuple(f'{k}="{_escape(v)}"' for k, v in spec.labels)
    return SPECIAL_MATCHERS.get(metric, ())


def unit_text(metric: str) -> str:
    """How the metric's unit reads after a number ("%", " MiB", "" for counts)."""
    spec = _declared(metric)
    if spec is not None:
        return _UNIT_TEXT.get(spec.unit, " " + spec.unit)
    return SPECIAL_UNITS.get(metric, "")


def _verb(metric: str) -> str:
    """Go printf verb for the value and its thresholds: whole numbers for counts and flags."""
    spec = _declared(metric)
    if spec is not None and (spec.whole or spec.unit in ("count", "flags")):
        return "%.0f"
    return "%.0f" if metric in ("extension_crashed", "target_down") else "%.1f"


def _what(metric: str) -> str:
    spec = _declared(metric)
    if metric in SPECIAL_WHAT or spec is None:
        return SPECIAL_WHAT.get(metric, metric)
    what = spec.help
    if spec.labels:
        what += " (" + ", ".join(f"{k} {v}" for k, v in spec.labels) + ")"
    if spec.kind == STATESET:  # the value is how many of its states are set
        what += f": the number of states set among {', '.join(spec.states)}"
    return what


def alert_name(metric: str) -> str:
    return "Crankshaft" + "".join(part.capitalize() for part in metric.split("_"))


# Alert names with a section of their own in README's runbook (a test holds the two equal);
# any other (a series of a source added later) links to the generic section.
RUNBOOK_SECTIONS = frozenset({
    "CrankshaftMemoryUsage", "CrankshaftCpuUsage", "CrankshaftActiveConnections",
    "CrankshaftTotalConnections", "CrankshaftRequestLatency", "CrankshaftRequestLatencyP95",
    "CrankshaftRequestLatencyP99", "CrankshaftExtensionCrashed", "CrankshaftTargetDown",
    "CrankshaftProcessThreads", "CrankshaftProcessOpenFds", "CrankshaftCpuTemperature",
    "CrankshaftBoardThrottled", "CrankshaftBoardThrottledSinceBoot", "CrankshaftExporterDown",
    "CrankshaftExporterGone", "CrankshaftNoTargets", "CrankshaftMetricsMissing",
    "CrankshaftConfigReloadFailed", "CrankshaftCollectionErrors", "CrankshaftSourceFailing",
    "CrankshaftNotificationsFailing", "CrankshaftNotificationsDropped",
    "CrankshaftLatencyObservationsDropped", "CrankshaftExtensionUpdatesDropped",
})
GENERIC_RUNBOOK = "other-series-alerts"  # README's "Other series alerts"


def runbook_anchor(alertname: str) -> str:
    """The GitHub anchor of the alert's runbook section in README: its own heading, or the
    generic one."""
    return alertname.lower() if alertname in RUNBOOK_SECTIONS else GENERIC_RUNBOOK


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


def _literal(text: str) -> str:
    """Prometheus expands labels and annotations as Go templates: keep ``{{`` literal."""
    return text.replace("{{", '{{ "{{" }}')


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _value_expr(metric: str, selector: str) -> str:
    matchers = [*_base_matchers(metric), *([selector] if selector else [])]
    block = "{" + ",".join(matchers) + "}" if matchers else ""
    return value_exprs()[metric][0].replace("{m}", block)


def _threshold_series(family: str, rule: AlertRule, severity: str) -> str:
    selector = _escape(rule.selector) if rule.selector is not None else ""
    return f'{family}{{metric="{rule.metric}",level="{severity}",selector="{selector}"}}'


def _threshold_template(rule: AlertRule, severity: str) -> str:
    """The instance's own threshold, looked up when the alert is rendered."""
    label = value_exprs()[rule.metric][1]
    selector = f"$labels.{label[0]}" if rule.selector is not None else '""'
    verb = _verb(rule.metric)
    return (
        '{{ with printf "' + THRESHOLD + '{job=%q,instance=%q,metric=%q,level=%q,selector=%q}" '
        f'$labels.job $labels.instance "{rule.metric}" "{severity}" {selector} | query }}}}'
        f'{{{{ . | first | value | printf "{verb}" }}}}{{{{ end }}}}'
    )


def _annotations(rule: AlertRule, severity: str, runbook_base: str) -> dict[str, str]:
    what, unit, verb = _what(rule.metric), unit_text(rule.metric), _verb(rule.metric)
    title = _literal(rule.description or f"{rule.metric} above {severity} threshold")
    if rule.metric in ("request_latency_p95", "request_latency_p99"):
        title += " ({{ $labels.endpoint }})"
    if rule.metric == "extension_crashed":
        title += " ({{ $labels.extension }})"
        description = f"Extension {{{{ $labels.extension }}}} is in state crashed on {WHERE}."
    elif rule.metric == "target_down":
        description = (
            f"No target process found on {WHERE}: memory and CPU are not sampled "
            f"({names.TARGET_UP} is 0)."
        )
    else:
        description = (
            f'{what} is {{{{ $value | printf "{verb}" }}}}{unit} on {WHERE}, above its '
            f"{severity} threshold of {_threshold_template(rule, severity)}{unit}."
        )
    return {
        "summary": f"{title} on {WHERE}",
        "description": description,
        "runbook_url": f"{runbook_base}#{runbook_anchor(alert_name(rule.metric))}",
    }


def rule_entries(
    rule: AlertRule, siblings: list[AlertRule], runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> list[dict[str, object]]:
    """The Prometheus rules for one exporter rule (one per level it defines)."""
    if not rule.enabled:
        return []
    name = alert_name(rule.metric)
    identity = (*JOIN, *value_exprs()[rule.metric][1])
    value = _value_expr(rule.metric, _selector(rule.metric, rule, siblings))
    join = f"on ({', '.join(JOIN)}) group_left ()"
    entries = []
    for level in LEVELS:
        if rule.threshold(level) is None:
            continue
        severity = level.lower()
        firing = f'ALERTS{{alertname="{name}", severity="{severity}", alertstate="firing"}}'
        expr = (
            f"({value} > {join} {_threshold_series(THRESHOLD, rule, severity)})"
            f" or ({value} > {join} {_threshold_series(CLEAR_THRESHOLD, rule, severity)}"
            f" and on ({', '.join(identity)}) {firing})"
        )
        entry: dict[str, object] = {"alert": name, "expr": expr}
        if rule.for_seconds > 0:
            entry["for"] = format_duration(rule.for_seconds)
        labels = {"severity": severity, "metric": rule.metric}
        if rule.selector is not None:  # keeps it distinct from the metric's general rule
            labels[identity[2]] = _literal(rule.selector)
        entry["labels"] = labels
        entry["annotations"] = _annotations(rule, severity, runbook_base)
        entries.append(entry)
    return entries


# --- the exporter and its own health ----------------------------------------------------------

# (alert, expr with {job} for the job matcher, for, severity, summary, description).
# Why these `for`s: a head unit restarts or loses Wi-Fi now and then; five minutes of silence
# is more than a restart and less than a trip.  Counter rules look at a 10-15 minute window
# because the exporter moves most counters once a collection (60 s by default).
HEALTH_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    (
        "CrankshaftExporterDown",
        'up{{job="{job}"}} == 0',
        "5m",
        "warning",
        "crankshaft-exporter unreachable on " + WHERE,
        "Prometheus has not been able to scrape " + WHERE + " for 5 minutes: the head unit is "
        "off or offline, or the exporter is not running. Its other alerts resolve meanwhile.",
    ),
    (
        "CrankshaftExporterGone",
        'max_over_time(up{{job="{job}"}}[1h]) unless up{{job="{job}"}}',
        "5m",
        "warning",
        "crankshaft-exporter target " + WHERE + " disappeared",
        "Prometheus scraped " + WHERE + " during the last hour but it is no longer a target "
        "(removed from the scrape configuration or service discovery).",
    ),
    (
        "CrankshaftNoTargets",
        'absent(up{{job="{job}"}})',
        "10m",
        "warning",
        'No crankshaft-exporter target in job "{job}"',
        'Prometheus has no target in job "{job}": check the scrape configuration.',
    ),
    (
        "CrankshaftMetricsMissing",
        'up{{job="{job}"}} == 1 unless on (job, instance) ' + names.BUILD + "_info",
        "5m",
        "warning",
        "No crankshaft-exporter metrics from " + WHERE,
        WHERE + f" answers scrapes but without {names.BUILD}_info: the scrape "
        "reaches something else (wrong port or metrics_path).",
    ),
    (
        "CrankshaftConfigReloadFailed",
        names.CONFIG_RELOAD_OK + '{{job="{job}"}} == 0',
        "10m",
        "warning",
        "crankshaft-exporter configuration reload failed on " + WHERE,
        "The last reload of exporter.yaml on " + WHERE + " was rejected; the exporter runs "
        "the previous configuration. `journalctl -u crankshaft-exporter` says why.",
    ),
    (
        "CrankshaftCollectionErrors",
        "increase(" + names.COLLECTION_ERRORS + '_total{{job="{job}"}}[10m]) > 1',
        "5m",
        "warning",
        "Collection errors from source {{ $labels.source }} on " + WHERE,
        'Source {{ $labels.source }} failed {{ $value | printf "%.0f" }} times in the last '
        "10 minutes on " + WHERE + "; its series have gaps.",
    ),
    (
        "CrankshaftSourceFailing",
        "avg_over_time(" + names.SOURCE_UP + '{{job="{job}"}}[15m]) < 0.5',
        "5m",
        "warning",
        "Source {{ $labels.source }} keeps failing on " + WHERE,
        "Source {{ $labels.source }} failed in more than half of its collections over the last "
        "15 minutes on " + WHERE + "; its series are absent while it fails.",
    ),
    (
        "CrankshaftNotificationsFailing",
        "increase(" + names.NOTIFICATIONS_FAILED + '_total{{job="{job}"}}[10m]) > 2',
        "5m",
        "warning",
        "Notifier {{ $labels.notifier }} failing on " + WHERE,
        '{{ $value | printf "%.0f" }} deliveries to {{ $labels.notifier }} failed in the last '
        "10 minutes on " + WHERE + "; they are retried until their retry window ends.",
    ),
    (
        "CrankshaftNotificationsDropped",
        "increase(" + names.NOTIFICATIONS_DROPPED + '_total{{job="{job}"}}[10m]) > 0',
        "0s",
        "warning",
        "Notifier {{ $labels.notifier }} dropped alert notifications on " + WHERE,
        '{{ $value | printf "%.0f" }} notifications to {{ $labels.notifier }} were given up '
        "({{ $labels.reason }}) in the last 10 minutes on " + WHERE + ".",
    ),
    (
        "CrankshaftLatencyObservationsDropped",
        "increase(" + names.LATENCY_DROPPED + '_total{{job="{job}"}}[10m]) > 0',
        "0s",
        "warning",
        "Endpoint cap reached on " + WHERE,
        '{{ $value | printf "%.0f" }} latency observations were dropped in the last 10 minutes '
        "on " + WHERE + ": more endpoints than latency.max_endpoints.",
    ),
    (
        "CrankshaftExtensionUpdatesDropped",
        "increase(" + names.EXTENSION_DROPPED + '_total{{job="{job}"}}[10m]) > 0',
        "0s",
        "warning",
        "Extension cap reached on " + WHERE,
        '{{ $value | printf "%.0f" }} extension status updates were dropped in the last 10 '
        "minutes on " + WHERE + ": more extensions than extensions.max_extensions.",
    ),
)


def _job_text(text: str, job: str) -> str:
    return text.replace('"{job}"', f'"{_escape(job)}"')


def health_entries(
    job: str = DEFAULT_JOB, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name, expr, for_, severity, summary, description in HEALTH_RULES:
        entry: dict[str, object] = {"alert": name, "expr": expr.format(job=_escape(job))}
        if for_ != "0s":
            entry["for"] = for_
        entry["labels"] = {"severity": severity}
        entry["annotations"] = {
            "summary": _job_text(summary, _literal(job)),
            "description": _job_text(description, _literal(job)),
            "runbook_url": f"{runbook_base}#{runbook_anchor(name)}",
        }
        entries.append(entry)
    return entries


def build_rules(
    rules: Iterable[AlertRule], job: str = DEFAULT_JOB, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> dict[str, object]:
    rules = list(rules)
    entries: list[dict[str, object]] = []
    for rule in rules:
        siblings = [r for r in rules if r.metric == rule.metric and r is not rule]
        entries.extend(rule_entries(rule, siblings, runbook_base))
    return {
        "groups": [
            {"name": "crankshaft-exporter", "rules": entries},
            {"name": "crankshaft-exporter-health", "rules": health_entries(job, runbook_base)},
        ]
    }


def render_rules(
    rules: Iterable[AlertRule],
    interval_seconds: float | None = None,
    job: str = DEFAULT_JOB,
    runbook_base: str = DEFAULT_RUNBOOK_BASE,
) -> str:
    header = (
        "# Prometheus alerting rules generated by `crankshaft-exporter alert-rules` from the\n"
        "# exporter's alert configuration; severity is warning or critical.  Thresholds are\n"
        "# each instance's own crankshaft_alert_threshold: one file serves a whole fleet.\n"
    )
    if interval_seconds is not None:
        header += (
            f"# The exporter samples every {format_duration(interval_seconds)}: scrape at least "
            "that often.\n"
        )
    body = yaml.safe_dump(
        build_rules(rules, job, runbook_base), sort_keys=False, width=1000, allow_unicode=True
    )
    return header + body


__all__ = [
    "CRITICAL",
    "WARNING",
    "alert_name",
    "build_rules",
    "health_entries",
    "render_rules",
    "runbook_anchor",
    "unit_text",
    "value_exprs",
]

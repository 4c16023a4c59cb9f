"""Prometheus alerting rules equivalent to the exporter's own alert rules, for a whole fleet.

``crankshaft-exporter alert-rules`` prints them.  Each level of a configured rule becomes one
Prometheus rule with a ``severity`` label, like the exporter's evaluator, where a warning
level keeps firing while the critical one does too; route or inhibit in Alertmanager on
``severity`` (config/alertmanager.yml).

The thresholds are not written into the rules: each one compares a series with the threshold
*that instance* publishes (``crankshaft_alert_threshold{metric,level,selector}`` and, for
hysteresis, ``crankshaft_alert_clear_threshold``), joined on ``job``, ``instance`` and
``vehicle`` (absent, so equal, on a machine without one; it keeps apart cars whose head units
share a host name, as units flashed from one image do, which would otherwise make the join
fail for every car with "duplicate series").  So one
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
the exporter being unreachable, and the exporter's self-metrics (reloads, collection errors,
notifier failures and drops, cardinality caps); a third watches a fleet of cars.

A fleet is told apart by the ``vehicle`` label (a scrape config's target label, or a
``remote_write`` entry's ``labels``): a car is off whenever it is parked, so nothing arriving
from it is normal and never pages.  ``up``-based rules (a scrape can fail) apply only to
targets without a ``vehicle`` label, always-on machines; cars remote-write and have no ``up``
at all (or, behind a Prometheus agent, an ``up`` that stops when they park).  For a car,
silence becomes information after ``SILENT_AFTER`` (CrankshaftVehicleSilent), and what pages
is what a reporting car says itself: its target down, its exporter failing.

Late samples: a rule is evaluated at the present.  An instant selector sees the newest sample
of the last 5 minutes (the lookback), a range selector the samples in its range before now, so
samples that arrive hours late (a car sending its backlog after an outage) are stored but
never seen by a rule: they cannot fire an alert retroactively, and a ``for`` needs that many
minutes of evaluations, which a backlog delivered in seconds cannot give.  The last samples of
a backlog (within the lookback) are seen, as they would have been on time.  With no staleness
marker after a remote-written car's last sample, its last values stay visible for those 5
minutes after it parks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml

from exporter import metric_names as names
from exporter.alerts.rules import CRITICAL, LEVELS, WARNING, AlertRule
from exporter.config.durations import format_duration, parse_duration
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
JOIN = ("job", "instance", "vehicle")
DEFAULT_JOB = "crankshaft"  # the job name of config/prometheus.yml and of remote write
# How long a car may stay silent before CrankshaftVehicleSilent (info) says so: a long
# weekend, not a holiday.
SILENT_AFTER = "3d"
LAST_SEEN = "crankshaft:last_seen_timestamp_seconds"  # recorded by the fleet group
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
    "CrankshaftVehicleExporterDown", "CrankshaftVehicleSilent", "CrankshaftRemoteWriteDropped",
    "CrankshaftRemoteWriteBacklog",
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
        '{{ with printf "' + THRESHOLD + '{job=%q,instance=%q,vehicle=%q,metric=%q,level=%q,'
        'selector=%q}" $labels.job $labels.instance $labels.vehicle '
        f'"{rule.metric}" "{severity}" {selector} | query }}}}'
        f'{{{{ . | first | value | printf "{verb}" }}}}{{{{ end }}}}'
    )


def _annotations(rule: AlertRule, severity: str, runbook_base: str) -> dict[str, str]:
    what, unit, verb = _what(rule.metric), unit_text(rule.metric), _verb(rule.metric)
    title = _literal(rule.description or f"{rule.metric} above {severity} threshold")
    if rule.metric in ("request_latency_p95", "request_latency_p99"):
        title += " ({{ $labels.endpoint }})"
    if rule.metric == "extension_crashed":
        title += " ({{ $labels.extension }})"
        # Says what the summary does not: where the state comes from and what clears it.
        description = ("The extension reported the state crashed (POST /metrics/record or "
                       "record_extension_status); this resolves when it reports starting, "
                       "running or stopped.")
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
            labels[identity[len(JOIN)]] = _literal(rule.selector)
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
        # Always-on machines only: a car (vehicle label) cannot be scraped whenever it is
        # parked, which is no alert (CrankshaftVehicleSilent says when it lasts).
        "CrankshaftExporterDown",
        'up{{job="{job}",vehicle=""}} == 0',
        "5m",
        "warning",
        "crankshaft-exporter unreachable on " + WHERE,
        "Prometheus has not been able to scrape " + WHERE + " for 5 minutes: the machine is "
        "off or offline, or the exporter is not running. Its other alerts resolve meanwhile.",
    ),
    (
        # A car's `up` behind a Prometheus agent disappears when it parks: not "gone".
        "CrankshaftExporterGone",
        'max_over_time(up{{job="{job}",vehicle=""}}[1h]) unless up{{job="{job}"}}',
        "5m",
        "warning",
        "crankshaft-exporter target " + WHERE + " disappeared",
        "Prometheus scraped " + WHERE + " during the last hour but it is no longer a target "
        "(removed from the scrape configuration or service discovery).",
    ),
    (
        # A remote-writing fleet has no `up` at all, and a parked one nothing fresh: only a
        # Prometheus that has never heard of any exporter in the job (the recorded last-seen
        # time is carried forward) has a configuration problem.
        "CrankshaftNoTargets",
        'absent(up{{job="{job}"}}) unless on () ' + LAST_SEEN + '{{job="{job}"}}',
        "10m",
        "warning",
        'No crankshaft-exporter in job "{job}"',
        'Prometheus has no target in job "{job}" and no exporter has remote-written to it: '
        "check the scrape configuration, or the cars' remote_write url and credentials.",
    ),
    (
        # The car is on and reaches Prometheus (another of its targets, such as the agent
        # itself or node_exporter, is up), but its exporter does not answer.
        "CrankshaftVehicleExporterDown",
        'up{{job="{job}",vehicle!=""}} == 0 and on (vehicle) '
        '(max by (vehicle) (up{{vehicle!=""}}) == 1)',
        "5m",
        "critical",
        "crankshaft-exporter down on " + WHERE + " while the car reports",
        WHERE + " is on and reporting (another of its scrape targets is up) but its exporter "
        "has not answered a scrape for 5 minutes: crankshaft-exporter is not running or not "
        "listening.",
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


# --- a fleet of cars ----------------------------------------------------------------------------

# Evaluated once a minute: the carried-forward last-seen time reads a day of its own samples.
FLEET_INTERVAL = "1m"
# The last collection time of every exporter ever heard from (the exporter's
# crankshaft_last_collection_timestamp_seconds, scraped or remote-written), carried forward by
# the rule itself once the car is silent.  A day of its own samples bridges a Prometheus that
# was down for up to a day; a raw range of weeks would read every sample of every car each
# evaluation.
LAST_SEEN_EXPR = (
    names.LAST_COLLECTION + '{{job="{job}"}} '
    "or last_over_time(" + LAST_SEEN + '{{job="{job}"}}[1d])'
)
FLEET_RULES: tuple[tuple[str, str, str, str, str, str], ...] = (
    (
        "CrankshaftVehicleSilent",
        "time() - " + LAST_SEEN + '{{job="{job}"}} > ' + f"{parse_duration(SILENT_AFTER):g}",
        "0s",
        "info",
        WHERE + " not heard from for " + SILENT_AFTER,
        "Nothing has arrived from " + WHERE + " for {{ $value | humanizeDuration }}: the car "
        "has been parked or switched off, or has had no link, since then. Its samples are "
        "sent when it is back (up to its max_sample_age; older ones are dropped and counted).",
    ),
    (
        "CrankshaftRemoteWriteDropped",
        "increase(" + names.RW_DROPPED + '_total{{job="{job}"}}[15m]) > 0',
        "0s",
        "warning",
        "Remote write dropped samples ({{ $labels.reason }}) on " + WHERE,
        '{{ $value | printf "%.0f" }} samples for {{ $labels.remote_name }} were dropped in the '
        "last 15 minutes on " + WHERE + " ({{ $labels.reason }}); they will never arrive. "
        "too_old: older than max_sample_age when they could be sent; refused: the receiver "
        "answered 4xx for them; queue_full: the send queue's bound was reached.",
    ),
    (
        # Fresh samples only: a queue's gauges travel in that queue, so a backlog towards
        # this receiver arrives with the backlog (late, unseen by rules); what fires here in
        # time is another remote_write entry falling behind while this one delivers.
        "CrankshaftRemoteWriteBacklog",
        names.RW_OLDEST_PENDING_AGE + '{{job="{job}"}} > 900 and '
        "delta(" + names.RW_PENDING + '{{job="{job}"}}[15m]) > 0',
        "15m",
        "warning",
        "Remote write falling behind on " + WHERE,
        WHERE + " reports while its queue for {{ $labels.remote_name }} grows and its oldest "
        "unsent sample is {{ $value | humanizeDuration }} old: delivery keeps up neither with "
        "collection nor with the backlog (a slow link, a receiver refusing with 5xx/429, or "
        "queue_config.max_samples_per_send too small).",
    ),
)


def fleet_entries(
    job: str = DEFAULT_JOB, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> list[dict[str, object]]:
    """The recorded last-seen time, then the fleet's alerts."""
    entries: list[dict[str, object]] = [
        {"record": LAST_SEEN, "expr": LAST_SEEN_EXPR.format(job=_escape(job))}
    ]
    return entries + _alert_entries(FLEET_RULES, job, runbook_base)


def _job_text(text: str, job: str) -> str:
    return text.replace('"{job}"', f'"{_escape(job)}"')


def health_entries(
    job: str = DEFAULT_JOB, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> list[dict[str, object]]:
    return _alert_entries(HEALTH_RULES, job, runbook_base)


def _alert_entries(
    rules: tuple[tuple[str, str, str, str, str, str], ...], job: str, runbook_base: str
) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name, expr, for_, severity, summary, description in rules:
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
            {
                "name": "crankshaft-exporter-fleet",
                "interval": FLEET_INTERVAL,
                "rules": fleet_entries(job, runbook_base),
            },
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
        "# exporter's alert configuration; severity is info, warning or critical.  Thresholds are\n"
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
    "fleet_entries",
    "health_entries",
    "render_rules",
    "runbook_anchor",
    "unit_text",
    "value_exprs",
]

"""Alert rules: what is watched, at which thresholds, and the seed's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

WARNING = "WARNING"
CRITICAL = "CRITICAL"
LEVELS = (WARNING, CRITICAL)  # ascending severity

# Metrics a rule may watch: every declared series that offers itself to alerts (the seed's
# five first, see exporter.sources.registry), plus the percentile metrics, evaluated per
# endpoint, extension_crashed per extension (1 while crashed), and target_down (1 while no
# target process exists).
ENDPOINT_METRICS = ("request_latency_p95", "request_latency_p99")
EXTENSION_METRICS = ("extension_crashed",)
STATE_METRICS = ("target_down",)
LATENCY_METRICS = ("request_latency", *ENDPOINT_METRICS)  # resolve when traffic stops


def series_metrics() -> tuple[str, ...]:
    from exporter.sources.registry import alert_metrics  # the registry imports no alerts

    return alert_metrics()


def alertable_metrics() -> tuple[str, ...]:
    return series_metrics() + ENDPOINT_METRICS + EXTENSION_METRICS + STATE_METRICS


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A level fires when the value exceeds its threshold (strictly, as the seed says).

    ``for_seconds``: how long a level's condition must hold before it fires (Prometheus'
    ``for``).  ``*_clear``: once firing, a level stays until the value drops to or below
    its clear threshold (hysteresis; defaults to the threshold itself).  ``selector``
    restricts an endpoint or extension rule to one endpoint/extension (None: each of them).
    """

    metric: str
    warning_threshold: float | None
    critical_threshold: float | None
    description: str = ""
    enabled: bool = True
    for_seconds: float = 0.0
    warning_clear: float | None = None
    critical_clear: float | None = None
    selector: str | None = None

    def __post_init__(self) -> None:
        for problem in rule_problems(self):
            raise ValueError(problem)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.metric, self.selector)

    def threshold(self, level: str) -> float | None:
        return self.warning_threshold if level == WARNING else self.critical_threshold

    def clear_threshold(self, level: str) -> float | None:
        if level == WARNING:
            return self.warning_threshold if self.warning_clear is None else self.warning_clear
        return self.critical_threshold if self.critical_clear is None else self.critical_clear


def _finite(x: float | None) -> bool:
    return x is None or (
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    )


def rule_problems(rule: AlertRule) -> list[str]:
    """Every reason the rule is invalid (empty when valid); messages name the field."""
    problems = []
    m = rule.metric
    known = alertable_metrics()
    if m not in known:
        problems.append(f"metric: unknown metric {m!r}; one of {', '.join(known)}")
    for name in ("warning_threshold", "critical_threshold", "warning_clear", "critical_clear"):
        if not _finite(getattr(rule, name)):
            problems.append(f"{name}: must be a finite number, got {getattr(rule, name)!r}")
    if problems:
        return problems
    w, c = rule.warning_threshold, rule.critical_threshold
    if w is None and c is None:
        problems.append("a rule needs a warning_threshold, a critical_threshold, or both")
    if w is not None and c is not None and w > c:
        problems.append(f"warning_threshold ({w:g}) is above critical_threshold ({c:g})")
    for level, threshold, clear in (
        ("warning", w, rule.warning_clear),
        ("critical", c, rule.critical_clear),
    ):
        if clear is not None and threshold is None:
            problems.append(f"{level}_clear is set but {level}_threshold is not")
        elif clear is not None and threshold is not None and clear > threshold:
            problems.append(f"{level}_clear ({clear:g}) is above {level}_threshold ({threshold:g})")
    if not _finite(rule.for_seconds) or rule.for_seconds < 0:
        problems.append(f"for: must be a duration >= 0, got {rule.for_seconds!r}")
    if rule.selector is not None and m not in ENDPOINT_METRICS + EXTENSION_METRICS:
        problems.append(f"selector: only endpoint and extension metrics take one, not {m!r}")
    return problems


#: The seed's name for a rule: ``MetricAlert("memory_usage", 1800.0, 2200.0, "High memory")``.
MetricAlert = AlertRule

DEFAULT_RULES: tuple[AlertRule, ...] = (
    # The seed's four default alerts, thresholds and descriptions as it lists them.
    AlertRule("memory_usage", 1536.0, 2048.0, "Memory usage high"),
    AlertRule("cpu_usage", 70.0, 90.0, "CPU usage high"),
    AlertRule("active_connections", 50.0, 100.0, "Too many active connections"),
    AlertRule("request_latency", 500.0, 1000.0, "Request latency high"),
    # Beyond the seed: states that have no number to cross but deserve a page.
    AlertRule("extension_crashed", None, 0.0, "Extension crashed"),
    AlertRule("target_down", None, 0.0, "Target process not running"),
)


# The shipped configuration (the daemon without a config file, config/exporter.yaml): the same
# rules with a `for` of 5 minutes on the seed's four.  At the default 60 s interval a level
# then needs six samples in a row above its threshold, so an app start, a garbage collection
# or one slow minute does not page critical, while a leak or an overload still pages within
# minutes.  target_down waits 2 minutes (three samples in a row): a service that systemd
# restarts between two samples does not page, nor does one "down" sample in Prometheus,
# where it stays visible for an interval plus the scrape lag (more than 1 minute).  A
# crashed extension is a state the head unit reports, not a noisy measurement, and stays
# until the extension is restarted: it pages at once.  DEFAULT_RULES (what
# MetricsEndpoint() starts with) keep the seed's behaviour: a rule added with the seed's
# AlertRule(metric, warning, critical, description) has no `for` and fires on the first
# sample that crosses.
SHIPPED_FOR_SECONDS = {
    **dict.fromkeys(("memory_usage", "cpu_usage", "active_connections", "request_latency"), 300.0),
    "target_down": 120.0,
}
SHIPPED_RULES: tuple[AlertRule, ...] = tuple(
    replace(rule, for_seconds=SHIPPED_FOR_SECONDS.get(rule.metric, 0.0)) for rule in DEFAULT_RULES
)

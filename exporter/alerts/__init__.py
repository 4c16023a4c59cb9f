"""Threshold alerting: rules, the pure evaluator, and the events it emits."""

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.events import ActiveAlert, AlertEvent
from exporter.alerts.rules import DEFAULT_RULES, AlertRule, MetricAlert

__all__ = [
    "DEFAULT_RULES",
    "ActiveAlert",
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "MetricAlert",
]

"""The seed's embedding API by its own names: ``from exporter import MetricsEndpoint,
MetricAlert`` and the custom-alert example of its "Alert Management" section."""

from __future__ import annotations

import subprocess
import sys

from exporter import AlertRule, MetricAlert, MetricsEndpoint


def test_the_seed_names_import_from_the_package_in_a_fresh_interpreter() -> None:
    code = (
        "from exporter import MetricsEndpoint, MetricAlert\n"
        "import exporter.endpoint, exporter.alerts.rules\n"
        "assert MetricsEndpoint is exporter.endpoint.MetricsEndpoint\n"
        "assert MetricAlert is exporter.alerts.rules.AlertRule\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_custom_memory_alert_fires_warning_on_the_first_sample_above_1800() -> None:
    assert MetricAlert is AlertRule
    clock = [1.7e9]
    metrics = MetricsEndpoint(sources=[], clock=lambda: clock[0])  # manual mode
    fired: list[tuple[str, str, float]] = []
    metrics.on_alert_triggered(lambda metric, level, value: fired.append((metric, level, value)))

    metrics.add_alert(MetricAlert("memory_usage", 1800.0, 2200.0, "High memory usage"))
    # It replaced the default memory rule (warning 1536): 1700 and 1800 fire nothing.
    for value in (1700.0, 1800.0):
        metrics.record_memory_usage(value)
        clock[0] += 1
    assert fired == []
    assert metrics.get_alerts() == []

    metrics.record_memory_usage(1900.0)
    assert fired == [("memory_usage", "WARNING", 1900.0)]
    (alert,) = metrics.get_alerts()
    assert alert == {
        "metric": "memory_usage",
        "current_value": 1900.0,
        "warning_threshold": 1800.0,
        "critical_threshold": 2200.0,
        "description": "High memory usage",
        "level": "WARNING",
    }

    clock[0] += 1
    metrics.record_memory_usage(2300.0)
    assert fired[-1] == ("memory_usage", "CRITICAL", 2300.0)
    metrics.enable_alert("memory_usage", False)  # the seed's "disable temporarily"
    assert metrics.get_alerts() == []
    metrics.remove_alert("memory_usage")
    assert [r.metric for r in metrics.alert_rules()].count("memory_usage") == 0

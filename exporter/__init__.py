"""crankshaft-exporter: the Crankshaft Performance Monitoring System as a Prometheus exporter.

``from exporter import MetricsEndpoint, MetricAlert`` gives the seed's class and its name for
an alert rule; they load on first use, so ``import exporter`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AlertRule", "MetricAlert", "MetricsEndpoint", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "MetricsEndpoint":
        from exporter.endpoint import MetricsEndpoint

        return MetricsEndpoint
    if name in ("MetricAlert", "AlertRule"):
        from exporter.alerts import rules

        return getattr(rules, name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")

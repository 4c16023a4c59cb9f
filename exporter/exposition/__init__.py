"""Prometheus exposition: text format 0.0.4 and OpenMetrics 1.0.

:mod:`families` builds every family as prometheus_client metric families from one snapshot
(the reference model), :mod:`collector` offers them as a custom collector in a
``CollectorRegistry``, and :mod:`fast` renders the same bytes as the library's encoders,
faster, for scrapes.
"""

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

__all__ = ["OPENMETRICS_CONTENT_TYPE", "TEXT_CONTENT_TYPE"]

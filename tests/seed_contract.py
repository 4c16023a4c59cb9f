"""What the seed specifies for the JSON documents, the CSV export, the exposition's gauges
and the default alerts, written out once for every test that checks it."""

from __future__ import annotations

from exporter.sources import registry

# GET /metrics: the top-level keys (the seed's, plus our websocket_total series).
METRICS_KEYS = {
    "timestamp",
    "uptime_ms",
    "is_collecting",
    "collection_interval_ms",
    "memory",
    "cpu",
    "websocket_active",
    "websocket_total",
    "latency",
    "extensions",
    "latency_breakdown",
}
# The keys of each series document in GET /metrics.
SERIES_DOC_KEYS = {"name", "unit", "sample_count", "latest", "average", "min", "max", "samples"}
# Series key in GET /metrics -> (series name, unit).
SEED_SERIES = {
    "memory": ("memory_usage", "MB"),
    "cpu": ("cpu_usage", "%"),
    "websocket_active": ("active_connections", "count"),
    "websocket_total": ("total_connections", "count"),
    "latency": ("request_latency", "ms"),
}
# GET /metrics/summary.
SUMMARY_KEYS = {
    "timestamp",
    "uptime_seconds",
    "memory_mb",
    "cpu_percent",
    "active_connections",
    "total_connections",
    "avg_latency_ms",
    "last_hour",
    "active_alerts",
}
# An alert in GET /metrics/alerts and in the summary's active_alerts.
ALERT_KEYS = {
    "metric",
    "current_value",
    "warning_threshold",
    "critical_threshold",
    "description",
    "level",
}
# The alert of the seed's GET /metrics/summary example.
SEED_EXAMPLE_ALERT = {
    "metric": "memory_usage",
    "current_value": 245.8,
    "warning_threshold": 220.0,
    "critical_threshold": 280.0,
    "description": "Memory usage high",
    "level": "WARNING",
}
# GET /metrics/csv.
CSV_HEADER = [
    "timestamp",
    "memory_mb",
    "cpu_percent",
    "active_connections",
    "total_connections",
    "request_latency_ms",
]
# The seed's gauges in the exposition: name -> HELP text.
SEED_GAUGE_HELP = {
    "crankshaft_memory_usage_mb": "Process memory usage in megabytes",
    "crankshaft_cpu_usage_percent": "Process CPU usage percentage",
    "crankshaft_websocket_active_connections": "Active WebSocket connections",
    "crankshaft_request_latency_ms": "Average request latency in milliseconds",
}
# The seed's four default alerts: metric -> (warning, critical, description).
SEED_DEFAULT_ALERTS = {
    "memory_usage": (1536.0, 2048.0, "Memory usage high"),
    "cpu_usage": (70.0, 90.0, "CPU usage high"),
    "active_connections": (50.0, 100.0, "Too many active connections"),
    "request_latency": (500.0, 1000.0, "Request latency high"),
}
# The same thresholds as the exposition labels them: (metric, level) -> threshold.
SEED_THRESHOLDS = {
    (metric, level): threshold
    for metric, (warning, critical, _) in SEED_DEFAULT_ALERTS.items()
    for level, threshold in (("warning", warning), ("critical", critical))
}
# Beyond the seed: what the daemon's default sources add to GET /metrics and GET
# /metrics/csv, after the seed's keys and columns, in catalog order: derived from the
# registered sources' declarations, so a new default source needs no edit here.
_SEED_SERIES_KEYS = {key for key, _ in SEED_SERIES.values()}
_DEFAULT_SOURCE_SERIES = [
    s
    for s in registry.catalog(t.name for t in registry.source_types() if t.default_enabled)
    if s.key not in _SEED_SERIES_KEYS
]
DEFAULT_SOURCE_JSON_KEYS = {s.json_key for s in _DEFAULT_SOURCE_SERIES if s.json_key}
DAEMON_METRICS_KEYS = METRICS_KEYS | DEFAULT_SOURCE_JSON_KEYS
DAEMON_CSV_HEADER = [
    *CSV_HEADER,
    *(s.csv_column for s in _DEFAULT_SOURCE_SERIES if s.csv_column),
]

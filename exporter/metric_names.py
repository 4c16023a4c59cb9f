"""Names of the exporter's own metric families, defined once: the exposition writes them and
the Prometheus rules (:mod:`exporter.promrules`) and Grafana queries read them.  Counters
are named without the ``_total`` their samples carry."""

from __future__ import annotations

TARGET_UP = "crankshaft_target_up"
BUILD = "crankshaft_exporter_build"  # an info family: its sample is BUILD + "_info"
REQUEST_DURATION = "crankshaft_request_duration_seconds"
EXTENSION_STATUS = "crankshaft_extension_status"
ALERT_THRESHOLD = "crankshaft_alert_threshold"
ALERT_CLEAR_THRESHOLD = "crankshaft_alert_clear_threshold"
COLLECTION_ERRORS = "crankshaft_collection_errors"
SOURCE_UP = "crankshaft_source_up"
SOURCE_DURATION = "crankshaft_source_duration_seconds"
SOURCE_SERIES = "crankshaft_source_series"
LATENCY_DROPPED = "crankshaft_latency_dropped_observations"
EXTENSION_DROPPED = "crankshaft_extension_dropped_updates"
CONFIG_RELOAD_OK = "crankshaft_config_last_reload_successful"
NOTIFICATIONS_FAILED = "crankshaft_notifications_failed"
NOTIFICATIONS_DROPPED = "crankshaft_notifications_dropped"

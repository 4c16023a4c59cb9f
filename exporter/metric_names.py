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
LAST_COLLECTION = "crankshaft_last_collection_timestamp_seconds"
# Remote write (exporter/remote_write/writer.py), labels remote_name and url.
RW_SENT = "crankshaft_remote_write_samples_sent"
RW_FAILED = "crankshaft_remote_write_samples_failed"
RW_DROPPED = "crankshaft_remote_write_samples_dropped"  # and reason
RW_PENDING = "crankshaft_remote_write_samples_pending"
RW_OLDEST_PENDING_AGE = "crankshaft_remote_write_oldest_pending_age_seconds"
RW_LAST_SUCCESS = "crankshaft_remote_write_last_success_timestamp_seconds"

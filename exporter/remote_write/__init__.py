"""Prometheus remote write 1.0 from the exporter itself, for cars on intermittent links.

Each collection's samples go into a durable send log (:mod:`.sendlog`) beside the history
file; one sender per configured receiver (:mod:`.sender`) delivers them oldest first with
their collection timestamps, resumes from its acknowledged position after an outage or a
restart, and drops (and counts) what a receiver refuses or what has grown older than
``max_sample_age``, so a refusal never jams delivery.
"""

"""History that survives restarts: the state file's format (:mod:`.format`) and the thread
that writes it and the start-up that reads it back (:mod:`.snapshots`); and the whole
history as OpenMetrics for backfilling Prometheus (:mod:`.backfill`)."""

"""What the alert evaluator sees at one moment, built from what was just recorded.

A series not recorded now is not an input, so its alerts hold (a target that vanished must
not silently resolve them); latency that went quiet is resolved explicitly by the recorder.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.rules import ENDPOINT_METRICS
from exporter.store import MetricStore


def alert_inputs(
    store: MetricStore,
    evaluator: AlertEvaluator,
    recorded: Mapping[str, float],
    target_up: bool | None,
    latency_live: bool,
) -> dict[tuple[str, str], float]:
    statesets = store.stateset_keys
    inputs = {
        (key, ""): _states_set(v) if key in statesets else v for key, v in recorded.items()
    }
    if target_up is not None:
        inputs[("target_down", "")] = 0.0 if target_up else 1.0
    for ext, status in store.extensions.statuses().items():
        inputs[("extension_crashed", ext)] = 1.0 if status == "crashed" else 0.0
    wanted = [m for m in ENDPOINT_METRICS if evaluator.watches(m)] if latency_live else []
    if wanted:  # sorting windows costs; only when a rule looks at percentiles
        for endpoint, p in store.latency.breakdown().items():
            if "request_latency_p95" in wanted:
                inputs[("request_latency_p95", endpoint)] = p.p95
            if "request_latency_p99" in wanted:
                inputs[("request_latency_p99", endpoint)] = p.p99
    return inputs


def _states_set(mask: float) -> float:
    """A state set is stored as a bit mask; its rules compare how many states are set, as
    the Prometheus rules do (the family's 0/1 samples summed)."""
    return float(int(mask).bit_count())

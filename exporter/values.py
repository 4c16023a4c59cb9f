"""Checks for the numbers callers hand the monitor: each returns the value or raises
ValueError with a message that names it (what the HTTP layer and config errors show)."""

from __future__ import annotations

import math

DEFAULT_INTERVAL_MS = 60_000
MIN_INTERVAL_MS = 10
MAX_INTERVAL_MS = 86_400_000


def check_interval_ms(interval_ms: object) -> int:
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int | float):
        raise ValueError(f"collection interval must be a number of milliseconds: {interval_ms!r}")
    if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
        raise ValueError(
            f"collection interval must be between {MIN_INTERVAL_MS} ms and 24 h, "
            f"got {interval_ms!r} ms"
        )
    return int(interval_ms)


def check_gauge(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r:.40}")
    v = float(value) if abs(value) < 1e300 else math.inf  # a huge int: no OverflowError
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r:.40}")
    return v


def check_count(name: str, value: object) -> float:
    v = check_gauge(name, value)
    if not v.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r:.40}")
    return v

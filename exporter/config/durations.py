"""Durations as Prometheus writes them (``500ms``, ``1h30m``, ``7d``) or a number of seconds.

The config file and the command line share these, so ``interval: 1m`` in the file and
``--interval 60`` on the command line mean the same thing, and the alert rules the CLI prints
for Prometheus use the spelling Prometheus reads back.
"""

from __future__ import annotations

import math
import re

from exporter.config.errors import quote

# Descending, as Prometheus requires; "m" must not swallow the "m" of "ms".
_UNITS_MS = (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
             ("s", 1000), ("ms", 1))  # fmt: skip
_PATTERN = re.compile(
    r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # "60" or "0.5": a bare number of seconds
_HINT = "use e.g. 500ms, 30s, 5m, 1h30m, 7d or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds (finite, >= 0) from a number of seconds or a duration string; else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration ({_HINT}), got {_describe(value)}")
    if isinstance(value, str):
        return _parse_text(value)
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"duration {value} is too large") from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"duration must be finite, got {seconds}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value}")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    if text.startswith("-") and len(text) > 1:
        raise ValueError(f"duration must not be negative, got {quote(value)}")
    if _SECONDS.fullmatch(text):
        return float(text)
    match = _PATTERN.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {quote(value)}; {_HINT}")
    total_ms = sum(
        int(part) * unit_ms
        for part, (_, unit_ms) in zip(match.groups(), _UNITS_MS, strict=True)
        if part is not None
    )
    try:
        return total_ms / 1000
    except OverflowError:
        raise ValueError(f"duration {quote(value)} is too large") from None


def format_duration(seconds: float) -> str:
    """The Prometheus spelling of ``seconds``, rounded to milliseconds: 90 -> ``1m30s``."""
    remaining = round(seconds * 1000)
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, unit_ms in _UNITS_MS:
        count, remaining = divmod(remaining, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    return f"a {type(value).__name__}"

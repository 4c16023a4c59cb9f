"""Batched recording from outside the process (``POST /metrics/record``).

A batch is validated as a whole before anything is applied, so a client's mistake in the
last observation cannot leave half a batch recorded.  The document::

    {
      "memory_mb": 256.5, "cpu_percent": 45.3,
      "active_connections": 12, "total_connections": 150,
      "extensions": {"media-player": "running"},
      "latency_ms": {"/api/play": [85.2, 91.0], "/api/settings/get": 15.2}
    }

Every key is optional, but a batch must carry something.  Field names are the seed's
summary names (each declared by its series, ``SeriesSpec.push_field``); ``latency_ms`` maps
an endpoint to one observation or a list of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from exporter.extensions import validate_extension
from exporter.labels import check_name
from exporter.latency import MAX_ENDPOINT_LENGTH
from exporter.values import check_count, check_gauge

MAX_OBSERVATIONS = 100_000  # per batch; the body-size limit usually bites first


class BatchError(ValueError):
    """The batch is invalid; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class Batch:
    gauges: dict[str, float] = field(default_factory=dict)
    extensions: list[tuple[str, str]] = field(default_factory=list)
    latencies: list[tuple[str, list[float]]] = field(default_factory=list)  # per endpoint

    @property
    def observation_count(self) -> int:
        return sum(len(values) for _, values in self.latencies)


class Unrepresentable:
    """A JSON token that is no usable number (NaN, Infinity, a 500-digit integer); kept as
    a placeholder so that validation can name the field it stands in."""

    def __init__(self, text: str) -> None:
        self.text = text if len(text) <= 20 else text[:17] + "..."

    def __repr__(self) -> str:
        return self.text


def _parse_int(text: str) -> int | Unrepresentable:
    return int(text) if len(text) <= 300 else Unrepresentable(text)


def _show(value: Any) -> str:
    if isinstance(value, Unrepresentable):
        return repr(value)
    return json.dumps(value)[:40]


def decode_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no integers too long to be numbers."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BatchError(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(text, parse_constant=Unrepresentable, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise BatchError(
            f"body is not valid JSON: {e.msg} (line {e.lineno} column {e.colno})"
        ) from None
    except (ValueError, RecursionError) as e:  # e.g. integer with more than 4300 digits
        raise BatchError(f"body is not usable JSON: {str(e)[:120]}") from None


def _number(path: str, value: Any, whole: bool) -> float:
    """The same checks as the Python API's record_* calls, worded for the field."""
    try:
        return (check_count if whole else check_gauge)(path, value)
    except ValueError as e:
        raise BatchError(str(e)) from None


def gauge_fields() -> dict[str, tuple[str, bool]]:
    """Document field -> (series key, whole number?), from the declared series."""
    from exporter.sources.registry import all_series

    return {s.push_field: (s.key, s.whole) for s in all_series() if s.push_field is not None}


def fields() -> tuple[str, ...]:
    return (*gauge_fields(), "extensions", "latency_ms")


def parse_batch(doc: Any) -> Batch:
    if not isinstance(doc, dict):
        raise BatchError("body must be a JSON object")
    by_field = gauge_fields()
    known = (*by_field, "extensions", "latency_ms")
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise BatchError(f"{unknown[0]}: unknown field; known fields are {', '.join(known)}")
    if not doc:
        raise BatchError(f"empty batch: give at least one of {', '.join(known)}")
    batch = Batch()
    for name, (key, whole) in by_field.items():
        if name in doc:
            batch.gauges[key] = _number(name, doc[name], whole)
    extensions = doc.get("extensions", {})
    if not isinstance(extensions, dict):
        raise BatchError("extensions: must be an object of extension id -> status")
    for ext, status in extensions.items():
        try:
            batch.extensions.append(validate_extension(ext, status))
        except ValueError as e:
            raise BatchError(f"extensions[{_short(ext)}]: {e}") from None
    latency = doc.get("latency_ms", {})
    if not isinstance(latency, dict):
        raise BatchError("latency_ms: must be an object of endpoint -> milliseconds or list")
    total = 0
    for endpoint, observations in latency.items():
        try:
            check_name("endpoint", endpoint, MAX_ENDPOINT_LENGTH)
        except ValueError as e:
            raise BatchError(f"latency_ms[{_short(endpoint)}]: {e}") from None
        is_list = isinstance(observations, list)
        values = observations if is_list else [observations]
        for i, ms in enumerate(values):
            # The hot loop of a big batch: one type test and one range test per value.
            # (bool is not int here: type() is exact; NaN fails the comparison.)
            if type(ms) not in (float, int) or not 0 <= ms < 1e300:
                where = f"[{i}]" if is_list else ""
                raise BatchError(
                    f"latency_ms[{_short(endpoint)}]{where}: must be a finite number of "
                    f"milliseconds >= 0, got {_show(ms)}"
                )
        total += len(values)
        if total > MAX_OBSERVATIONS:
            raise BatchError(f"latency_ms: more than {MAX_OBSERVATIONS} observations in one batch")
        batch.latencies.append((endpoint, [float(v) for v in values]))
    return batch


def _short(name: str) -> str:
    """A client-supplied name, quoted and cut short, safe to echo in a message."""
    text = json.dumps(name)
    return text if len(text) <= 60 else text[:57] + '..."'

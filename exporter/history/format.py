"""The history state file: what the monitor keeps, in a compact, versioned, checksummed form.

Layout (all integers little-endian)::

    header, 24 bytes:  magic  b"CRNKHIST"      8 bytes: says "this is ours"
                       version                 u16   (FORMAT_VERSION)
                       flags                   u16   (0; reserved)
                       payload length          u64   (bytes after the header)
                       CRC-32 of the payload   u32   (zlib.crc32)
    payload:           meta length             u32
                       meta                    UTF-8 JSON: what the samples are (below)
                       blobs                   float64 little-endian, in the order the meta
                                               lists them: per series its n timestamps
                                               (ms since the epoch) then its n values; per
                                               latency endpoint its window's observations

The meta JSON::

    {"saved_at_ms": float,
     "series": [[key, n, identity], ...],
     "latency": {"bounds": [seconds, ...], "total_count": int, "dropped": int,
                 "evicted": int, "last_observation_ms": float | null,
                 "interval_sum": float, "interval_count": int,
                 "endpoints": [[name, window_len, count, sum_ms, last_ms, [bucket counts]], ...]},
     "extensions": {"dropped": int, "evicted": int,
                    "states": [[name, status, since_ms, reported_ms], ...]}}

Samples are the ring buffers' two ``array('d')`` columns written as they are, so a sample
costs 16 bytes on disk plus a few bytes of meta per series: no text, no per-sample
overhead, and both writing and reading are memory copies.

The series are whatever the store's catalog declares (:mod:`exporter.series`), keyed by
their declared key, so a new source's series are kept with no change here.  ``identity``
(family, kind, unit, states: :func:`identity`) says what the numbers meant when written; a
series whose declaration has since changed meaning is not restored into it.

The meta is JSON because it is small, and because someone inspecting a file moved aside
can read it with ``dd`` and ``jq``.

A reader accepts exactly this version; any other (a newer exporter's file after a
downgrade) is refused like a damaged file, never half-read.  Every way a file can be wrong
raises :class:`FormatError` with a one-line reason: ``decode`` never raises anything else.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from exporter.extensions import EXTENSION_STATES, ExtensionState
from exporter.latency import EndpointState, LatencyState
from exporter.series import SeriesSpec

MAGIC = b"CRNKHIST"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHHQI")
META_LENGTH = struct.Struct("<I")
MAX_META_BYTES = 64 << 20  # a meta of 100 endpoints and extensions is a few KiB
_BIG_ENDIAN = sys.byteorder == "big"


class FormatError(ValueError):
    """The file is not a history this exporter can read; ``kind`` says how (foreign,
    future, truncated, corrupt) and the message says what was seen."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ExtensionsState:
    states: dict[str, ExtensionState] = field(default_factory=dict)
    dropped_updates: int = 0
    evicted: int = 0


@dataclass(frozen=True, slots=True)
class HistoryState:
    """Everything the file holds: per series key its (timestamps, values) columns, oldest
    first; the latency tracker; the extension registry."""

    saved_at_ms: float
    series: dict[str, tuple[array[float], array[float]]]
    latency: LatencyState
    extensions: ExtensionsState
    identities: dict[str, str] = field(default_factory=dict)  # key -> identity(spec)

    def sample_count(self) -> int:
        return sum(len(times) for times, _ in self.series.values())


def identity(spec: SeriesSpec) -> str:
    """What a series' stored numbers mean: a changed family, kind, unit or state list makes
    old samples meaningless for the new declaration (a new HELP text does not)."""
    labels = ",".join(f"{k}={v}" for k, v in spec.labels)
    return f"{spec.metric}{{{labels}}} {spec.kind} {spec.unit} {'|'.join(spec.states)}"


def _le(column: array[float]) -> array[float] | memoryview:
    """The column as little-endian bytes (a copy only on a big-endian machine)."""
    if not _BIG_ENDIAN:
        return memoryview(column).cast("B")
    swapped = array("d", column)
    swapped.byteswap()
    return swapped


def _meta(state: HistoryState) -> bytes:
    lat, ext = state.latency, state.extensions
    doc = {
        "saved_at_ms": state.saved_at_ms,
        "series": [[key, len(times), state.identities.get(key, "")]
                   for key, (times, _) in state.series.items()],
        "latency": {
            "bounds": list(lat.bounds_seconds),
            "total_count": lat.total_count,
            "dropped": lat.dropped_observations,
            "evicted": lat.evicted,
            "last_observation_ms": lat.last_observation_ms,
            "interval_sum": lat.interval_sum,
            "interval_count": lat.interval_count,
            "endpoints": [
                [e.name, len(e.window), e.count, e.sum_ms, e.last_ms, list(e.buckets)]
                for e in lat.endpoints
            ],
        },
        "extensions": {
            "dropped": ext.dropped_updates,
            "evicted": ext.evicted,
            "states": [
                [name, s.status, s.since_ms, s.reported_ms] for name, s in ext.states.items()
            ],
        },
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def encode_chunks(state: HistoryState) -> Iterator[bytes | memoryview | array[float]]:
    """The file as a sequence of buffers (header first), so that megabytes of samples
    are written from the columns themselves rather than joined into one more copy."""
    for times, values in state.series.values():
        if len(times) != len(values):
            raise ValueError("a series' timestamp and value columns differ in length")
    meta = _meta(state)
    blobs: list[bytes | memoryview | array[float]] = [META_LENGTH.pack(len(meta)), meta]
    for times, values in state.series.values():
        blobs += [_le(times), _le(values)]
    blobs += [_le(e.window) for e in state.latency.endpoints]
    crc, length = 0, 0
    for blob in blobs:
        crc = zlib.crc32(blob, crc)
        length += memoryview(blob).nbytes
    yield HEADER.pack(MAGIC, FORMAT_VERSION, 0, length, crc)
    yield from blobs


def encode(state: HistoryState) -> bytes:
    return b"".join(bytes(c) if isinstance(c, array) else c for c in encode_chunks(state))


def check_header(data: bytes) -> int:
    """The payload length the header announces, after checking magic and version."""
    if len(data) < HEADER.size:
        if MAGIC.startswith(data[: len(MAGIC)]):
            raise FormatError("truncated", f"only {len(data)} bytes, shorter than the header")
        raise FormatError("foreign", "not a crankshaft-exporter history file (no magic)")
    magic, version, _flags, length, _crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("foreign", "not a crankshaft-exporter history file (no magic)")
    if version > FORMAT_VERSION:
        raise FormatError(
            "future", f"format version {version} is newer than this exporter reads "
            f"({FORMAT_VERSION}); written by a newer crankshaft-exporter?"
        )
    if version != FORMAT_VERSION:
        raise FormatError("corrupt", f"unknown format version {version}")
    return int(length)


def decode(data: bytes) -> HistoryState:
    """The state in a whole file's bytes; FormatError for anything else."""
    length = check_header(data)
    payload = memoryview(data)[HEADER.size :]
    if len(payload) < length:
        raise FormatError(
            "truncated", f"payload is {len(payload)} bytes, the header announces {length}"
        )
    if len(payload) > length:
        raise FormatError("corrupt", f"{len(payload) - length} bytes after the payload")
    crc = HEADER.unpack_from(data)[4]
    if zlib.crc32(payload) != crc:
        raise FormatError("corrupt", "checksum mismatch (CRC-32 of the payload)")
    try:
        return _decode_payload(payload)
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, struct.error, RecursionError) as e:
        # The checksum matched, so this is a writer's bug or a crafted file, not bit rot.
        raise FormatError("corrupt", f"inconsistent content: {e}") from None


class _Reader:
    def __init__(self, payload: memoryview) -> None:
        self.payload = payload
        self.offset = 0

    def floats(self, n: int) -> array[float]:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise FormatError("corrupt", f"bad sample count {n!r:.40}")
        end = self.offset + 8 * n
        if end > len(self.payload):
            raise FormatError("corrupt", "the meta lists more samples than the file holds")
        column = array("d")
        column.frombytes(self.payload[self.offset : end])
        if _BIG_ENDIAN:
            column.byteswap()
        self.offset = end
        return column


def _number(value: object, what: str, *, whole: bool = False) -> float:
    ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value):  # type: ignore[arg-type]
        raise FormatError("corrupt", f"{what} is not a {'count' if whole else 'number'}")
    return value  # type: ignore[return-value]


def _decode_payload(payload: memoryview) -> HistoryState:
    if len(payload) < META_LENGTH.size:
        raise FormatError("corrupt", "no meta")
    (meta_len,) = META_LENGTH.unpack_from(payload)
    if meta_len > min(MAX_META_BYTES, len(payload) - META_LENGTH.size):
        raise FormatError("corrupt", "meta length beyond the payload")
    meta = json.loads(bytes(payload[META_LENGTH.size : META_LENGTH.size + meta_len]))
    if not isinstance(meta, dict):
        raise FormatError("corrupt", "meta is not an object")
    reader = _Reader(payload)
    reader.offset = META_LENGTH.size + meta_len
    series: dict[str, tuple[array[float], array[float]]] = {}
    identities: dict[str, str] = {}
    for key, n, ident in meta["series"]:
        if not isinstance(key, str) or key in series or not isinstance(ident, str):
            raise FormatError("corrupt", f"bad or repeated series key {key!r:.60}")
        series[key] = (reader.floats(n), reader.floats(n))
        identities[key] = ident
    lat = meta["latency"]
    endpoints = []
    bounds = tuple(_number(b, "a bucket bound") for b in lat["bounds"])
    for name, window_len, count, sum_ms, last_ms, buckets in lat["endpoints"]:
        if not isinstance(name, str) or len(buckets) != len(bounds) + 1:
            raise FormatError("corrupt", f"bad latency endpoint {name!r:.60}")
        endpoints.append(EndpointState(
            name, reader.floats(window_len),
            tuple(int(_number(b, "a bucket count", whole=True)) for b in buckets),
            int(_number(count, "an endpoint count", whole=True)),
            float(_number(sum_ms, "an endpoint sum")), float(_number(last_ms, "a time")),
        ))
    if reader.offset != len(payload):
        raise FormatError("corrupt", "the file holds more samples than the meta lists")
    last = lat["last_observation_ms"]
    latency = LatencyState(
        bounds_seconds=bounds,
        endpoints=tuple(endpoints),
        total_count=int(_number(lat["total_count"], "total_count", whole=True)),
        dropped_observations=int(_number(lat["dropped"], "dropped", whole=True)),
        evicted=int(_number(lat["evicted"], "evicted", whole=True)),
        last_observation_ms=None if last is None else float(_number(last, "a time")),
        interval_sum=float(_number(lat["interval_sum"], "interval_sum")),
        interval_count=int(_number(lat["interval_count"], "interval_count", whole=True)),
    )
    ext = meta["extensions"]
    states = {}
    for name, status, since, reported in ext["states"]:
        if not isinstance(name, str) or status not in EXTENSION_STATES:
            raise FormatError("corrupt", f"bad extension state {name!r:.60}")
        states[name] = ExtensionState(status, float(_number(since, "a time")),
                                      float(_number(reported, "a time")))
    extensions = ExtensionsState(
        states,
        int(_number(ext["dropped"], "dropped", whole=True)),
        int(_number(ext["evicted"], "evicted", whole=True)),
    )
    saved_at = float(_number(meta["saved_at_ms"], "saved_at_ms"))
    return HistoryState(saved_at, series, latency, extensions, identities)

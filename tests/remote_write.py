"""Remote-write requests written by tests, as a car's exporter writes them (the exporter's own
wire format, :mod:`exporter.remote_write.protocol`): central-side tests put remote-written
series into a real receiver with it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from exporter.remote_write import protocol

Samples = Iterable[tuple[int, float]]  # (timestamp in ms, value)


def encode(series: Iterable[tuple[Mapping[str, str], Samples]]) -> bytes:
    """A snappy-compressed WriteRequest; labels sorted by name, as the protocol requires."""
    return protocol.encode(
        (tuple(sorted(labels.items())), [(int(t), float(v)) for t, v in samples])
        for labels, samples in series
    )


def push(url: str, series: Iterable[tuple[Mapping[str, str], Samples]]) -> tuple[int, str]:
    """POST one remote-write request; (HTTP status, response body)."""
    request = urllib.request.Request(
        url,
        data=encode(series),
        method="POST",
        headers={
            "Content-Encoding": protocol.CONTENT_ENCODING,
            "Content-Type": protocol.CONTENT_TYPE,
            protocol.VERSION_HEADER[0]: protocol.VERSION_HEADER[1],
            "User-Agent": "crankshaft-exporter-tests",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

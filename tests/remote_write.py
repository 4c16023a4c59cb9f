"""A minimal Prometheus remote-write 1.0 client for tests: what a car's exporter sends, so
that central-side tests (receiver config, fleet rules, dashboard) can put remote-written
series into a real receiver.

The message types are built from their descriptors (prometheus/prompb: ``WriteRequest``,
``TimeSeries``, ``Label``, ``Sample``) in a private descriptor pool, so no generated code is
needed and nothing clashes with the sender's own copy; the body is snappy's block format.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

import snappy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

Samples = Iterable[tuple[int, float]]  # (timestamp in ms, value)


def _message_classes() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="crankshaft_tests_remote_write.proto", package="prometheus", syntax="proto3"
    )
    F = descriptor_pb2.FieldDescriptorProto
    layout = {
        "Label": [("name", 1, F.TYPE_STRING, None), ("value", 2, F.TYPE_STRING, None)],
        "Sample": [("value", 1, F.TYPE_DOUBLE, None), ("timestamp", 2, F.TYPE_INT64, None)],
        "TimeSeries": [("labels", 1, F.TYPE_MESSAGE, ".prometheus.Label"),
                       ("samples", 2, F.TYPE_MESSAGE, ".prometheus.Sample")],
        "WriteRequest": [("timeseries", 1, F.TYPE_MESSAGE, ".prometheus.TimeSeries")],
    }
    for name, fields in layout.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind)
            field.label = F.LABEL_REPEATED if type_name else F.LABEL_OPTIONAL
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.21
    factory = None if get else message_factory.MessageFactory(pool)
    return {
        name: get(pool.FindMessageTypeByName(f"prometheus.{name}")) if get
        else factory.GetPrototype(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in layout
    }


_CLASSES = _message_classes()


def encode(series: Iterable[tuple[Mapping[str, str], Samples]]) -> bytes:
    """A snappy-compressed WriteRequest: each series' labels (``__name__`` among them)
    sorted by name, as the protocol requires, and its samples."""
    request = _CLASSES["WriteRequest"]()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name in sorted(labels):
            ts.labels.add(name=name, value=labels[name])
        for timestamp_ms, value in samples:
            ts.samples.add(timestamp=int(timestamp_ms), value=float(value))
    return snappy.compress(request.SerializeToString())


def push(url: str, series: Iterable[tuple[Mapping[str, str], Samples]]) -> tuple[int, str]:
    """POST one remote-write request; (HTTP status, response body)."""
    request = urllib.request.Request(
        url,
        data=encode(series),
        method="POST",
        headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "User-Agent": "crankshaft-exporter-tests",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

"""The remote write 1.0 wire format: a protobuf ``prometheus.WriteRequest``, snappy-compressed.

The message classes are built at run time from a descriptor written here, so no generated
``_pb2`` module (tied to the protoc that made it) has to match the installed protobuf
runtime: the same code runs on Debian 12's protobuf and on the newest from the index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import snappy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CONTENT_TYPE = "application/x-protobuf"
CONTENT_ENCODING = "snappy"
VERSION_HEADER = ("X-Prometheus-Remote-Write-Version", "0.1.0")

Labels = tuple[tuple[str, str], ...]  # sorted by name, __name__ included


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """prometheus/prompb types.proto + remote.proto, the parts remote write 1.0 sends."""
    f = descriptor_pb2.FileDescriptorProto(
        name="crankshaft_prompb.proto", package="prometheus", syntax="proto3"
    )
    T = descriptor_pb2.FieldDescriptorProto

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for field_name, number, ftype, label, type_name in fields:
            fd = m.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    one, many = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    message("Label", ("name", 1, T.TYPE_STRING, one, ""), ("value", 2, T.TYPE_STRING, one, ""))
    message("Sample", ("value", 1, T.TYPE_DOUBLE, one, ""), ("timestamp", 2, T.TYPE_INT64, one, ""))
    message(
        "TimeSeries",
        ("labels", 1, T.TYPE_MESSAGE, many, ".prometheus.Label"),
        ("samples", 2, T.TYPE_MESSAGE, many, ".prometheus.Sample"),
    )
    message("WriteRequest", ("timeseries", 1, T.TYPE_MESSAGE, many, ".prometheus.TimeSeries"))
    return f


def _message_class(pool: descriptor_pool.DescriptorPool, name: str) -> Any:
    descriptor = pool.FindMessageTypeByName(name)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # older runtimes


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
WriteRequest: Any = _message_class(_POOL, "prometheus.WriteRequest")


def encode(series: Iterable[tuple[Labels, Sequence[tuple[int, float]]]]) -> bytes:
    """The compressed body for ``(labels, [(timestamp_ms, value), ...])`` pairs; samples of
    one series must be in timestamp order, as receivers require."""
    request = WriteRequest()
    add_series = request.timeseries.add
    for labels, samples in series:
        ts = add_series()
        add_label = ts.labels.add
        for name, text in labels:
            add_label(name=name, value=text)
        add_sample = ts.samples.add
        for timestamp, value in samples:
            add_sample(value=value, timestamp=timestamp)
    body: bytes = snappy.compress(request.SerializeToString())
    return body


def decode(body: bytes) -> list[tuple[Labels, list[tuple[int, float]]]]:
    """The inverse of :func:`encode`, as a receiver reads it (tests and tools)."""
    request = WriteRequest()
    request.ParseFromString(snappy.uncompress(body))
    return [
        (
            tuple((lb.name, lb.value) for lb in ts.labels),
            [(s.timestamp, s.value) for s in ts.samples],
        )
        for ts in request.timeseries
    ]

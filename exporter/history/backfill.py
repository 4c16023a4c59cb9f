"""Every stored sample as OpenMetrics text with timestamps: ``GET /metrics/history``.

A car that was offline for hours leaves a gap in Prometheus although the exporter kept
those samples; ``promtool tsdb create-blocks-from openmetrics`` turns this text into TSDB
blocks that fill it (README, "Backfill").  Each series appears under the family name,
type, unit and constant labels of its declaration, exactly as a scrape shows it: a counter
as ``<family>_total``, a state set as one 0/1 series per state.  Timestamps are seconds
(OpenMetrics), the values the ones stored.

promtool's parser wants each series' points together and in time order, which the ring
buffers give; extra labels (``job``, ``instance``) can be added so that the backfilled
series are the scraped ones (promtool 2.42 has no flag for it).

Built for size: a week of 14 series is ~850,000 lines, ~130 MB of text.  The samples are
copied under the recorder's lock (array slices, 16 bytes a sample) and formatted after it
is released, in pieces of a few thousand lines that the server sends as they are made
(chunked), so the text never exists whole in memory: a small board serving a week of
history holds the copied columns and one piece.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence

from exporter.exposition.fast import escape_value, label_text
from exporter.recording import Recorder
from exporter.series import COUNTER, STATESET, SeriesSpec

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_EXTRA_LABELS = 16
MAX_LABEL_VALUE = 1024
PIECE_SAMPLES = 4096  # lines per piece of the streamed text (~0.5 MB)


def check_extra_labels(pairs: Sequence[str], catalog: Sequence[SeriesSpec]) -> dict[str, str]:
    """``name=value`` strings to labels added to every series; ValueError says what is wrong
    (a bad or reserved name, a name a series already has, a repeat)."""
    if len(pairs) > MAX_EXTRA_LABELS:
        raise ValueError(f"at most {MAX_EXTRA_LABELS} labels")
    taken = {name for spec in catalog for name, _ in spec.labels}
    taken |= {spec.metric for spec in catalog if spec.kind == STATESET}
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        shown = pair[:60]
        if not sep:
            raise ValueError(f"label: expected NAME=VALUE, got {shown!r}")
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"label: {name[:60]!r} is not a usable label name")
        if name in taken:
            raise ValueError(f"label: {name!r} is already a label of the exporter's series")
        if name in labels:
            raise ValueError(f"label: {name!r} is given twice")
        if not value or len(value) > MAX_LABEL_VALUE:
            raise ValueError(f"label: {name!r} needs a value of 1..{MAX_LABEL_VALUE} characters")
        labels[name] = value
    return labels


def _number(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def _lines(prefix: str, times: array[float], values: Iterable[str]) -> Iterator[str]:
    """``prefix value timestamp`` per sample, in pieces of PIECE_SAMPLES lines; timestamps
    are ms, written as seconds."""
    values = list(values)
    for start in range(0, len(times), PIECE_SAMPLES):
        stamps = [repr(t / 1000.0) for t in times[start : start + PIECE_SAMPLES]]
        yield "".join([f"{prefix}{v} {t}\n" for v, t in
                       zip(values[start : start + PIECE_SAMPLES], stamps, strict=True)])


def _family(specs: list[SeriesSpec], columns: dict[str, tuple[array[float], array[float]]],
            extra: list[tuple[str, str]]) -> Iterator[str]:
    first = specs[0]
    if not any(len(columns[s.key][0]) for s in specs):
        return
    kind = "counter" if first.kind == COUNTER else first.kind
    yield f"# HELP {first.metric} {escape_value(first.help)}\n# TYPE {first.metric} {kind}\n"
    if first.prom_unit:
        yield f"# UNIT {first.metric} {first.prom_unit}\n"
    for spec in specs:
        times, values = columns[spec.key]
        if not times:
            continue
        pairs = [*spec.labels, *extra]
        if spec.kind == STATESET:
            masks = [int(v) if math.isfinite(v) else 0 for v in values]
            for bit, state in enumerate(spec.states):
                flags = ["1" if m >> bit & 1 else "0" for m in masks]
                prefix = spec.metric + label_text(dict([*pairs, (spec.metric, state)])) + " "
                yield from _lines(prefix, times, flags)
        else:
            yield from _lines(spec.sample_name + label_text(dict(pairs)) + " ", times,
                              map(_number, values))


def render_history(recorder: Recorder, extra_labels: dict[str, str] | None = None) -> bytes:
    """The whole history as OpenMetrics text, ending with ``# EOF``."""
    return b"".join(iter_history(recorder, extra_labels))


def iter_history(recorder: Recorder,
                 extra_labels: dict[str, str] | None = None) -> Iterator[bytes]:
    """The same text in pieces; the samples are copied at the call, not when iterated."""
    with recorder.lock:
        store = recorder.store
        catalog = store.catalog
        columns = {s.key: (store.series[s.key].timestamps(), store.series[s.key].values())
                   for s in catalog}
    extra = list((extra_labels or {}).items())
    groups: dict[str, list[SeriesSpec]] = {}
    for spec in catalog:
        groups.setdefault(spec.metric, []).append(spec)
    return _encoded(groups, columns, extra)


def _encoded(
    groups: dict[str, list[SeriesSpec]],
    columns: dict[str, tuple[array[float], array[float]]],
    extra: list[tuple[str, str]],
) -> Iterator[bytes]:
    for specs in groups.values():
        for part in _family(specs, columns, extra):
            yield part.encode()
    yield b"# EOF\n"


"""What a source declares about each series it produces.

Everything that shows a series derives from its declaration: the ring buffer the store
keeps, the object in the seed's JSON document, the CSV column, the Prometheus family, the
alert metric name that config validation and ``alert-rules`` accept, the ingest field that
may push it, and the OpenAPI description.  A new source declares its series and registers
itself (see :mod:`exporter.sources.registry`); nothing else needs editing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

GAUGE = "gauge"
COUNTER = "counter"
STATESET = "stateset"  # the value is a bit mask: bit i set = ``states[i]`` is true
KINDS = (GAUGE, COUNTER, STATESET)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_KEY = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One series: a ring buffer of samples, and one sample of a Prometheus family.

    ``key`` names it in the store and is the alert metric name (the seed's
    ``memory_usage``).  ``metric`` is the Prometheus family; several series may share one
    family when their constant ``labels`` tell them apart (a counter split by ``kind``).
    For a counter, ``metric`` is the family name without ``_total``.  ``unit`` is what the
    JSON document prints (the seed's ``MB``, ``%``, ``count``, ``ms``); ``prom_unit`` is
    OpenMetrics' ``# UNIT`` and must end the family name when set.  ``whole``: values are
    whole numbers, printed without a fraction in JSON and CSV.
    """

    key: str
    metric: str
    help: str
    unit: str
    kind: str = GAUGE
    labels: tuple[tuple[str, str], ...] = ()
    json_key: str | None = None
    csv_column: str | None = None
    alert: bool = True
    whole: bool = False
    push_field: str | None = None  # the ingest (POST /metrics/record) field that sets it
    prom_unit: str = ""
    states: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = spec_problems(self)
        if problems:
            raise ValueError(f"series {self.key!r}: " + "; ".join(problems))

    @property
    def sample_name(self) -> str:
        """The name its samples carry in the exposition."""
        return self.metric + "_total" if self.kind == COUNTER else self.metric


def spec_problems(spec: SeriesSpec) -> list[str]:
    problems = []
    if not _KEY.fullmatch(spec.key):
        problems.append("key must be lower-case letters, digits and _")
    if not _NAME.fullmatch(spec.metric) or spec.metric.endswith("_total"):
        problems.append(f"metric {spec.metric!r} is not a Prometheus name without _total")
    if spec.kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    if spec.prom_unit and not spec.metric.endswith("_" + spec.prom_unit):
        problems.append(f"metric {spec.metric!r} must end in _{spec.prom_unit}")
    for name, _ in spec.labels:
        if not _LABEL.fullmatch(name) or name.startswith("__") or name == "le":
            problems.append(f"label {name!r} is not a usable label name")
    if spec.kind == STATESET:
        if not spec.states or len(set(spec.states)) != len(spec.states):
            problems.append("a state set needs distinct states")
    elif spec.states:
        problems.append("only a state set has states")
    return problems


def check_catalog(specs: Iterable[SeriesSpec]) -> tuple[SeriesSpec, ...]:
    """De-duplicate declarations and refuse conflicting ones (same key, JSON key, column,
    ingest field or series of a family declared twice differently)."""
    out: dict[str, SeriesSpec] = {}
    seen: dict[tuple[str, object], str] = {}
    families: dict[str, SeriesSpec] = {}
    for spec in specs:
        if spec.key in out:
            if out[spec.key] != spec:
                raise ValueError(f"series {spec.key!r} is declared twice, differently")
            continue
        identities = (
            ("JSON key", spec.json_key),
            ("CSV column", spec.csv_column),
            ("ingest field", spec.push_field),
            ("family series", (spec.metric, spec.labels)),
        )
        for what, value in identities:
            if value is None:
                continue
            other = seen.setdefault((what, value), spec.key)
            if other != spec.key:
                raise ValueError(f"series {spec.key!r} and {other!r} share the {what} {value!r}")
        first = families.setdefault(spec.metric, spec)
        if (first.kind, first.help, first.prom_unit, first.states) != (
            spec.kind,
            spec.help,
            spec.prom_unit,
            spec.states,
        ) or [k for k, _ in first.labels] != [k for k, _ in spec.labels]:
            raise ValueError(f"series of family {spec.metric!r} disagree on its type or labels")
        out[spec.key] = spec
    return tuple(out.values())

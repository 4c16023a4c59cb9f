"""Source registration, as node_exporter's collectors register themselves.

Each source module declares a :class:`SourceType`: its name, the series it produces, whether
it runs by default, its config options (the YAML section named after it) and a factory.
The package registers the built-in ones; a program embedding the exporter (or a test) may
register more.  The series catalog (what the store keeps and every output shows) and the
alert vocabulary are derived from the registered types.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.series import SeriesSpec, check_catalog
from exporter.sources.base import Source
from exporter.sources.targets import ProcessFinder, TargetSpec


@dataclass(frozen=True, slots=True)
class Option:
    """One key of a source's YAML section; ``check`` converts a value or raises ValueError."""

    key: str
    default: Any
    check: Callable[[object], Any]
    help: str = ""


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a factory may use: the shared target (``finder`` lists its processes, one
    listing per tick for every source; None for target kind "none") and its own section's
    checked options."""

    target: TargetSpec = field(default_factory=TargetSpec)
    options: Mapping[str, Any] = field(default_factory=dict)
    finder: ProcessFinder | None = None


@dataclass(frozen=True, slots=True)
class SourceType:
    """``build`` returns the source, or None when its options say there is nothing to read
    (e.g. no port configured)."""

    name: str
    series: tuple[SeriesSpec, ...]
    build: Callable[[SourceContext], Source | None]
    default_enabled: bool = True
    options: tuple[Option, ...] = ()
    section: str | None = None  # the YAML key of its options; None: its name, "": none
    help: str = ""

    @property
    def config_key(self) -> str:
        return self.section or self.name

    def option_keys(self) -> tuple[str, ...]:
        return ("enabled", *(o.key for o in self.options))

    def defaults(self) -> dict[str, Any]:
        return {o.key: o.default for o in self.options}


_TYPES: dict[str, SourceType] = {}
# Series every document shows whatever sources run: the seed's, which may also be pushed.
_ALWAYS: list[SeriesSpec] = []


def register(source_type: SourceType) -> SourceType:
    """Add a source type; its series join the catalog (checked against the others)."""
    if source_type.name in _TYPES:
        raise ValueError(f"a source named {source_type.name!r} is already registered")
    check_catalog([*all_series(), *_ALWAYS, *source_type.series])
    _TYPES[source_type.name] = source_type
    return source_type


def unregister(name: str) -> None:
    _TYPES.pop(name, None)


def declare_always(*specs: SeriesSpec) -> None:
    """Series shown even with no source producing them (values may be pushed)."""
    check_catalog([*_ALWAYS, *specs])
    _ALWAYS.extend(s for s in specs if s not in _ALWAYS)


def source_types() -> list[SourceType]:
    return list(_TYPES.values())


def get(name: str) -> SourceType | None:
    return _TYPES.get(name)


def all_series() -> tuple[SeriesSpec, ...]:
    """Every series any registered source can produce, in catalog order."""
    return catalog(_TYPES)


def catalog(enabled: Iterable[str]) -> tuple[SeriesSpec, ...]:
    """The series kept and shown when the named sources run (see :func:`catalog_with`)."""
    wanted = set(enabled)
    return catalog_with(s for name, t in _TYPES.items() if name in wanted for s in t.series)


def catalog_with(specs: Iterable[SeriesSpec]) -> tuple[SeriesSpec, ...]:
    """Every pushable series and the always-shown ones first (the seed's five, in its
    order), then ``specs`` (what the running sources declare)."""
    pushable = [s for t in _TYPES.values() for s in t.series if s.push_field is not None]
    return check_catalog([*pushable, *_ALWAYS, *specs])


def alert_metrics() -> tuple[str, ...]:
    """Series keys alert rules may name (besides the per-endpoint/extension/state ones)."""
    return tuple(s.key for s in all_series() if s.alert)


# --- option checks shared by source sections --------------------------------------------


def check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r:.40}")
    return value


def check_path(value: object) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError("expected a file or folder path")
    return os.path.normpath(value)


def check_name_or_auto(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected a name, or "auto"')
    return value.strip()

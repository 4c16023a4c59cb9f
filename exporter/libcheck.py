"""The installed libraries, checked before the daemon serves anything.

pip keeps a virtualenv at the floors pyproject.toml declares, but an operating system's
packages (or a hand-made environment) can hold anything, and an older prometheus_client
would start fine and then answer every scrape with 500.  The floors are read from the
installed distribution's own metadata, so they are written down once, in pyproject.toml;
the CI runs the tests with exactly those versions (tests/floors.txt).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata

DISTRIBUTION = "crankshaft-exporter"
# Optional extras the daemon uses when present (journald logging); test extras never matter.
RUNTIME_EXTRAS = frozenset({"systemd"})

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*"
    r"(?:\(?\s*>=\s*(?P<floor>[0-9][0-9.]*))?[^;]*(?:;(?P<marker>.*))?$"
)
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_LEADING_NUMBERS = re.compile(r"\d+(?:\.\d+)*")


def version_key(version: str) -> tuple[int, ...]:
    """The release numbers of a version string (``"0.16.0"`` -> ``(0, 16, 0)``); anything
    after them (``rc1``, ``.post1``, ``+deb12u1``) does not move a release below its floor."""
    match = _LEADING_NUMBERS.match(version.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def at_least(installed: str, floor: str) -> bool:
    have, need = version_key(installed), version_key(floor)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def runtime_floors(requirements: list[str]) -> list[tuple[str, str | None]]:
    """``(name, floor)`` for each runtime requirement: the required ones and those of the
    runtime extras."""
    floors: list[tuple[str, str | None]] = []
    for line in requirements:
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        marker = match.group("marker") or ""
        extra = _EXTRA.search(marker)
        if extra is not None and extra.group(1) not in RUNTIME_EXTRAS:
            continue
        floors.append((match.group("name"), match.group("floor")))
    return floors


def library_problems(
    requires: Callable[[str], list[str] | None] = metadata.requires,
    version: Callable[[str], str] = metadata.version,
) -> list[str]:
    """One line per installed library older than its declared floor; empty when all fit.

    Without the distribution's metadata (running from a source tree) there is nothing
    declared to compare against.  A library without metadata is not judged either: a
    missing required one fails at import already, and an operating system may install a
    module without its metadata."""
    try:
        requirements = requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    problems = []
    for name, floor in runtime_floors(requirements):
        if floor is None:
            continue
        try:
            installed = version(name)
        except metadata.PackageNotFoundError:
            continue
        if not at_least(installed, floor):
            problems.append(
                f"{name} {installed} is installed; {DISTRIBUTION} needs {name} >= {floor}"
            )
    return problems


def installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(version unknown)"

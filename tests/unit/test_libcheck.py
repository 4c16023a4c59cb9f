"""The daemon's check of the installed libraries against the floors it declares."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

import pytest

from exporter.libcheck import at_least, library_problems, runtime_floors, version_key

REQUIRES = [
    "prometheus_client>=0.16",
    "PyYAML>=6.0",
    "psutil>=5.9.4",
    "bcrypt>=3.2.2",
    'systemd-python>=235; extra == "systemd"',
    'pytest>=8; extra == "test"',
]


def installed(versions: dict[str, str]) -> Callable[[str], str]:
    def version(name: str) -> str:
        try:
            return versions[name]
        except KeyError:
            raise metadata.PackageNotFoundError(name) from None

    return version


@pytest.mark.parametrize(
    ("have", "floor", "ok"),
    [
        ("0.16.0", "0.16", True),
        ("0.16", "0.16.0", True),
        ("0.15.9", "0.16", False),
        ("0.9.0", "0.16", False),  # numbers, not strings: 9 < 16
        ("5.9.4", "5.9.4", True),
        ("5.9.3", "5.9.4", False),
        ("3.2.2+deb12u1", "3.2.2", True),
        ("0.22.0rc1", "0.16", True),
        ("235", "235", True),
    ],
)
def test_versions_compare_by_release_numbers(have: str, floor: str, ok: bool) -> None:
    assert at_least(have, floor) is ok


def test_version_key_ignores_suffixes() -> None:
    assert version_key("6.0.post1") == (6, 0)
    assert version_key("garbage") == ()


def test_runtime_floors_keep_runtime_extras_only() -> None:
    floors = runtime_floors(REQUIRES)
    assert ("systemd-python", "235") in floors
    assert ("prometheus_client", "0.16") in floors
    assert all(name != "pytest" for name, _ in floors)


def test_all_floors_met_is_no_problem() -> None:
    versions = {"prometheus_client": "0.16.0", "PyYAML": "6.0", "psutil": "5.9.4",
                "bcrypt": "3.2.2", "pytest": "7.2.1"}  # Debian's old pytest is no concern
    assert library_problems(lambda _: REQUIRES, installed(versions)) == []


def test_an_old_library_is_named_with_its_version() -> None:
    versions = {"prometheus_client": "0.15.0", "PyYAML": "6.0", "psutil": "5.9.4",
                "bcrypt": "3.2.2", "systemd-python": "234"}
    assert library_problems(lambda _: REQUIRES, installed(versions)) == [
        "prometheus_client 0.15.0 is installed; crankshaft-exporter needs prometheus_client "
        ">= 0.16",
        "systemd-python 234 is installed; crankshaft-exporter needs systemd-python >= 235",
    ]


def test_a_library_without_metadata_is_not_judged() -> None:
    """An import fails on its own if it is really missing; an OS may ship no metadata."""
    versions = {"prometheus_client": "0.16.0", "PyYAML": "6.0", "psutil": "5.9.4"}
    assert library_problems(lambda _: REQUIRES, installed(versions)) == []


def test_without_metadata_nothing_is_declared() -> None:
    def requires(name: str) -> list[str]:
        raise metadata.PackageNotFoundError(name)

    assert library_problems(requires, installed({})) == []


def test_the_installed_environment_passes() -> None:
    """The test environment itself (newest or floors) is one the daemon starts in."""
    assert library_problems() == []

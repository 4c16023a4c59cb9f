"""The declared floors are the tested ones: each `>=` floor in pyproject.toml is pinned to
the same version in tests/floors.txt, which the floor run of `make test` installs."""

from __future__ import annotations

import re
import tomllib

from exporter.libcheck import at_least
from tests.conftest import REPO

PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][^\s#]*)")
FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9.]*)")
RUNTIME_EXTRAS = ("systemd",)
# Debian 12's package of each dependency: (package, its Debian version, the version its
# Python metadata reports, which is what pip and exporter/libcheck.py compare).  They differ
# for protobuf: Debian numbers the Python runtime by the protobuf release (3.21.12 is
# protobuf 21.12), the package index by its Python line (4.21.12 is the same 21.12).
DEBIAN12 = {
    "prometheus-client": ("python3-prometheus-client", "0.16.0", "0.16.0"),
    "psutil": ("python3-psutil", "5.9.4", "5.9.4"),
    "pyyaml": ("python3-yaml", "6.0", "6.0"),
    "bcrypt": ("python3-bcrypt", "3.2.2", "3.2.2"),
    "systemd-python": ("python3-systemd", "235", "235"),
    "h11": ("python3-h11", "0.14.0", "0.14.0"),
    "protobuf": ("python3-protobuf", "3.21.12", "4.21.12"),
    "python-snappy": ("python3-snappy", "0.5.3", "0.5.3"),
}
# The version the floor run tests where the package index has no release of Debian 12's
# version that installs on this Python (see tests/floors.txt): the declared floor is Debian's
# (test_floors_are_at_most_debian_12s), the pin the closest release the index has.
INDEX_GAPS = {"python-snappy": "0.6.1"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    text = (REPO / "tests" / "floors.txt").read_text()
    return {canonical(m[1]): m[2] for line in text.splitlines() if (m := PIN.match(line))}


def declared() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        lines += project["optional-dependencies"].get(extra, [])
    floors = {}
    for line in lines:
        match = FLOOR.match(line)
        assert match, f"{line!r}: every runtime dependency declares a floor (>=)"
        floors[canonical(match[1])] = match[2]
    return floors


def test_every_declared_floor_is_pinned_for_the_floor_run() -> None:
    pinned = pins()
    for name, floor in declared().items():
        assert name in pinned, f"{name} >= {floor} is declared but tests/floors.txt has no pin"
        if name in INDEX_GAPS:
            assert pinned[name] == INDEX_GAPS[name], f"{name}: see INDEX_GAPS"
            continue
        assert same_version(pinned[name], floor), (
            f"{name}: pyproject.toml says >= {floor}, the floor run tests {pinned[name]}"
        )


def same_version(a: str, b: str) -> bool:
    return at_least(a, b) and at_least(b, a)


def test_floors_are_debian_12s() -> None:
    """Every runtime dependency is one Debian 12 packages, and its floor is Debian's: the
    Debian package depends on it, and nothing older is tested."""
    for name, floor in declared().items():
        assert name in DEBIAN12, f"{name}: not packaged by Debian 12? (see pyproject.toml)"
        _, _, metadata_version = DEBIAN12[name]
        assert same_version(metadata_version, floor), (
            f"{name} >= {floor}: Debian 12 has {metadata_version}")


def test_the_debian_package_depends_on_the_same_floors() -> None:
    """systemd/debian/control's Depends (and Recommends) carry pyproject.toml's floors."""
    control = (REPO / "systemd" / "debian" / "control").read_text()
    binary = control.split("\nPackage:", 1)[1]
    relations = dict(re.findall(r"(python3-[a-z0-9-]+) \(>= ([0-9.]+)\)", binary))
    for name, floor in declared().items():
        package, debian_version, _ = DEBIAN12[name]
        assert package in relations, f"{package} (>= {debian_version}): missing in control"
        assert same_version(relations[package], debian_version), (
            f"{package}: control says >= {relations[package]}, Debian 12's (the floor, "
            f"{name} >= {floor}) is {debian_version}")


def test_the_reference_parser_reads_timestamps_across_a_second() -> None:
    """With the floor's prometheus_client too (see tests/conftest.py): 1.950 then 2.037 is
    forwards."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = "# TYPE a gauge\na 1 1.950\na 2 2.037\n# EOF\n"
    (family,) = text_string_to_metric_families(text)
    assert [s.value for s in family.samples] == [1.0, 2.0]

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
# The version the floor run tests where the package index has no release of Debian 12's
# version that installs on this Python (see tests/floors.txt): the declared floor is Debian's
# (test_floors_are_at_most_debian_12s), the pin the closest release the index has.
INDEX_GAPS = {"protobuf": "4.21.12", "python-snappy": "0.6.1"}


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
        assert at_least(pinned[name], floor) and at_least(floor, pinned[name]), (
            f"{name}: pyproject.toml says >= {floor}, the floor run tests {pinned[name]}"
        )


def test_floors_are_at_most_debian_12s() -> None:
    """Debian 12's packages satisfy every floor: the Debian package depends on them."""
    debian12 = {"prometheus-client": "0.16.0", "psutil": "5.9.4", "pyyaml": "6.0",
                "bcrypt": "3.2.2", "systemd-python": "235", "h11": "0.14.0",
                "protobuf": "3.21.12", "python-snappy": "0.5.3"}
    for name, floor in declared().items():
        if name in debian12:
            assert at_least(debian12[name], floor), f"{name} >= {floor}: Debian 12 has older"


def test_the_debian_package_depends_on_the_same_floors() -> None:
    """systemd/debian/control's Depends (and Recommends) carry pyproject.toml's floors."""
    control = (REPO / "systemd" / "debian" / "control").read_text()
    binary = control.split("\nPackage:", 1)[1]
    relations = dict(re.findall(r"(python3-[a-z0-9-]+) \(>= ([0-9.]+)\)", binary))
    debian_name = {"prometheus-client": "python3-prometheus-client", "psutil": "python3-psutil",
                   "pyyaml": "python3-yaml", "bcrypt": "python3-bcrypt",
                   "systemd-python": "python3-systemd", "h11": "python3-h11",
                   "protobuf": "python3-protobuf", "python-snappy": "python3-snappy"}
    for name, floor in declared().items():
        assert name in debian_name, f"{name}: which Debian package? (add it to control)"
        package = debian_name[name]
        assert relations.get(package) == floor, (
            f"{package}: control says {relations.get(package)}, pyproject.toml >= {floor}")

"""Board health on fake sysfs trees (thermal zones, the Raspberry Pi firmware's get_throttled),
psutil's sensors as the fallback, and on this machine: hardware that is not there means
the series is absent, never a zero."""

from __future__ import annotations

import contextlib
import logging
import re
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from exporter.config.loader import parse_config
from exporter.daemon import build_sources
from exporter.endpoint import MetricsEndpoint
from exporter.sources import board_health
from exporter.sources.board_health import (
    GET_THROTTLED,
    THROTTLE_STATES,
    BoardHealthSource,
    find_thermal_zone,
)

# psutil's own record type for a temperature reading
Temp = namedtuple("Temp", "label current high critical")

TEMPERATURE = "crankshaft_board_cpu_temperature_celsius"
THROTTLING = "crankshaft_board_throttling"


class FakeSysfs:
    """A sysfs tree in a temporary folder, built one file at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def zone(self, index: int, kind: str | None, millidegrees: str | None) -> Path:
        zone = self.root / "class" / "thermal" / f"thermal_zone{index}"
        zone.mkdir(parents=True)
        if kind is not None:
            (zone / "type").write_text(kind + "\n")
        if millidegrees is not None:
            (zone / "temp").write_text(millidegrees + "\n")
        return zone

    def throttled(self, text: str) -> Path:
        path = self.root / GET_THROTTLED
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys")


@pytest.fixture
def no_psutil_sensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil reads the real machine's sensors: keep them out of fake-tree tests."""
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)


def samples(text: str, family: str) -> dict[str, float]:
    """Sample lines of one family in a text exposition: "name{labels}" -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(family) and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if re.fullmatch(re.escape(family) + r"(\{.*\})?", name):
                out[name] = float(value)
    return out


def endpoint_for(source: BoardHealthSource) -> MetricsEndpoint:
    endpoint = MetricsEndpoint(sources=[source], rules=[])
    endpoint.collect_now()
    return endpoint


@pytest.mark.parametrize(
    ("text", "states_set", "fires"),
    [("0x4\n", 1, False),  # one state (throttled), mask 4: above 1 if the mask were compared
     ("0x5\n", 2, True),  # under-voltage and throttled: two states
     ("0x0\n", 0, False)],
)
def test_a_state_set_alert_compares_how_many_states_are_set(
    sysfs, no_psutil_sensors, text, states_set, fires
):
    """As the Prometheus rule does (the family's 0/1 samples summed), not the bit mask."""
    from exporter import AlertRule

    sysfs.throttled(text)
    endpoint = MetricsEndpoint(sources=[BoardHealthSource(sysfs.root)],
                               rules=[AlertRule("board_throttled", 1.0, 3.0, "throttled")])
    endpoint.collect_now()
    alerts = endpoint.get_alerts()
    endpoint.close()
    assert [(a["metric"], a["current_value"]) for a in alerts] == (
        [("board_throttled", float(states_set))] if fires else [])


# --- thermal zones ----------------------------------------------------------------------------


def test_the_cpu_zone_is_preferred_by_its_type(sysfs, no_psutil_sensors):
    sysfs.zone(0, "acpitz", "27800")
    sysfs.zone(1, "iwlwifi_1", "41000")
    sysfs.zone(2, "x86_pkg_temp", "55125")
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 55.125}


def test_raspberry_pi_cpu_thermal_zone(sysfs, no_psutil_sensors):
    sysfs.zone(0, "cpu-thermal", "48312")
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 48.312}


def test_zones_are_ordered_by_number_not_by_text(sysfs, no_psutil_sensors):
    """With no CPU zone the first one counts: thermal_zone2 before thermal_zone10."""
    sysfs.zone(10, "board", "70000")
    sysfs.zone(2, "ambient", "31000")
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 31.0}


def test_an_explicit_zone_is_chosen_by_type(sysfs, no_psutil_sensors):
    sysfs.zone(0, "cpu-thermal", "48312")
    sysfs.zone(1, "gpu-thermal", "-1500")
    assert BoardHealthSource(sysfs.root, "gpu-thermal").collect() == {"cpu_temperature": -1.5}


def test_an_explicit_zone_that_does_not_exist_is_absent_not_another_zone(
    sysfs, monkeypatch
):
    sysfs.zone(0, "cpu-thermal", "48312")
    # not even psutil's reading: the config named a zone, and it is not there
    monkeypatch.setattr(
        psutil, "sensors_temperatures", lambda: {"coretemp": [Temp("", 40.0, None, None)]}
    )
    assert BoardHealthSource(sysfs.root, "soc-thermal").collect() == {}


def test_a_zone_whose_temperature_read_fails_is_absent(sysfs, no_psutil_sensors):
    zone = sysfs.zone(0, "cpu-thermal", "48312")
    source = BoardHealthSource(sysfs.root)
    assert source.collect() == {"cpu_temperature": 48.312}
    (zone / "temp").write_text("")  # what a powered-down zone's failed read leaves us
    assert source.collect() == {}
    (zone / "temp").unlink()  # and a zone that went away
    assert source.collect() == {}
    (zone / "temp").write_text("50000\n")
    assert source.collect() == {"cpu_temperature": 50.0}


def test_zones_without_a_type_or_a_temp_are_skipped(sysfs, no_psutil_sensors):
    sysfs.zone(0, None, "90000")  # no type
    sysfs.zone(1, "cpu-thermal", None)  # no temp
    sysfs.zone(2, "soc_thermal", "61000")
    assert find_thermal_zone(sysfs.root) == sysfs.root / "class/thermal/thermal_zone2/temp"
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 61.0}


# --- psutil's sensors where there is no thermal zone ---------------------------------------


def test_psutil_gives_the_temperature_where_there_is_no_zone(sysfs, monkeypatch):
    monkeypatch.setattr(board_health, "SYSFS", sysfs.root)  # the fake tree is "the machine's"
    monkeypatch.setattr(
        psutil,
        "sensors_temperatures",
        lambda: {
            "acpitz": [Temp("", 27.8, None, None)],
            "coretemp": [Temp("Package id 0", 47.0, 80.0, 100.0), Temp("Core 0", 45.0, 80, 100)],
        },
    )
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 47.0}


def test_psutil_falls_back_to_any_sensor_it_has(sysfs, monkeypatch):
    monkeypatch.setattr(board_health, "SYSFS", sysfs.root)  # the fake tree is "the machine's"
    monkeypatch.setattr(
        psutil, "sensors_temperatures", lambda: {"nvme": [Temp("Composite", 38.85, 80.0, 85.0)]}
    )
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 38.85}


def test_a_thermal_zone_wins_over_psutil(sysfs, monkeypatch):
    sysfs.zone(0, "cpu-thermal", "48312")
    monkeypatch.setattr(
        psutil, "sensors_temperatures", lambda: {"coretemp": [Temp("", 40.0, None, None)]}
    )
    assert BoardHealthSource(sysfs.root).collect() == {"cpu_temperature": 48.312}


@pytest.mark.parametrize("failure", ["raises", "missing"])
def test_psutil_without_sensors_means_absent(sysfs, monkeypatch, failure):
    if failure == "missing":  # platforms where psutil has no sensors_temperatures at all
        monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    else:

        def broken() -> dict:
            raise OSError("no hwmon here")

        monkeypatch.setattr(psutil, "sensors_temperatures", broken, raising=False)
    assert BoardHealthSource(sysfs.root).collect() == {}


# --- the Raspberry Pi firmware's get_throttled ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "now", "since_boot"),
    [
        ("50005\n", 0b0101, 0b0101),  # the kernel prints "%x": under-voltage and throttled
        ("0x50005\n", 0b0101, 0b0101),  # vcgencmd's spelling
        ("0\n", 0, 0),  # a healthy board: every state false, and present
        ("e0008\n", 0b1000, 0b1110),  # soft limit now; capped, throttled, soft limit before
        ("f000f\n", 0b1111, 0b1111),
    ],
)
def test_get_throttled_masks(sysfs, no_psutil_sensors, text, now, since_boot):
    sysfs.throttled(text)
    assert BoardHealthSource(sysfs.root).collect() == {
        "board_throttled": float(now),
        "board_throttled_since_boot": float(since_boot),
    }


@pytest.mark.parametrize("text", ["", "throttled=0x50005\n", "zz\n"])
def test_unreadable_get_throttled_is_absent(sysfs, no_psutil_sensors, text):
    sysfs.throttled(text)
    assert BoardHealthSource(sysfs.root).collect() == {}


def test_throttling_is_a_state_set_in_the_exposition(sysfs, no_psutil_sensors):
    sysfs.zone(0, "cpu-thermal", "48312")
    sysfs.throttled("50005\n")
    endpoint = endpoint_for(BoardHealthSource(sysfs.root))
    text = endpoint.export_prometheus()
    assert samples(text, TEMPERATURE) == {TEMPERATURE: 48.312}
    states = samples(text, THROTTLING)
    expected = {}
    for when in ("now", "since_boot"):
        for state in THROTTLE_STATES:
            name = f'{THROTTLING}{{{THROTTLING}="{state}",when="{when}"}}'
            expected[name] = 1.0 if state in ("under_voltage", "throttled") else 0.0
    assert states == expected
    assert f'{THROTTLING}{{{THROTTLING}="under_voltage",when="now"}} 1.0' in text
    openmetrics = endpoint.export_prometheus(openmetrics=True)
    assert f"# TYPE {THROTTLING} stateset" in openmetrics
    assert f"# TYPE {TEMPERATURE} gauge" in openmetrics and f"# UNIT {TEMPERATURE} celsius" in (
        openmetrics
    )
    doc = endpoint.get_metrics()
    assert doc["cpu_temperature"]["latest"] == 48.312
    assert doc["throttled"]["latest"] == 5 and doc["throttled_since_boot"]["latest"] == 5
    endpoint.close()


def test_a_firmware_flag_file_that_goes_away_takes_its_states_with_it(sysfs, no_psutil_sensors):
    flags = sysfs.throttled("50000\n")
    endpoint = endpoint_for(BoardHealthSource(sysfs.root))
    assert len(samples(endpoint.export_prometheus(), THROTTLING)) == 8
    flags.unlink()
    endpoint.collect_now()
    assert samples(endpoint.export_prometheus(), THROTTLING) == {}
    doc = endpoint.get_metrics()
    assert doc["throttled"]["latest"] is None
    assert doc["throttled"]["sample_count"] == 1  # the history keeps what was read
    endpoint.close()


# --- no hardware: absent, never 0 ------------------------------------------------------------


def assert_absent_everywhere(endpoint: MetricsEndpoint) -> None:
    text = endpoint.export_prometheus()
    assert samples(text, TEMPERATURE) == {} and samples(text, THROTTLING) == {}
    openmetrics = endpoint.export_prometheus(openmetrics=True)
    assert samples(openmetrics, TEMPERATURE) == {} and samples(openmetrics, THROTTLING) == {}
    doc = endpoint.get_metrics()
    for key in ("cpu_temperature", "throttled", "throttled_since_boot"):
        assert doc[key]["latest"] is None, key
        assert doc[key]["sample_count"] == 0, key
    header, *rows = endpoint.export_csv().splitlines()
    column = header.split(",").index("cpu_temperature_celsius")
    assert all(row.split(",")[column] == "" for row in rows)


def test_an_empty_tree_means_every_series_absent(sysfs, no_psutil_sensors):
    endpoint = endpoint_for(BoardHealthSource(sysfs.root))
    endpoint.collect_now()
    assert_absent_everywhere(endpoint)
    endpoint.close()


def test_on_this_machine_a_temperature_is_real_or_absent():
    """This machine may have no thermal zone and no sensor: then absent, not 0."""
    zones = [
        p
        for p in Path("/sys/class/thermal").glob("thermal_zone*/temp")
        if (p.parent / "type").exists()
    ]
    readable = []
    for p in zones:
        with contextlib.suppress(OSError, ValueError):
            readable.append(int(p.read_text().strip()))
    try:
        sensors = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
    except OSError:
        sensors = {}
    has_sensor = bool(readable) or any(sensors.values())
    has_flags = Path("/sys", GET_THROTTLED).exists()

    endpoint = endpoint_for(BoardHealthSource())
    values = endpoint.store.current
    if has_sensor:
        assert -40.0 < values["cpu_temperature"] < 150.0
    else:
        assert "cpu_temperature" not in values
        assert samples(endpoint.export_prometheus(), TEMPERATURE) == {}
        assert endpoint.get_metrics()["cpu_temperature"]["latest"] is None
    if not has_flags:
        assert "board_throttled" not in values
        assert samples(endpoint.export_prometheus(), THROTTLING) == {}
        assert endpoint.get_metrics()["throttled"]["latest"] is None
    if not has_sensor and not has_flags:
        assert_absent_everywhere(endpoint)
    endpoint.close()


# --- configured through its YAML section -------------------------------------------------


def test_the_config_section_sets_the_tree_and_the_zone(sysfs, no_psutil_sensors):
    sysfs.zone(0, "cpu-thermal", "48000")
    sysfs.zone(1, "gpu-thermal", "52000")
    config = parse_config(
        f"target: {{kind: none}}\n"
        f"board_health: {{sysfs_root: '{sysfs.root}', thermal_zone: gpu-thermal}}\n"
    )
    (source,) = [s for s in build_sources(config) if isinstance(s, BoardHealthSource)]
    assert source.collect() == {"cpu_temperature": 52.0}
    disabled = parse_config("target: {kind: none}\nboard_health: {enabled: false}\n")
    assert not [s for s in build_sources(disabled) if isinstance(s, BoardHealthSource)]


def test_what_is_absent_is_said_once_in_the_log(sysfs, no_psutil_sensors, caplog):
    caplog.set_level(logging.INFO, logger="exporter.sources.board_health")
    source = BoardHealthSource(sysfs.root)
    for _ in range(3):
        assert source.collect() == {}
    said = [r.getMessage() for r in caplog.records if r.name == "exporter.sources.board_health"]
    assert len(said) == 1, said
    assert "series stay absent" in said[0]


def test_what_is_found_is_said_once_in_the_log(sysfs, no_psutil_sensors, caplog):
    caplog.set_level(logging.INFO, logger="exporter.sources.board_health")
    sysfs.zone(0, "cpu-thermal", "48312")
    sysfs.throttled("0\n")
    source = BoardHealthSource(sysfs.root)
    for _ in range(3):
        source.collect()
    said = [r.getMessage() for r in caplog.records if r.name == "exporter.sources.board_health"]
    assert len(said) == 1, said
    assert "thermal_zone0" in said[0] and "throttling flags" in said[0]


def test_psutil_is_not_asked_for_another_tree_than_the_machines(sysfs, monkeypatch):
    """A sysfs_root that is not the machine's own (a test tree, a chroot) must not be mixed
    with the machine's sensors."""
    monkeypatch.setattr(
        psutil, "sensors_temperatures", lambda: {"coretemp": [Temp("", 40.0, None, None)]}
    )
    assert BoardHealthSource(sysfs.root).collect() == {}

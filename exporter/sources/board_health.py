"""Board health: the CPU temperature, and the Raspberry Pi firmware's under-voltage and
throttling flags.

A head unit in a car sees heat and a sagging supply long before its software misbehaves.
The temperature comes from the kernel's thermal zones (one small read per tick, the zone
chosen once), or from psutil's sensors where there are none.  The Raspberry Pi firmware
driver publishes ``get_throttled``, a bit mask: bits 0-3 are conditions now (under-voltage,
ARM frequency capped, throttled, soft temperature limit), bits 16-19 the same since boot;
both are exposed as state sets.  Hardware that is not there means the series is absent,
never a zero.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import psutil

from exporter.series import STATESET, SeriesSpec
from exporter.sources.base import Source
from exporter.sources.registry import (
    Option,
    SourceContext,
    SourceType,
    check_name_or_auto,
    check_path,
)

log = logging.getLogger(__name__)

TEMPERATURE = SeriesSpec(
    key="cpu_temperature",
    metric="crankshaft_board_cpu_temperature_celsius",
    help="CPU temperature of the board",
    unit="°C",
    json_key="cpu_temperature",
    csv_column="cpu_temperature_celsius",
    prom_unit="celsius",
)
THROTTLE_STATES = ("under_voltage", "frequency_capped", "throttled", "soft_temperature_limit")
_THROTTLING = "crankshaft_board_throttling"
_THROTTLING_HELP = "Raspberry Pi firmware conditions (get_throttled), now and since boot"
THROTTLED_NOW = SeriesSpec(
    key="board_throttled",
    metric=_THROTTLING,
    help=_THROTTLING_HELP,
    unit="flags",
    kind=STATESET,
    labels=(("when", "now"),),
    json_key="throttled",
    csv_column="throttled_flags",
    whole=True,
    states=THROTTLE_STATES,
)
THROTTLED_SINCE_BOOT = SeriesSpec(
    key="board_throttled_since_boot",
    metric=_THROTTLING,
    help=_THROTTLING_HELP,
    unit="flags",
    kind=STATESET,
    labels=(("when", "since_boot"),),
    json_key="throttled_since_boot",
    csv_column="throttled_since_boot_flags",
    whole=True,
    states=THROTTLE_STATES,
)
SERIES = (TEMPERATURE, THROTTLED_NOW, THROTTLED_SINCE_BOOT)

# Thermal zone types that are the CPU, most specific first (Raspberry Pi, x86, other SoCs).
CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc_thermal", "soc-thermal")
GET_THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"
SYSFS = Path("/sys")  # the machine's own: only then may psutil's sensors stand in for it


def find_thermal_zone(sysfs: Path, wanted: str = "auto") -> Path | None:
    """The ``temp`` file of the zone named ``wanted`` (its ``type``), or for "auto" the CPU's
    (the first zone if none is recognisably the CPU); None when there is no zone."""
    zones = sorted(
        (sysfs / "class" / "thermal").glob("thermal_zone*"),
        key=lambda p: int(p.name.removeprefix("thermal_zone") or 0)
        if p.name.removeprefix("thermal_zone").isdigit()
        else 1 << 30,
    )
    typed = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if (zone / "temp").exists():
            typed.append((kind, zone / "temp"))
    if wanted != "auto":
        return next((temp for kind, temp in typed if kind == wanted), None)
    for preferred in CPU_ZONE_TYPES:
        for kind, temp in typed:
            if kind == preferred:
                return temp
    return typed[0][1] if typed else None


def _psutil_cpu_temperature() -> float | None:
    """psutil's reading, the portable path; None where it has none."""
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is None:
        return None
    try:
        readings = sensors()
    except (OSError, RuntimeError):
        return None
    for name in ("cpu_thermal", "cpu-thermal", "coretemp", "k10temp", "acpitz", *readings):
        for entry in readings.get(name, ()):
            if entry.current is not None:
                return float(entry.current)
    return None


class BoardHealthSource(Source):
    name = "board_health"
    series = SERIES

    def __init__(self, sysfs_root: str | os.PathLike[str] = SYSFS, zone: str = "auto") -> None:
        self.root = Path(sysfs_root)
        self._zone = zone
        self._temp = find_thermal_zone(self.root, zone)
        throttled = self.root / GET_THROTTLED
        # Firmware files do not appear at run time: one that is not there is not asked for.
        self._throttled = throttled if throttled.exists() else None
        # psutil reads the machine's own sensors: only when sysfs is the machine's own too.
        self._use_psutil = self._temp is None and zone == "auto" and self.root == SYSFS
        self._said = False

    def _say_what_is_here(self, out: Mapping[str, float]) -> None:
        """Once, at the first reading: what this board offers (so absent series are explained)."""
        self._said = True
        found = [
            f"temperature from {self._temp or 'psutil'}" if "cpu_temperature" in out else None,
            "throttling flags" if "board_throttled" in out else None,
        ]
        log.info(
            "board health: %s",
            ", ".join(f for f in found if f)
            or "no thermal zone, temperature sensor or firmware flags here; its series stay absent",
        )

    def collect(self) -> Mapping[str, float]:
        out: dict[str, float] = {}
        temperature = self._temperature()
        if temperature is not None:
            out["cpu_temperature"] = temperature
        mask = None if self._throttled is None else _read_int(self._throttled, base=16)
        if mask is not None:
            out["board_throttled"] = float(mask & 0xF)
            out["board_throttled_since_boot"] = float((mask >> 16) & 0xF)
        if not self._said:
            self._say_what_is_here(out)
        return out

    def _temperature(self) -> float | None:
        if self._temp is not None:
            millidegrees = _read_int(self._temp, base=10)
            if millidegrees is not None:
                return millidegrees / 1000.0
            return None
        if self._use_psutil:
            reading = _psutil_cpu_temperature()
            if reading is None and not self._said:
                self._use_psutil = False  # no sensor at the first look: none will appear
            return reading
        return None


def _read_int(path: Path, base: int) -> int | None:
    """The integer in a sysfs file; None if the file or its number is not there (a
    thermal zone that is powered down answers EAGAIN or ENODATA)."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).strip()
        return int(text, base)
    except (OSError, ValueError):
        return None


def _build(context: SourceContext) -> BoardHealthSource:
    return BoardHealthSource(context.options["sysfs_root"], context.options["thermal_zone"])


SOURCE = SourceType(
    name="board_health",
    series=SERIES,
    build=_build,
    options=(
        Option("sysfs_root", "/sys", check_path, "where sysfs is mounted"),
        Option(
            "thermal_zone",
            "auto",
            check_name_or_auto,
            'the thermal zone (its "type") to read, e.g. cpu-thermal; auto picks the CPU\'s',
        ),
    ),
    help="CPU temperature (thermal zones, or psutil's sensors) and the Raspberry Pi "
    "firmware's under-voltage and throttling flags (get_throttled), now and since boot",
)

"""The committed rules for a fleet of cars, against real promtool (``promtool test rules``).

Cars remote-write (job ``crankshaft``, their ``instance``, the ``vehicle`` label of their
``remote_write`` entry, no ``up``), or sit behind a Prometheus agent (which remote-writes
``up`` too), or are scraped by a central Prometheus when in reach.  A parked car sends
nothing.  What is checked, every alert of the rules file at every checkpoint:

- a parked car, and the whole fleet parked, never alert (for two days; the third brings the
  info alert);
- a reporting car whose target is down pages (CrankshaftTargetDown, critical), and one whose
  exporter is down while its agent reports pages (CrankshaftVehicleExporterDown);
- silence for ``SILENT_AFTER`` (3 days) gives CrankshaftVehicleSilent (info), and nothing else;
- samples dropped by the sender (refused by the receiver, too old) and a backlog that grows
  while the car reports alert (warning).

promtool knows every input sample from the start: it cannot show samples arriving late.
tests/real/test_fleet_receiver.py does, with a real receiver.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.config import parse_duration
from exporter.promrules import SILENT_AFTER
from tests.conftest import require_tool
from tests.real.test_alert_rules import (
    COMMITTED,
    expand,
    output,
    promtool_rules_test,
    series_text,
)

pytestmark = pytest.mark.real

JOB = "crankshaft"
RULES = yaml.safe_load(COMMITTED.read_text())
ENTRIES = {e["alert"]: e for g in RULES["groups"] for e in g["rules"] if "alert" in e}
ALERTNAMES = sorted(ENTRIES)
SEVERITY = {e["alert"]: e["labels"]["severity"] for e in ENTRIES.values()}
RW = {"remote_name": "central", "url": "https://metrics.example/api/v1/write"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def car(name: str) -> dict[str, str]:
    """A remote-writing car's target labels: job, instance (its host name), vehicle."""
    return {"job": JOB, "instance": f"{name}.fleet", "vehicle": name}


def humanize_duration(seconds: float) -> str:
    """Prometheus' humanizeDuration for whole seconds of a minute or more."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m {s}s"
    if hours:
        return f"{hours}h {minutes}m {s}s"
    return f"{minutes}m {s}s"


def expected(name: str, value: float, labels: dict[str, str],
             threshold: float | None = None) -> dict:
    """An alert as Prometheus fires it: the rule's labels with the series', and its
    annotations rendered (``humanizeDuration`` here, the rest by test_alert_rules' expand)."""
    entry = ENTRIES[name]
    all_labels = {**labels, **entry["labels"]}
    rendered = {}
    for key, template in entry["annotations"].items():
        template = template.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
        rendered[key] = expand(template, all_labels, value, threshold)
    return {"exp_labels": all_labels, "exp_annotations": rendered}


def reporting(labels: dict[str, str], start: int, minutes: int,
              memory: str | None = None, target_up: str | None = None) -> dict[str, str]:
    """What a car running the exporter remote-writes from minute ``start`` for ``minutes``
    minutes (one collection a minute), then nothing: promtool ``values`` per series."""
    n = minutes - 1
    lead = f"_x{start} " if start else ""

    def const(v: str) -> str:
        return f"{lead}{v}x{n}"

    series = {
        # its value is its own sample time
        series_text("crankshaft_last_collection_timestamp_seconds", labels):
            f"{lead}{start * 60}+60x{n}",
        series_text("crankshaft_exporter_build_info", {**labels, "version": "1.0"}): const("1"),
        series_text("crankshaft_memory_usage_mb", labels): memory or const("300"),
        series_text("crankshaft_target_up", labels): target_up or const("1"),
        series_text("crankshaft_config_last_reload_successful", labels): const("1"),
        series_text("crankshaft_collection_errors_total", {**labels, "source": "process"}):
            const("0"),
        series_text("crankshaft_remote_write_samples_pending", {**labels, **RW}): const("0"),
        series_text("crankshaft_remote_write_oldest_pending_age_seconds", {**labels, **RW}):
            const("0"),
    }
    for reason in ("too_old", "refused", "queue_full"):
        series[series_text("crankshaft_remote_write_samples_dropped_total",
                           {**labels, **RW, "reason": reason})] = const("0")
    for family, metric, value in (
        ("crankshaft_alert_threshold", "memory_usage", {"warning": 1536, "critical": 2048}),
        ("crankshaft_alert_clear_threshold", "memory_usage", {"warning": 1536,
                                                              "critical": 2048}),
        ("crankshaft_alert_threshold", "target_down", {"critical": 0}),
        ("crankshaft_alert_clear_threshold", "target_down", {"critical": 0}),
    ):
        for level, v in value.items():
            series[series_text(family, {**labels, "metric": metric, "level": level,
                                        "selector": ""})] = const(str(v))
    return series


def checks(at: list[str], firing: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """Every alert of the rules file at every time in ``at``: what ``firing`` lists for
    (time, alertname), no alert otherwise."""
    return [{"eval_time": t, "alertname": name, "exp_alerts": firing.get((t, name), [])}
            for t in at for name in ALERTNAMES]


def case(series: dict[str, str], tests: list[dict]) -> dict:
    return {"interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": tests}


def rules_test(promtool: str, tmp_path: Path, *cases: dict) -> None:
    doc = {"rule_files": [str(COMMITTED)], "evaluation_interval": "1m", "tests": list(cases)}
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode == 0, output(proc)


def test_the_fleet_group_is_what_these_tests_expect():
    assert parse_duration(SILENT_AFTER) == 3 * 86400
    assert SEVERITY["CrankshaftVehicleSilent"] == "info"
    assert SEVERITY["CrankshaftTargetDown"] == SEVERITY["CrankshaftVehicleExporterDown"] == (
        "critical")
    # checks() covers every alert of the file: a new rule is checked to stay quiet too
    assert len(ALERTNAMES) >= 20


def test_parked_cars_and_a_parked_fleet_never_alert(promtool, tmp_path):
    """Remote-writing cars park (car-17 after 30 minutes, car-18 after an hour: then the
    whole fleet is parked), a car behind a Prometheus agent parks (its `up` stops), a car
    scraped by the central Prometheus parks (its scrapes fail: `up` 0, its node_exporter's
    too).  For two days no alert fires, CrankshaftNoTargets and CrankshaftExporterGone
    included; only the info alert comes on the third (see the next test)."""
    agent_car = {"job": JOB, "instance": "car-19.fleet:9001", "vehicle": "car-19"}
    scraped = {"job": JOB, "instance": "car-20.fleet:9001", "vehicle": "car-20"}
    pushed = {  # no `up{job="crankshaft"}` at all from minute 25
        **reporting(car("car-17"), 0, 30),
        **reporting(car("car-18"), 0, 60),
        **reporting(agent_car, 0, 20),
        series_text("up", agent_car): "1x19",
        series_text("up", {**agent_car, "job": "prometheus-agent",
                           "instance": "127.0.0.1:9090"}): "1x19",
    }
    pulled = {  # failed scrapes from minute 20
        **reporting(scraped, 0, 20),
        series_text("up", scraped): "1x19 0x3000",
        series_text("up", {**scraped, "job": "node", "instance": "car-20.fleet:9100"}):
            "1x19 0x3000",
    }
    at = ["10m", "25m", "40m", "65m", "90m", "3h", "12h", "47h"]
    rules_test(promtool, tmp_path, case(pushed, checks(at, {})), case(pulled, checks(at, {})))


def test_a_car_silent_for_three_days_gives_the_info_alert_and_nothing_else(promtool, tmp_path):
    """car-17 reports for 10 minutes (its last collection at 540 s) and parks; car-18
    keeps reporting.  CrankshaftVehicleSilent (info) fires for car-17 once 3 days have
    passed, with how long it has been silent, and nothing else ever fires."""
    series = {**reporting(car("car-17"), 0, 10), **reporting(car("car-18"), 4300, 40)}
    last_seen = 540
    due = last_seen + 3 * 86400  # silent for exactly 3 days: not yet more
    first = f"{due // 60 + 1}m"
    firing = {(first, "CrankshaftVehicleSilent"): [
        expected("CrankshaftVehicleSilent", (due // 60 + 1) * 60 - last_seen, car("car-17"))]}
    at = ["1h", "2d", f"{due // 60}m", first]
    rules_test(promtool, tmp_path, case(series, checks(at, firing)))


def test_a_reporting_car_with_its_target_or_exporter_down_pages(promtool, tmp_path):
    """car-17 reports, and its target goes down at minute 11: CrankshaftTargetDown
    (critical) after its 2 minutes, joined on job and instance with the threshold the car
    publishes.  car-19's exporter stops answering its Prometheus agent at minute 11 while the
    agent reports: CrankshaftVehicleExporterDown (critical) after 5 minutes.  Both park at
    minute 30: their alerts resolve once the last samples are older than the 5 minute
    lookback, and nothing replaces them."""
    agent_car = {"job": JOB, "instance": "car-19.fleet:9001", "vehicle": "car-19"}
    agent = {**agent_car, "job": "prometheus-agent", "instance": "127.0.0.1:9090"}
    series = {
        **reporting(car("car-17"), 0, 30, target_up="1x10 0x18"),
        **reporting(agent_car, 0, 11),  # the exporter's series stop with it
        series_text("up", agent_car): "1x10 0x18",
        series_text("up", agent): "1x29",
    }
    target_down = expected("CrankshaftTargetDown", 1, {**car("car-17"), "metric": "target_down"})
    exporter_down = expected("CrankshaftVehicleExporterDown", 0, agent_car)
    firing = {  # at 33m the last samples (29m) are still within the lookback
        **{(t, "CrankshaftTargetDown"): [target_down] for t in ("14m", "15m", "17m", "29m",
                                                                "33m")},
        **{(t, "CrankshaftVehicleExporterDown"): [exporter_down] for t in ("17m", "29m", "33m")},
    }
    # 12m: target_down pending; 15m: exporter down pending; 36m: parked, all stale
    at = ["10m", "12m", "14m", "15m", "17m", "29m", "33m", "36m", "3h"]
    rules_test(promtool, tmp_path, case(series, checks(at, firing)))


def test_remote_write_refusals_and_a_growing_backlog_alert(promtool, tmp_path):
    """car-17's sender: the receiver refuses 40 samples at minute 10 (4xx), 7 more are
    too old at minute 30; from minute 5 its queue grows by 50 samples a minute and its
    oldest pending sample ages while the car keeps reporting (a second receiver that
    refuses with 5xx, a slow link).  Each drop alerts once by reason while it is within
    15 minutes; the backlog alerts once it has grown for 15 minutes with its oldest sample
    over 15 minutes old.  Nothing else fires, and after the car parks nothing at all."""
    labels = car("car-17")
    series = reporting(labels, 0, 45)
    dropped = "crankshaft_remote_write_samples_dropped_total"
    series[series_text(dropped, {**labels, **RW, "reason": "refused"})] = "0x9 40x34"
    series[series_text(dropped, {**labels, **RW, "reason": "too_old"})] = "0x29 7x14"
    series[series_text("crankshaft_remote_write_samples_pending", {**labels, **RW})] = (
        "0x4 50+50x39")
    series[series_text("crankshaft_remote_write_oldest_pending_age_seconds",
                       {**labels, **RW})] = "0x4 60+60x39"

    def drop(reason: str, n: float) -> dict:
        return expected("CrankshaftRemoteWriteDropped", n, {**labels, **RW, "reason": reason})

    # the oldest pending sample is 16 minutes old (over 900 s) from minute 20: firing at 35m
    backlog = {t: expected("CrankshaftRemoteWriteBacklog", (int(t[:-1]) - 4) * 60,
                           {**labels, **RW}) for t in ("35m", "40m", "43m")}
    firing = {
        ("20m", "CrankshaftRemoteWriteDropped"): [drop("refused", 40)],
        **{(t, "CrankshaftRemoteWriteDropped"): [drop("too_old", 7)]
           for t in ("34m", "35m", "40m", "43m")},
        **{(t, "CrankshaftRemoteWriteBacklog"): [a] for t, a in backlog.items()},
    }
    at = ["9m", "20m", "27m", "34m", "35m", "40m", "43m", "55m"]
    rules_test(promtool, tmp_path, case(series, checks(at, firing)))


def test_checks_have_teeth(promtool, tmp_path):
    """The same promtool test with one expected alert left out fails: "no alert" in
    checks() is an expectation promtool enforces, not a default."""
    series = reporting(car("car-17"), 0, 30, target_up="1x10 0x18")
    # CrankshaftTargetDown fires at 17m: expecting no alert there must fail
    doc = {"rule_files": [str(COMMITTED)], "evaluation_interval": "1m",
           "tests": [case(series, checks(["17m"], {}))]}
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode != 0, output(proc)
    assert re.search(r"CrankshaftTargetDown", proc.stdout + proc.stderr), output(proc)


def test_cars_sharing_a_host_name_alert_at_their_own_thresholds(promtool, tmp_path):
    """Head units flashed from one image share a host name, hence the remote-written
    `instance`: the threshold rules join on the vehicle too, so each car is compared with
    its own thresholds (car-17 warns at 200 MiB, car-18 at the default 1536) instead of the
    join failing for the whole fleet on duplicate series."""
    same = {"job": JOB, "instance": "crankshaft"}
    a, b = {**same, "vehicle": "car-17"}, {**same, "vehicle": "car-18"}
    series = {**reporting(a, 0, 12, memory="250x11"), **reporting(b, 0, 12, memory="250x11")}
    for family in ("crankshaft_alert_threshold", "crankshaft_alert_clear_threshold"):
        series[series_text(family, {**a, "metric": "memory_usage", "level": "warning",
                                    "selector": ""})] = "200x11"
    warning = next(e for g in RULES["groups"] for e in g["rules"]
                   if e.get("alert") == "CrankshaftMemoryUsage"
                   and e["labels"]["severity"] == "warning")
    labels = {**a, **warning["labels"]}
    annotations = {k: expand(v, labels, 250, 200) for k, v in warning["annotations"].items()}
    firing = {("8m", "CrankshaftMemoryUsage"): [{"exp_labels": labels,
                                                "exp_annotations": annotations}]}
    rules_test(promtool, tmp_path, case(series, checks(["3m", "8m"], firing)))

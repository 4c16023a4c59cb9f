"""A source defined here, in the test module, reaches every output through its declaration.

Issue 8's promise: adding a source is one file plus one registration (and its config
section if it has options); nothing in ``exporter/`` is edited.  The ``widget`` source below
declares a gauge (JSON key, CSV column, alertable) and a labelled counter, registers with an
option, and must then show in the JSON document, CSV, both exposition formats, the alert
vocabulary (``check-config``, ``alert-rules``, the evaluator), the daemon's sources, the
OpenAPI document, the history file, the page at ``/``, the generated default config (with the
option's help, also in ``check-config --explain``), README's runbook (the generic section)
and the seed-contract tests' expectations.
Sources that fail, or yield an undeclared key or a NaN, lose only their own series for that
tick, are counted per source and logged once per run of failures.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import MetricAlert, MetricsEndpoint
from exporter.alerts.rules import AlertRule
from exporter.cli import main as cli_main
from exporter.config import Config, default_config_text, parse_config
from exporter.daemon import build_sources
from exporter.history import format as history_format
from exporter.history import snapshots
from exporter.http.openapi import render_openapi
from exporter.promrules import GENERIC_RUNBOOK, build_rules
from exporter.series import COUNTER, SeriesSpec
from exporter.sources import registry
from exporter.sources.base import Source, SourceError
from exporter.sources.registry import Option, SourceContext, SourceType
from tests import seed_contract

# --- the source: one declaration, one class, one registration ------------------------------

WIDGET_LEVEL = SeriesSpec(
    key="widget_level",
    metric="crankshaft_test_widget_level",
    help="Fill level of the test widget",
    unit="units",
    json_key="widget_level",
    csv_column="widget_level_units",
)
WIDGET_SPINS = SeriesSpec(
    key="widget_spins",
    metric="crankshaft_test_widget_spins",
    help="Spins of the test widget, by direction",
    unit="count",
    kind=COUNTER,
    labels=(("direction", "left"),),
    alert=False,
    whole=True,
)


class WidgetSource(Source):
    name = "test_widget"
    series = (WIDGET_LEVEL, WIDGET_SPINS)

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.ticks = 0

    def collect(self) -> Mapping[str, float]:
        self.ticks += 1
        return {"widget_level": 2.0 * self.scale, "widget_spins": float(self.ticks)}


def _scale(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"expected a number above 0, got {value!r:.40}")
    return float(value)


WIDGET = SourceType(
    name="test_widget",
    series=(WIDGET_LEVEL, WIDGET_SPINS),
    build=lambda context: WidgetSource(context.options["scale"]),
    default_enabled=False,
    options=(Option("scale", 1.0, _scale, "multiplies the level"),),
    help="a widget that exists only in this test",
)


@pytest.fixture
def widget_registered() -> Iterator[SourceType]:
    registry.register(WIDGET)
    try:
        yield WIDGET
    finally:
        registry.unregister(WIDGET.name)


def _families(text: str, openmetrics: bool) -> dict[str, list]:
    parse = parse_openmetrics if openmetrics else parse_text
    return {f.name: f.samples for f in parse(text)}


# --- every output derives from the declaration ---------------------------------------------


def test_registered_source_series_reach_json_csv_and_both_exposition_formats(
    widget_registered: SourceType,
) -> None:
    source = widget_registered.build(SourceContext(options={"scale": 3.0}))
    assert isinstance(source, WidgetSource)
    clock = [1.7e9]
    ep = MetricsEndpoint(sources=[source], clock=lambda: clock[0])
    ep.collect_now()
    clock[0] += 1
    ep.collect_now()

    doc = ep.get_metrics()
    level = doc["widget_level"]
    assert level["name"] == "widget_level"
    assert level["unit"] == "units"
    assert level["latest"] == 6.0
    assert [s["value"] for s in level["samples"]] == [6.0, 6.0]
    assert doc["memory"]["name"] == "memory_usage"  # the seed's keys stay

    header, *rows = ep.export_csv().splitlines()
    columns = header.split(",")
    assert "widget_level_units" in columns
    assert columns[:6] == [  # the seed's columns, in the seed's order, first
        "timestamp", "memory_mb", "cpu_percent", "active_connections",
        "total_connections", "request_latency_ms",
    ]
    at = columns.index("widget_level_units")
    assert [row.split(",")[at] for row in rows] == ["6.0", "6.0"]

    text = ep.export_prometheus()
    assert "# TYPE crankshaft_test_widget_level gauge" in text
    assert "crankshaft_test_widget_level 6.0" in text
    assert 'crankshaft_test_widget_spins_total{direction="left"} 2.0' in text
    samples = _families(text, openmetrics=False)
    assert [s.value for s in samples["crankshaft_test_widget_level"]] == [6.0]

    om = ep.export_prometheus(openmetrics=True)
    assert "# TYPE crankshaft_test_widget_spins counter" in om
    samples = _families(om, openmetrics=True)
    spins = samples["crankshaft_test_widget_spins"]
    assert [(s.name, s.labels, s.value) for s in spins] == [
        ("crankshaft_test_widget_spins_total", {"direction": "left"}, 2.0)
    ]


def test_its_series_is_an_alert_metric_the_evaluator_fires_on(
    widget_registered: SourceType,
) -> None:
    assert "widget_level" in registry.alert_metrics()
    assert "widget_spins" not in registry.alert_metrics()  # declared alert=False
    ep = MetricsEndpoint(sources=[WidgetSource(3.0)], rules=[], clock=lambda: 1.7e9)
    fired: list[tuple[str, str, float]] = []
    ep.on_alert_triggered(lambda metric, level, value: fired.append((metric, level, value)))
    ep.add_alert(MetricAlert("widget_level", 5.0, 10.0, "widget too full"))
    ep.collect_now()
    assert fired == [("widget_level", "WARNING", 6.0)]
    text = ep.export_prometheus()
    assert 'crankshaft_alert_active{level="warning",metric="widget_level"} 1.0' in text


def _config(tmp_path: Path, section: dict, alerts: list[dict]) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump({"test_widget": section, "alerts": alerts}))
    return path


WIDGET_ALERT = {"metric": "widget_level", "warning": 5, "critical": 10,
                "description": "widget too full"}


def test_check_config_accepts_its_alert_metric_and_section(
    widget_registered: SourceType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, {"enabled": True, "scale": 2}, [WIDGET_ALERT])
    assert cli_main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid"


def test_check_config_rejects_an_unknown_metric_and_a_bad_option(
    widget_registered: SourceType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = _config(tmp_path, {"enabled": True}, [{**WIDGET_ALERT, "metric": "widget_levle"}])
    assert cli_main(["check-config", str(unknown)]) == 78
    err = capsys.readouterr().err
    assert "widget_levle" in err
    assert "widget_level" in err  # the message lists what is known, the new metric too

    bad = _config(tmp_path, {"enabled": True, "scale": -1}, [WIDGET_ALERT])
    assert cli_main(["check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "test_widget.scale" in err
    assert "above 0" in err


def test_unregistered_source_section_and_metric_are_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the registration the same file is refused: the fixture really unregisters."""
    path = _config(tmp_path, {"enabled": True}, [WIDGET_ALERT])
    assert cli_main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "test_widget" in err
    assert "widget_level" in err


def test_alert_rules_renders_a_rule_on_its_prometheus_metric(
    widget_registered: SourceType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, {"enabled": True}, [WIDGET_ALERT])
    assert cli_main(["alert-rules", "--config", str(path)]) == 0
    rules = yaml.safe_load(capsys.readouterr().out)["groups"][0]["rules"]
    exprs = {r["labels"]["severity"]: r["expr"] for r in rules}
    join = "on (job, instance, vehicle) group_left ()"

    def expected(level: str) -> str:  # the instance's own published threshold (a fleet)
        where = f'{{metric="widget_level",level="{level}",selector=""}}'
        firing = (f'ALERTS{{alertname="CrankshaftWidgetLevel", severity="{level}", '
                  'alertstate="firing"}')
        return (f"(crankshaft_test_widget_level > {join} crankshaft_alert_threshold{where})"
                f" or (crankshaft_test_widget_level > {join} "
                f"crankshaft_alert_clear_threshold{where} and on (job, instance, vehicle) "
                f"{firing})")

    assert exprs == {"warning": expected("warning"), "critical": expected("critical")}
    assert {r["labels"]["metric"] for r in rules} == {"widget_level"}


def test_daemon_builds_it_when_its_section_enables_it(widget_registered: SourceType) -> None:
    enabled = parse_config(yaml.safe_dump({"test_widget": {"enabled": True, "scale": 4}}))
    built = [s for s in build_sources(enabled) if isinstance(s, WidgetSource)]
    assert len(built) == 1
    assert built[0].scale == 4.0

    disabled = parse_config(yaml.safe_dump({"test_widget": {"enabled": False, "scale": 4}}))
    assert not [s for s in build_sources(disabled) if isinstance(s, WidgetSource)]
    # default_enabled=False: no section, no source
    assert not [s for s in build_sources(parse_config("")) if isinstance(s, WidgetSource)]


def test_it_reaches_openapi_history_page_default_config_explain_runbooks_and_contract(
    widget_registered: SourceType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outputs beyond the documents: each derives from the declaration alone."""
    source = WidgetSource(3.0)
    clock = [1.7e9]
    ep = MetricsEndpoint(sources=[source], clock=lambda: clock[0])
    ep.collect_now()

    # GET /openapi.yaml describes its JSON key and CSV column.
    openapi = render_openapi(ep.store.catalog, registry.all_series()).decode()
    assert "widget_level:" in openapi and "widget_level_units" in openapi

    # The history file: saved and restored into a fresh endpoint, under its identity.
    data = history_format.encode(snapshots.capture(ep.recorder))
    fresh = MetricsEndpoint(sources=[WidgetSource(3.0)], clock=lambda: clock[0])
    restored = snapshots.apply(fresh.recorder, history_format.decode(data))
    assert restored.dropped_series == () and restored.notes == ()
    assert [s["value"] for s in fresh.get_metrics()["widget_level"]["samples"]] == [6.0]

    # `/`: the page charts every object of GET /metrics shaped {name, unit, samples: [...]}
    # (exporter/web/static/app.js, isSeries), which its document is.
    doc = ep.get_metrics()["widget_level"]
    assert isinstance(doc["name"], str) and isinstance(doc["samples"], list)

    # The default config: its section with the source's help, `enabled` and the option's
    # default and help; the generated text reads back as the defaults.
    text = default_config_text()
    section = text[text.index("\ntest_widget:\n") + 1 :].split("\n\n")[0].splitlines()
    assert section == [
        "test_widget:",
        "  # A widget that exists only in this test.",
        "  enabled: false",
        "  # Multiplies the level.",
        "  scale: 1",
    ]
    assert parse_config(text) == Config()

    # check-config --explain: whether it runs, what it reads, the option's value and help.
    path = _config(tmp_path, {"enabled": True, "scale": 2}, [WIDGET_ALERT])
    assert cli_main(["check-config", str(path), "--explain"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("  test_widget (enabled; section test_widget:)")
    assert out[at + 1 : at + 4] == [
        "    a widget that exists only in this test", "    scale: 2", "      multiplies the level"
    ]

    # alert-rules: its alert links to README's generic runbook section, which exists.
    rules = build_rules([AlertRule("widget_level", 5.0, 10.0, "widget too full")])
    (url,) = {r["annotations"]["runbook_url"] for r in rules["groups"][0]["rules"]}
    assert url == f"README.md#{GENERIC_RUNBOOK}"
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "\n#### Other series alerts\n" in readme and GENERIC_RUNBOOK == "other-series-alerts"


def test_the_seed_contract_takes_a_default_source_from_the_registry() -> None:
    """The daemon's extra JSON keys and CSV columns (tests/seed_contract.py) come from the
    registered default sources: a new one is expected there without editing it."""
    registry.register(replace(WIDGET, default_enabled=True))
    try:
        contract = importlib.reload(seed_contract)
        assert "widget_level" in contract.DAEMON_METRICS_KEYS
        assert contract.DAEMON_CSV_HEADER[-1] == "widget_level_units"
    finally:
        registry.unregister(WIDGET.name)
        contract = importlib.reload(seed_contract)
    assert "widget_level" not in contract.DAEMON_METRICS_KEYS


# --- a failing source loses only its own series --------------------------------------------


def _spec(key: str) -> SeriesSpec:
    return SeriesSpec(key=key, metric=f"crankshaft_test_{key}", help=f"test series {key}",
                      unit="count")


class FlakySource(Source):
    """Reads 1.0 when healthy; when ``failing``, fails the way ``mode`` says."""

    def __init__(self, mode: str) -> None:
        self.name = f"flaky_{mode}"
        self.key = f"flaky_{mode}_value"
        self.series = (_spec(self.key),)
        self.mode = mode
        self.failing = False

    def collect(self) -> Mapping[str, float]:
        if not self.failing:
            return {self.key: 1.0}
        if self.mode == "raises":
            raise SourceError("cannot read the flaky device")
        if self.mode == "undeclared":
            return {self.key: 1.0, "something_else": 2.0}
        return {self.key: math.nan}


def _present(ep: MetricsEndpoint) -> dict[str, float]:
    """Sample name -> value of every unlabelled sample in the text exposition."""
    return {
        s.name: s.value
        for samples in _families(ep.export_prometheus(), openmetrics=False).values()
        for s in samples
        if not s.labels
    }


def _errors(ep: MetricsEndpoint, openmetrics: bool = False) -> dict[str, float]:
    text = ep.export_prometheus(openmetrics)
    samples = _families(text, openmetrics)["crankshaft_collection_errors"]
    return {s.labels["source"]: s.value for s in samples}


def _failure_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and f"source {name} " in r.getMessage()
    ]


def test_failing_sources_lose_only_their_own_series_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    flaky = [FlakySource(mode) for mode in ("raises", "undeclared", "nan")]
    ep = MetricsEndpoint(sources=[WidgetSource(1.0), *flaky], rules=[], clock=lambda: 1.7e9)
    ep.collect_now()
    present = _present(ep)
    assert present["crankshaft_test_widget_level"] == 2.0
    for source in flaky:
        assert present[f"crankshaft_test_{source.key}"] == 1.0
    assert set(_errors(ep).values()) == {0.0}

    for source in flaky:
        source.failing = True
    ep.collect_now()
    ep.collect_now()
    present = _present(ep)
    assert present["crankshaft_test_widget_level"] == 2.0  # the healthy source is unharmed
    for source in flaky:
        assert f"crankshaft_test_{source.key}" not in present, source.name  # absent, not stale
        assert _failure_lines(caplog, source.name) != []
        assert len(_failure_lines(caplog, source.name)) == 1, source.name  # once per run
    assert "something_else" in " ".join(_failure_lines(caplog, "flaky_undeclared"))
    for openmetrics in (False, True):
        errors = _errors(ep, openmetrics)
        assert errors == {"test_widget": 0.0, "flaky_raises": 2.0, "flaky_undeclared": 2.0,
                          "flaky_nan": 2.0}
    assert ep.get_metrics()["widget_level"]["sample_count"] == 3  # healthy: every tick

    # Recovery: the series come back; a new run of failures is logged again, once.
    for source in flaky:
        source.failing = False
    ep.collect_now()
    present = _present(ep)
    for source in flaky:
        assert present[f"crankshaft_test_{source.key}"] == 1.0
    for source in flaky:
        source.failing = True
    ep.collect_now()
    ep.collect_now()
    for source in flaky:
        assert len(_failure_lines(caplog, source.name)) == 2, source.name
    assert _errors(ep)["flaky_nan"] == 4.0


# --- per-source health, as node_exporter shows each collector --------------------------------


def _by_source(ep: MetricsEndpoint, family: str, openmetrics: bool) -> dict[str, float]:
    samples = _families(ep.export_prometheus(openmetrics), openmetrics)[family]
    return {s.labels["source"]: s.value for s in samples}


class EmptySource(Source):
    """Reads without error but finds nothing (a sensor that is not there)."""

    name = "empty"
    series = (_spec("empty_value"),)

    def collect(self) -> Mapping[str, float]:
        return {}


def test_each_source_shows_up_duration_and_series_read() -> None:
    flaky = FlakySource("raises")
    ep = MetricsEndpoint(sources=[WidgetSource(1.0), flaky, EmptySource()], rules=[],
                         clock=lambda: 1.7e9)
    text = ep.export_prometheus()
    for family in ("crankshaft_source_up", "crankshaft_source_duration_seconds",
                   "crankshaft_source_series"):
        assert f"# TYPE {family} gauge" in text  # before the first collection: no samples
        assert f"{family}{{" not in text
    ep.collect_now()
    flaky.failing = True
    ep.collect_now()
    for openmetrics in (False, True):
        up = _by_source(ep, "crankshaft_source_up", openmetrics)
        assert up == {"test_widget": 1.0, "flaky_raises": 0.0, "empty": 1.0}
        series = _by_source(ep, "crankshaft_source_series", openmetrics)
        assert series == {"test_widget": 2.0, "flaky_raises": 0.0, "empty": 0.0}
        duration = _by_source(ep, "crankshaft_source_duration_seconds", openmetrics)
        assert set(duration) == set(up) and all(d >= 0 for d in duration.values())
    flaky.failing = False
    ep.collect_now()
    assert _by_source(ep, "crankshaft_source_up", False)["flaky_raises"] == 1.0
    # A source taken away by a reload leaves the families.
    ep.set_sources([WidgetSource(1.0)])
    assert set(_by_source(ep, "crankshaft_source_up", False)) == {"test_widget"}

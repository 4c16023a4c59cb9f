"""The Grafana dashboard (grafana/crankshaft-exporter.json), checked without a Grafana server.

No Grafana can be installed here (shared/notes/real-components.md), so the dashboard is
checked the two ways that can be:

1. Every panel query against a real Prometheus (Debian's package) that scraped a real daemon
   fed realistic traffic through ``POST /metrics/record``: with the template variables
   substituted as Grafana would, each ``targets[].expr`` must parse and return data, and each
   variable query (``label_values``) must list what it should.  A fleet of three daemons
   under one job checks the ``instance`` variable and a multi-instance selection.  A
   receiver holding only what a car remote-wrote (a real exporter's exposition with the
   car's labels and timestamps, no ``up``) checks the ``vehicle`` variable, the fleet
   view's last-seen time and the remote-write panels.
2. The dashboard JSON as a typed constant against npm ``@grafana/schema`` with ``tsc
   --strict``; a deliberately broken copy must fail where it was broken.

Plus structural rules a reviewer would otherwise check by eye: units and descriptions on
every panel, unique ids, a grid without overlaps, every selector scoped by ``$job`` and
``$instance``, ``__inputs``/``__requires`` for import.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import parse_duration
from tests.conftest import REPO, RunningDaemon, require_tool
from tests.helpers import poll
from tests.prometheus_server import PrometheusServer, free_port
from tests.remote_write import push as remote_write
from tests.unit.test_promrules import readme_anchors

pytestmark = pytest.mark.real

DASHBOARD_PATH = REPO / "grafana" / "crankshaft-exporter.json"
SCHEMA_DIR = Path(__file__).resolve().parent / "dashboard_schema"
JOB = "crankshaft"
VEHICLE = "van-1"
# Series only a car's remote-write sender (or the fleet rules) produces: a scraped exporter
# without remote_write shows no data there, so
# the scrape tests only require them to parse; test_fleet_panels_on_remote_written_data runs
# them on what a car remote-writes.
SENDER_ONLY = ("crankshaft_remote_write_", "crankshaft:last_seen_timestamp_seconds")
DS = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's built-in interval variables, as the brief for this check fixes them.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
# Grafana unit ids the dashboard may use (a typo such as "MB" or "mbytes" would render as a
# bare number with a suffix instead of scaling).
KNOWN_UNITS = {
    "none", "short", "mbytes", "bytes", "percent", "percentunit", "s", "ms", "reqps",
    "cps", "dateTimeFromNow", "Bps", "celsius",
}
# The oldest Grafana that knows each dashboard schemaVersion (a 10.3 export is schema 39).
SCHEMA_MIN_GRAFANA = {39: (10, 3)}
# Counters the exporter moves once a collection (60 s by default): a rate() over less than
# two collections flickers to 0, so their panels need a min interval of at least 2m.
ONCE_A_TICK = ("crankshaft_websocket_connections_total", "crankshaft_collections_total",
               "crankshaft_collection_errors_total", "crankshaft_process_io_read_bytes_total",
               "crankshaft_process_io_written_bytes_total",
               "crankshaft_process_context_switches_total")
NO_VALUE_HINTS = ("connections.port", "/metrics/record", "notifiers", "No alert firing",
                  "board_health", "process_detail")
GET_THROTTLED_ON_THIS_MACHINE = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
SCOPE = ('job=~"$job"', 'instance=~"$instance"', 'vehicle=~"$vehicle"')
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*)\s*,\s*)?(\w+)\s*\)\s*$", re.S)

# Realistic traffic: four endpoints with their own latency profiles (ms), connection counts,
# and extensions moving through every lifecycle state, one of them crashing (so the exporter's
# extension_crashed alert fires and the "firing alerts" panel has rows).
ENDPOINTS = {
    "/api/play": (20.0, 60.0),
    "/api/settings/get": (3.0, 15.0),
    "/api/navigation/route": (80.0, 400.0),
    "/api/media/library": (40.0, 900.0),
}
OBSERVATIONS_PER_ROUND = 60
EXTENSION_ROUNDS = [
    {"media-player": "starting", "android-auto": "running", "bluetooth": "starting"},
    {"media-player": "running", "android-auto": "crashed", "bluetooth": "running",
     "obd-gauges": "stopped"},
    {"bluetooth": "starting"},
]
FINAL_STATE_CODES = {"media-player": 1, "bluetooth": 2, "obd-gauges": 3, "android-auto": 4}


# --- dashboard model helpers ---------------------------------------------------------------

def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_PATH.read_text())


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels (collapsed rows keep theirs inside) included."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def all_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in walk_panels(dashboard["panels"]) for t in p.get("targets", [])]


def annotation_queries(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in dashboard["annotations"]["list"] if a.get("datasource") == DS]


def config_refs(panel: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """refId -> configFromData options, for the queries that configure the panel (Grafana's
    "Config from query results") rather than show data."""
    return {
        t["options"]["configRefId"]: t["options"]
        for t in panel.get("transformations", [])
        if t["id"] == "configFromData"
    }


def shown_targets(panel: dict[str, Any]) -> list[dict[str, Any]]:
    refs = config_refs(panel)
    return [t for t in panel.get("targets", []) if t["refId"] not in refs]


def collapsed_rows_children(dashboard: dict[str, Any]) -> set[int]:
    return {c["id"] for p in dashboard["panels"] if p["type"] == "row" and p["collapsed"]
            for c in p["panels"]}


def find_panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in walk_panels(dashboard["panels"])
                if p.get("title") == title and p["type"] != "row"]
    return found


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(var: dict[str, Any]) -> str:
    query = var["query"]
    return query["query"] if isinstance(query, dict) else query


def promql_regex(value: str) -> str:
    """``value`` as a literal inside a PromQL ``=~"..."`` (RE2 metacharacters escaped, then
    the backslashes doubled for the double-quoted string)."""
    escaped = re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)
    return escaped.replace("\\", "\\\\")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of ``$var``, ``${var}``, ``${var:fmt}`` and ``[[var]]``."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name not in values:
            raise KeyError(f"no value for template variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(repl, expr)


def label_values(prom: PrometheusServer, query: str, values: dict[str, str]) -> list[str]:
    """Run a ``label_values([selector,] label)`` variable query as Grafana's Prometheus data
    source does: ``/api/v1/label/<label>/values?match[]=<selector>``."""
    m = LABEL_VALUES.match(query)
    assert m, f"not a label_values() query: {query!r}"
    selector, label = m.group(1), m.group(2)
    params = {"match[]": substitute(selector.strip(), values)} if selector else {}
    return prom.api(f"label/{label}/values", **params)


def try_query(prom: PrometheusServer, expr: str) -> tuple[list[dict[str, Any]] | None, str]:
    """(result, "") or (None, Prometheus' error text) for a query it rejects."""
    try:
        return prom.query(expr), ""
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read().decode(errors='replace')}"


def fake_raspberry_pi_sysfs(root: Path) -> Path:
    """A sysfs tree with a Raspberry Pi's CPU thermal zone (48.5 °C) and firmware flags
    (under-voltage and throttled, now and since boot), for board_health.sysfs_root."""
    zone = root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("48500\n")
    flags = root / "devices" / "platform" / "soc" / "soc:firmware" / "get_throttled"
    flags.parent.mkdir(parents=True)
    flags.write_text("50005\n")
    return root


# --- traffic ---------------------------------------------------------------------------------

def traffic_batch(round_no: int, rng: random.Random) -> dict[str, Any]:
    return {
        "active_connections": 4 + 3 * round_no,
        "total_connections": total_connections(round_no),
        "extensions": EXTENSION_ROUNDS[round_no],
        "latency_ms": {
            endpoint: [round(rng.uniform(lo, hi), 3) for _ in range(OBSERVATIONS_PER_ROUND)]
            for endpoint, (lo, hi) in ENDPOINTS.items()
        },
    }


def total_connections(round_no: int) -> int:
    return 100 + 25 * (round_no + 1)


def push(daemon: RunningDaemon, batch: dict[str, Any]) -> None:
    response = daemon.post_json("/metrics/record", batch)
    assert response.status == 200, response.text


def feed_rounds(daemon: RunningDaemon, prom: PrometheusServer, rounds: int) -> None:
    """Push a round, then wait until Prometheus has scraped it (counter and histogram moved),
    so rate() windows hold several scrapes with increases between them."""
    rng = random.Random(9001)
    sel = f'job="{JOB}",instance="127.0.0.1:{daemon.port}"'
    for round_no in range(rounds):
        push(daemon, traffic_batch(round_no, rng))
        prom.wait_for_query(
            f"crankshaft_websocket_connections_total{{{sel}}} == {total_connections(round_no)}"
        )
        prom.wait_for_query(
            f'crankshaft_request_duration_seconds_count{{{sel},endpoint="/api/play"}}'
            f" == {OBSERVATIONS_PER_ROUND * (round_no + 1)}"
        )


def start_prometheus(tmp_path: Path, instances: list[str]) -> PrometheusServer:
    # No metrics_path: Prometheus' default (/metrics), as a user's first scrape config has it.
    # A vehicle label, as a car scraped when in reach has.
    return PrometheusServer(
        tmp_path, [{"job_name": JOB, "static_configs": [
            {"targets": instances, "labels": {"vehicle": VEHICLE}}]}]
    )


# --- structure (no external tools) -----------------------------------------------------------

def test_dashboard_is_importable_json_with_inputs_and_requires() -> None:
    d = load_dashboard()
    [ds_input] = d["__inputs"]
    assert {k: ds_input[k] for k in ("name", "type", "pluginId")} == {
        "name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus",
    }
    assert ds_input["label"] and ds_input["pluginName"] == "Prometheus"
    requires = {(r["type"], r["id"]) for r in d["__requires"]}
    assert ("grafana", "grafana") in requires
    assert ("datasource", "prometheus") in requires
    used = {p["type"] for p in walk_panels(d["panels"]) if p["type"] != "row"}
    assert {i for t, i in requires if t == "panel"} == used
    assert d["schemaVersion"] in SCHEMA_MIN_GRAFANA
    (grafana,) = [r for r in d["__requires"] if r["type"] == "grafana"]
    version = tuple(int(n) for n in grafana["version"].split(".")[:2])
    assert version >= SCHEMA_MIN_GRAFANA[d["schemaVersion"]], (
        f"schemaVersion {d['schemaVersion']} needs Grafana "
        f"{SCHEMA_MIN_GRAFANA[d['schemaVersion']]}, __requires says {grafana['version']}"
    )
    assert d["uid"] and d["title"]
    # The datasource input is used: the datasource variable defaults to the imported one.
    dsvar = variables(d)["datasource"]
    assert dsvar["type"] == "datasource" and dsvar["query"] == "prometheus"
    assert dsvar["current"]["value"] == "${DS_PROMETHEUS}"


# How Grafana picks a data-source variable's option from the dashboard's saved ``current``
# (options are the data sources of the plugin: label = name, value = uid):
# - scenes (grafana/scenes MultiValueVariable.getStateUpdateGivenNewOptions and
#   findOptionMatchingCurrent): the option whose value equals current.value, else the one
#   whose label equals current.text, else the first option;
# - the older templating (grafana/grafana public/app/features/variables/state/actions.ts,
#   validateVariableSelectionState): the option whose text equals current.text, else the
#   first.
# A dashboard loaded by file provisioning is not run through __inputs (grafana#20998): its
# ${DS_PROMETHEUS} stays literal.  Importing replaces every "${DS_PROMETHEUS}" in the JSON
# with the chosen data source's uid (pkg/services/dashboardimport/utils,
# DashTemplateEvaluator.evalValue).

def scenes_pick(current: dict[str, str], options: list[tuple[str, str]]) -> str:
    by_text = None
    for label, uid in options:
        if uid == current["value"]:
            return uid
        if label == current["text"]:
            by_text = by_text or uid
    return by_text or options[0][1]


def legacy_pick(current: dict[str, str], options: list[tuple[str, str]]) -> str:
    return next((uid for label, uid in options if label == current["text"]), options[0][1])


def imported(doc: Any, uid: str) -> Any:
    """The dashboard as Grafana's import leaves it: every ${DS_PROMETHEUS} replaced."""
    return json.loads(json.dumps(doc).replace("${DS_PROMETHEUS}", uid))


def test_provisioned_dashboard_selects_the_provisioned_data_source() -> None:
    d = load_dashboard()
    (source,) = yaml.safe_load((REPO / "grafana" / "provisioning" / "datasources" /
                                "crankshaft-prometheus.yml").read_text())["datasources"]
    # Another Prometheus listed first (and the default): what Grafana fell back to before.
    options = [("Prometheus", "other-default"), (source["name"], source["uid"])]
    current = variables(d)["datasource"]["current"]
    assert scenes_pick(current, options) == source["uid"]
    assert legacy_pick(current, options) == source["uid"]
    # Imported instead, choosing another data source: the choice wins (scenes matches the
    # uid the import wrote), and every panel query uses the variable, not a fixed uid.
    chosen = imported(d, "fleet-prom")
    current = variables(chosen)["datasource"]["current"]
    assert scenes_pick(current, [*options, ("Fleet Prometheus", "fleet-prom")]) == "fleet-prom"
    uids = {json.dumps(t.get("datasource")) for p in walk_panels(d["panels"])
            for t in p.get("targets", [])}
    assert uids == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}, uids


def test_template_variables() -> None:
    v = variables(load_dashboard())
    assert variable_query(v["job"]) == "label_values(crankshaft_exporter_build_info, job)"
    assert (
        variable_query(v["vehicle"])
        == 'label_values(crankshaft_exporter_build_info{job=~"$job"}, vehicle)'
    )
    assert (
        variable_query(v["instance"])
        == 'label_values(crankshaft_exporter_build_info{job=~"$job",vehicle=~"$vehicle"}, '
        "instance)"
    )
    names = list(v)
    assert names.index("job") < names.index("vehicle") < names.index("instance")
    # a fleet: several jobs, cars and head units at once; All matches a machine without a
    # vehicle label too (".*" matches the empty value)
    for name in ("job", "vehicle", "instance"):
        assert v[name]["multi"] and v[name]["includeAll"] and v[name]["allValue"] == ".*"
    for name in ("job", "vehicle", "instance", "endpoint"):
        var = v[name]
        assert var["type"] == "query"
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        if "definition" in var:
            assert var["definition"] == variable_query(var)


def test_every_panel_has_unit_description_datasource_and_scoped_targets() -> None:
    d = load_dashboard()
    problems = []
    ids = [p["id"] for p in walk_panels(d["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in walk_panels(d["panels"]):
        where = f"panel {panel['id']} {panel.get('title')!r}"
        if panel["type"] == "row":
            if panel["collapsed"] is False and panel.get("panels"):
                problems.append(f"{where}: an expanded row keeps no nested panels")
            continue
        if not panel.get("description"):
            problems.append(f"{where}: no description")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in KNOWN_UNITS:
            problems.append(f"{where}: unit {unit!r} is not one of {sorted(KNOWN_UNITS)}")
        if panel.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            problems.append(f"{where}: datasource is not the $datasource variable")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{where}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        if not all(ref_ids) or len(set(ref_ids)) != len(ref_ids):
            problems.append(f"{where}: refIds missing or repeated: {ref_ids}")
        for t in targets:
            selectors = SELECTOR.findall(t["expr"])
            if not selectors:
                problems.append(f"{where} {t['refId']}: no metric selector in {t['expr']!r}")
            for metric, matchers in selectors:
                if any(m not in matchers for m in SCOPE):
                    problems.append(
                        f"{where} {t['refId']}: {metric}{{{matchers}}} is not scoped by "
                        '{job=~"$job",instance=~"$instance",vehicle=~"$vehicle"}'
                    )
    for a in annotation_queries(d):
        for metric, matchers in SELECTOR.findall(a["expr"]):
            if any(m not in matchers for m in SCOPE):
                problems.append(f"annotation {a['name']!r}: {metric} is not scoped")
    assert not problems, "\n".join(problems)


def _check_no_overlap(panels: list[dict[str, Any]]) -> None:
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh"), p["title"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']} is wider than the 24-column grid"
        if p["type"] != "row":
            assert g["w"] >= 3 and g["h"] >= 4, f"{p['title']} is too small to read"
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
            assert not overlap, f"panels {a!r} and {b!r} overlap"


def test_grid_layout_fits_and_does_not_overlap() -> None:
    """The top level as Grafana lays it out (a collapsed row is one line high), and each
    collapsed row's panels as they unfold below it."""
    top = load_dashboard()["panels"]
    _check_no_overlap(top)
    for r in top:
        if r["type"] == "row" and r["collapsed"]:
            _check_no_overlap(r["panels"])
            assert all(c["gridPos"]["y"] > r["gridPos"]["y"] for c in r["panels"]), r["title"]


def test_stat_and_gauge_thresholds_come_from_the_exporter() -> None:
    """No hard-coded alert numbers: each stat or gauge of a thresholded metric takes its
    warning and critical steps from crankshaft_alert_threshold of the shown instance, and
    the row holding the stats repeats per instance, so each car is coloured by its own."""
    d = load_dashboard()
    expected = {"Memory": "memory_usage", "CPU": "cpu_usage",
                "Active connections": "active_connections", "Avg latency": "request_latency",
                "Average latency": "request_latency"}
    for title, metric in expected.items():
        p = next(p for p in walk_panels(d["panels"])
                 if p.get("title") == title and p["type"] in ("stat", "gauge"))
        refs = config_refs(p)
        assert set(refs) == {"B", "C"}, title
        steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None], f"{title}: hard-coded threshold steps"
        for ref, level, color in (("B", "warning", "orange"), ("C", "critical", "red")):
            t = next(t for t in p["targets"] if t["refId"] == ref)
            assert t["expr"] == (
                f'crankshaft_alert_threshold{{job=~"$job",instance=~"$instance",'
                f'vehicle=~"$vehicle",metric="{metric}",level="{level}",selector=""}}'
            ), title
            [mapping] = refs[ref]["mappings"]
            assert mapping["fieldName"] == t["legendFormat"], title  # Grafana's field name
            assert mapping["handlerKey"] == "threshold1", title
            assert mapping["handlerArguments"]["threshold"]["color"] == color, title
            assert refs[ref]["applyTo"] == {"id": "byFrameRefID", "options": "A"}, title
    stats_row = next(p for p in d["panels"] if p["type"] == "row" and p.get("repeat"))
    assert stats_row["repeat"] == "instance" and not stats_row["collapsed"]
    first = d["panels"].index(stats_row) + 1
    nxt = next(i for i, p in enumerate(d["panels"]) if i >= first and p["type"] == "row")
    assert {p["title"] for p in d["panels"][first:nxt]} >= {"Memory", "CPU", "Avg latency"}


def test_units_intervals_links_and_annotations() -> None:
    d = load_dashboard()
    for p in walk_panels(d["panels"]):
        exprs = " ".join(t["expr"] for t in p.get("targets", []))
        if "crankshaft_memory_usage_mb" in exprs and p["type"] != "table":
            assert p["fieldConfig"]["defaults"]["unit"] == "mbytes", p["title"]  # MiB
        for counter in ONCE_A_TICK:
            if re.search(r"(rate|increase)\(" + counter, exprs):
                interval = p.get("interval", "")
                assert interval and parse_duration(interval) >= 120, (
                    f"{p['title']}: rate of {counter} needs a min interval >= 2m, "
                    f"has {interval!r}"
                )
    anchors = readme_anchors((REPO / "README.md").read_text())
    assert d["links"]
    for link in d["links"]:
        base, _, anchor = link["url"].partition("#")
        assert base == "${readme}" and anchor in anchors, link
    assert variables(d)["readme"]["type"] == "textbox"
    names = {a["name"] for a in annotation_queries(d)}
    assert names == {"Alert transitions", "Exporter restarts", "Config reloads",
                     "Failed config reloads"}


# --- every query against a real Prometheus ------------------------------------------------------

def run_queries(
    prom: PrometheusServer, queries: list[tuple[Any, str]], values: dict[str, str], wait: float
) -> tuple[dict[Any, list[dict[str, Any]]], list[str]]:
    """Each query with the variables substituted: (results with data, failures).  A query
    Prometheus rejects is a failure; one without data is retried for ``wait`` seconds, then
    a failure when ``wait`` is positive, or simply absent from the results when it is 0."""
    results: dict[Any, list[dict[str, Any]]] = {}
    failures: list[str] = []
    deadline = time.monotonic() + wait
    for key, text in queries:
        try:
            expr = substitute(text, values)
        except KeyError as e:
            failures.append(f"{key}: {e}")
            continue
        while True:
            result, error = try_query(prom, expr)
            if error:
                failures.append(f"{key}: Prometheus rejects {expr!r}: {error}")
                break
            if result:
                results[key] = result
                break
            if time.monotonic() > deadline:
                if wait:
                    failures.append(f"{key}: no data for {expr!r}")
                break
            time.sleep(0.25)
    return results, failures


def test_every_panel_query_returns_data(daemon_factory, tmp_path: Path) -> None:
    require_tool("prometheus")
    d = load_dashboard()
    cfg = tmp_path / "exporter.yaml"  # a notifier whose receiver is down: failures, a queue
    # The shipped rules plus one on the board's temperature (its threshold lines), and a
    # Raspberry Pi's sysfs: a CPU thermal zone and get_throttled (under-voltage and throttled
    # now, and since boot), so the board health panels have data on any machine.
    shipped = yaml.safe_load((REPO / "config" / "exporter.yaml").read_text())["alerts"]
    sysfs = fake_raspberry_pi_sysfs(tmp_path / "sys")
    cfg.write_text(yaml.safe_dump({
        "notifiers": {"webhooks": [
            {"url": f"http://127.0.0.1:{free_port()}/hook", "timeout": "1s"}]},
        "board_health": {"sysfs_root": str(sysfs)},
        "alerts": [*shipped, {"metric": "cpu_temperature", "warning": 75, "critical": 82}],
    }))
    daemon = daemon_factory("--interval", "1", "--config", str(cfg))
    instance = f"127.0.0.1:{daemon.port}"
    with start_prometheus(tmp_path, [instance]) as prom:
        prom.wait_for_query(f'crankshaft_exporter_build_info{{job="{JOB}"}}')
        feed_rounds(daemon, prom, len(EXTENSION_ROUNDS))
        prom.wait_for_query(
            f'crankshaft_alert_active{{job="{JOB}",metric="extension_crashed",'
            'level="critical"} > 0'
        )

        # Variables, in dashboard order (each may use the ones before it).
        values = {"job": promql_regex(JOB), "instance": promql_regex(instance),
                  "vehicle": promql_regex(VEHICLE)}
        listed = {}
        for name, var in variables(d).items():
            if var["type"] != "query":
                continue
            listed[name] = label_values(prom, variable_query(var), values)
            assert listed[name], f"variable {name}: {variable_query(var)} lists nothing"
        assert JOB in listed["job"]
        assert listed["vehicle"] == [VEHICLE]
        assert instance in listed["instance"]
        assert set(ENDPOINTS) <= set(listed["endpoint"])
        values["endpoint"] = "|".join(promql_regex(e) for e in sorted(ENDPOINTS))

        queries = [((p["title"], t["refId"]), t["expr"]) for p, t in all_targets(d)]
        scraped = [(k, e) for k, e in queries if not any(m in e for m in SENDER_ONLY)]
        results, failures = run_queries(prom, scraped, values, wait=30)
        assert not failures, "\n".join(failures)
        sender = [(k, e) for k, e in queries if any(m in e for m in SENDER_ONLY)]
        assert len(sender) >= 7  # the fleet view's last seen and the remote-write row
        found, failures = run_queries(prom, sender, values, wait=0)  # they parse
        assert not failures, "\n".join(failures)
        results.update(found)
        # Annotations are events: each must parse; the extension crash is a transition, and
        # a reload (SIGHUP) is annotated as one.
        os.kill(daemon.pid, signal.SIGHUP)
        prom.wait_for_query(
            f'changes(crankshaft_config_last_reload_success_timestamp_seconds{{job="{JOB}"}}[2m])'
            " > 0")
        annotations = [(("annotation", a["name"]), a["expr"]) for a in annotation_queries(d)]
        found, failures = run_queries(prom, annotations, values, wait=0)
        assert not failures, "\n".join(failures)
        results.update(found)

    # Everything shown belongs to the selected instance.
    for key, result in results.items():
        for series in result:
            if "instance" in series["metric"]:
                assert series["metric"]["instance"] == instance, key
    # The state timeline's encoding gives each extension its current state.
    states = {
        s["metric"]["extension"]: float(s["value"][1])
        for s in results[("Extension states", "A")]
    }
    assert states == FINAL_STATE_CODES
    now = {
        s["metric"]["extension"]: s["metric"]["status"] for s in results[("Extensions now", "A")]
    }
    assert now == {"media-player": "running", "bluetooth": "starting", "obd-gauges": "stopped",
                   "android-auto": "crashed"}
    firing = {(s["metric"]["metric"], s["metric"]["level"])
              for s in results[("Firing alerts", "A")]}
    assert ("extension_crashed", "critical") in firing
    # Per-endpoint panels show each endpoint once.
    for title, ref in (("Request rate per endpoint", "A"),
                       ("Latency percentiles per instance and endpoint (p50 / p95 / p99)", "B")):
        assert sorted(s["metric"]["endpoint"] for s in results[(title, ref)]) == sorted(ENDPOINTS)
    # The board: the zone's temperature, its rule's thresholds, the firmware's flags.
    assert float(results[("CPU temperature", "A")][0]["value"][1]) == 48.5
    assert {ref: float(results[("CPU temperature", ref)][0]["value"][1]) for ref in "BC"} == {
        "B": 75.0, "C": 82.0}
    flags = {(s["metric"]["when"], s["metric"]["crankshaft_board_throttling"]):
             float(s["value"][1]) for s in results[("Throttling state", "A")]}
    assert flags == {(when, state): float(state in ("under_voltage", "throttled"))
                     for when in ("now", "since_boot")
                     for state in ("under_voltage", "frequency_capped", "throttled",
                                   "soft_temperature_limit")}
    # Process detail of the exporter itself.
    assert float(results[("Threads", "A")][0]["value"][1]) >= 2
    assert float(results[("Open file descriptors", "A")][0]["value"][1]) > 0
    # The threshold series are the configured (default) thresholds.
    thresholds = {ref: float(results[("Memory usage", ref)][0]["value"][1]) for ref in "BC"}
    assert thresholds == {"B": 1536.0, "C": 2048.0}
    assert float(results[("Active alerts", "A")][0]["value"][1]) == len(
        json.loads(daemon.request("/metrics/alerts").text))
    # the alert transition (extension crashed) and the reload are annotations
    assert results[("annotation", "Alert transitions")]
    assert results[("annotation", "Config reloads")]
    assert ("annotation", "Exporter restarts") not in results
    assert ("annotation", "Failed config reloads") not in results


def test_fleet_instance_variable_and_multi_instance_selection(daemon_factory,
                                                              tmp_path: Path) -> None:
    require_tool("prometheus")
    d = load_dashboard()
    daemons = [daemon_factory("--interval", "1") for _ in range(3)]
    instances = sorted(f"127.0.0.1:{x.port}" for x in daemons)
    for n, daemon in enumerate(daemons):
        push(daemon, {"active_connections": n + 1, "latency_ms": {"/api/play": [25.0]}})
    with start_prometheus(tmp_path, instances) as prom:
        prom.wait_for_query(f'count(up{{job="{JOB}"}} == 1) == 3')
        listed = label_values(
            prom, variable_query(variables(d)["instance"]),
            {"job": promql_regex(JOB), "vehicle": ".*"}
        )
        assert sorted(listed) == instances
        # the vehicle variable narrows the instances to that car's
        assert label_values(prom, variable_query(variables(d)["instance"]),
                            {"job": promql_regex(JOB), "vehicle": "no-such-car"}) == []
        assert sorted(label_values(prom, variable_query(variables(d)["instance"]),
                                   {"job": promql_regex(JOB),
                                    "vehicle": promql_regex(VEHICLE)})) == instances

        panel = next(p for p in walk_panels(d["panels"]) if p.get("title") == "Memory usage")
        expr = next(t["expr"] for t in panel["targets"] if t["refId"] == "A")
        chosen = "|".join(promql_regex(i) for i in instances)  # a|b|c, as Grafana builds it
        all_value = variables(d)["instance"]["allValue"]  # the "All" option
        for instance_value in (chosen, all_value):
            query = substitute(expr, {"job": promql_regex(JOB), "instance": instance_value,
                                      "vehicle": ".*"})
            series = poll(lambda q=query: prom.query(q), lambda s: len(s) == 3,
                          f"three series for {query}", 30, interval=0.2)
            assert sorted(s["metric"]["instance"] for s in series) == instances


def test_default_install_every_panel_shows_data_or_says_what_it_needs(daemon_factory,
                                                                    tmp_path: Path) -> None:
    """The exporter watching itself, nothing pushed, no port configured: every panel outside
    a collapsed row shows data, or has a no-value text saying what to configure or push."""
    require_tool("prometheus")
    d = load_dashboard()
    daemon = daemon_factory("--interval", "1")
    instance = f"127.0.0.1:{daemon.port}"
    values = {"job": promql_regex(JOB), "instance": promql_regex(instance), "endpoint": ".*",
              "vehicle": ".*"}
    hidden = collapsed_rows_children(d)
    with start_prometheus(tmp_path, [instance]) as prom:
        prom.wait_for_query(f'crankshaft_collections_total{{job="{JOB}"}} > 2')
        prom.wait_for_query(f'rate(crankshaft_collections_total{{job="{JOB}"}}[1m]) > 0')
        shown = [(p, t) for p in walk_panels(d["panels"]) if p["type"] != "row"
                 and p["id"] not in hidden for t in shown_targets(p)]
        results, failures = run_queries(
            prom, [((p["id"], t["refId"]), t["expr"]) for p, t in shown], values, wait=0)
        assert not failures, "\n".join(failures)
    problems, empty = [], []
    for p in walk_panels(d["panels"]):
        if p["type"] == "row" or p["id"] in hidden:
            continue
        if any((p["id"], t["refId"]) in results for t in shown_targets(p)):
            continue
        empty.append(p["title"])
        text = p["fieldConfig"]["defaults"].get("noValue", "")
        if not any(hint in text for hint in NO_VALUE_HINTS):
            problems.append(f"{p['title']!r} shows a bare 'No data' on a default install")
    assert not problems, "\n".join(problems)
    # the check has teeth: these need a push or a port, and say so
    assert {"Active connections", "Avg latency", "Extension states",
            "p95 latency per head unit"} <= set(empty)
    assert not {"Memory", "Fleet overview", "Threads", "Open file descriptors",
                "Context switches per second"} & set(empty)
    # board health follows this machine: empty (and saying so) exactly when it has no sensor
    document = json.loads(daemon.request("/metrics?last_n=1").text)
    assert ("CPU temperature" in empty) == (document["cpu_temperature"]["latest"] is None)
    assert ("Throttling state" in empty) == (not GET_THROTTLED_ON_THIS_MACHINE.exists())


# (head unit, its YAML thresholds for memory, the memory it reports in MiB)
FLEET = [
    ("car-a", {"warning": 100, "critical": 200}, 250.0),  # critical
    ("car-b", {"warning": 1536, "critical": 2048}, 250.0),  # quiet
    ("car-c", {"warning": 240, "critical": 900}, 250.0),  # warning
]


def test_fleet_with_different_yaml_thresholds_in_the_overview_table(daemon_factory,
                                                                    tmp_path: Path) -> None:
    """Three head units whose exporter.yaml set different memory thresholds: the overview
    table (its queries merged on job and instance, as Grafana's merge transformation does)
    has one row per car with its own values, and each car's stat thresholds (the repeated
    row, one instance each) are that car's YAML thresholds."""
    require_tool("prometheus")
    d = load_dashboard()
    daemons = {}
    for name, memory, _ in FLEET:
        cfg = tmp_path / f"{name}.yaml"
        # car-a is a Raspberry Pi (48.5 °C, under-voltage and throttled now); the others
        # have no board sensor, as this machine has none of its own (psutil's stay unasked)
        board = fake_raspberry_pi_sysfs(tmp_path / name) if name == "car-a" else tmp_path
        cfg.write_text(yaml.safe_dump({
            "target": {"kind": "none"},
            "board_health": {"sysfs_root": str(board)},
            "alerts": [{"metric": "memory_usage", "description": "Memory usage high", **memory},
                       {"metric": "cpu_usage", "warning": 70, "critical": 90}],
        }))
        daemons[name] = daemon_factory("--interval", "1", "--config", str(cfg))
    instances = {name: f"127.0.0.1:{x.port}" for name, x in daemons.items()}
    scrape = [{"job_name": JOB, "static_configs": [
        {"targets": [instances[name]], "labels": {"vehicle": name}} for name, *_ in FLEET]}]
    with PrometheusServer(tmp_path, scrape) as prom:
        for name, _, mem in FLEET:
            push(daemons[name], {"memory_mb": mem, "cpu_percent": 12.5,
                                 "active_connections": 3})
        prom.wait_for_query(f'count(crankshaft_memory_usage_mb{{job="{JOB}"}} == 250) == 3')
        prom.wait_for_query(f'sum(crankshaft_active_alerts{{job="{JOB}"}}) == 2')
        table = find_panel(d, "Fleet overview")
        values = {"job": promql_regex(JOB), "instance": ".*", "vehicle": ".*"}
        results, failures = run_queries(
            prom, [(t["refId"], t["expr"]) for t in table["targets"]], values, wait=0)
        assert not failures, "\n".join(failures)
        # Grafana's merge: rows with equal (job, instance) become one row
        rows: dict[str, dict[str, Any]] = {}
        for ref, series_list in results.items():
            for series in series_list:
                row = rows.setdefault(series["metric"]["instance"], {})
                row.update({k: v for k, v in series["metric"].items() if k != "__name__"})
                row[f"Value #{ref}"] = float(series["value"][1])
        assert sorted(rows) == sorted(instances.values())
        for name, _, mem in FLEET:
            row = rows[instances[name]]
            assert row["vehicle"] == name and row["version"]
            assert row["Value #B"] == 1 and row["Value #C"] == mem and row["Value #D"] == 12.5
            assert row["Value #E"] == 3 and row["Value #H"] == 1
        assert {name: rows[i]["Value #G"] for name, i in instances.items()} == {
            "car-a": 1, "car-b": 0, "car-c": 1}
        # board health: the Raspberry Pi's temperature and conditions set now, absent ("-")
        # for the cars without a sensor
        assert {name: (rows[i].get("Value #I"), rows[i].get("Value #J"))
                for name, i in instances.items()} == {
            "car-a": (48.5, 2), "car-b": (None, None), "car-c": (None, None)}
        organize = next(t for t in table["transformations"] if t["id"] == "organize")
        assert set(organize["options"]["renameByName"]) >= {f"Value #{r}" for r in "BCDEFGHIJ"}
        # each car's stat thresholds: the repeated row shows one instance at a time
        stat = next(p for p in walk_panels(d["panels"])
                    if p.get("title") == "Memory" and p["type"] == "stat")
        for name, memory, _ in FLEET:
            one = {"job": promql_regex(JOB), "instance": promql_regex(instances[name]),
                   "vehicle": promql_regex(name)}
            got, failures = run_queries(
                prom, [(t["refId"], t["expr"]) for t in stat["targets"]], one, wait=10)
            assert not failures, "\n".join(failures)
            assert {ref: float(got[ref][0]["value"][1]) for ref in "BC"} == {
                "B": memory["warning"], "C": memory["critical"]}, name


# --- a car that remote-writes -------------------------------------------------------------------

CAR = {"job": JOB, "instance": "car-17.fleet", "vehicle": "car-17"}
REMOTE = {"remote_name": "central", "url": "https://metrics.example/api/v1/write"}


def sender_series(round_no: int, ts_s: float) -> list[tuple[str, dict[str, str], float]]:
    """The sender's self-metrics at one collection (as the remote_write contract names
    them), for a sender that has been catching up: sending, some failures and drops, its
    queue shrinking."""
    out = [("crankshaft_remote_write_samples_sent_total", {}, 500.0 * round_no),
           ("crankshaft_remote_write_samples_failed_total", {}, 10.0 * round_no),
           ("crankshaft_remote_write_samples_pending", {}, 100.0 - 10 * round_no),
           ("crankshaft_remote_write_oldest_pending_age_seconds", {}, 60.0 - 5 * round_no),
           ("crankshaft_remote_write_last_success_timestamp_seconds", {}, ts_s - 2)]
    for reason, step in (("too_old", 3.0), ("refused", 1.0), ("queue_full", 0.0)):
        out.append(("crankshaft_remote_write_samples_dropped_total", {"reason": reason},
                    step * round_no))
    return [(name, {**labels, **REMOTE}, value) for name, labels, value in out]


def remote_written(daemon: RunningDaemon, rounds: int, now_ms: int) -> list[tuple]:
    """A car's remote write, taken from a real exporter: its exposition at ``rounds``
    collections 15 s apart, every sample with the car's labels (job, instance, vehicle)
    and the collection's timestamp, plus the sender's self-metrics (this exporter has no
    remote_write configured)."""
    from prometheus_client.parser import text_string_to_metric_families

    series: dict[tuple, list[tuple[int, float]]] = {}
    for round_no in range(rounds):
        ts_ms = now_ms - (rounds - 1 - round_no) * 15_000
        text = daemon.request("/metrics/prometheus").text
        samples = [(x.name, dict(x.labels), x.value)
                   for family in text_string_to_metric_families(text) for x in family.samples]
        # Re-stamped at ts_ms, so the last-collection time says ts_ms too (as a sender's does).
        samples = [s for s in samples if s[0] != "crankshaft_last_collection_timestamp_seconds"]
        samples.append(("crankshaft_last_collection_timestamp_seconds", {}, ts_ms / 1000))
        names = {name for name, _, _ in samples}
        if not any(n.startswith("crankshaft_remote_write_") for n in names):
            samples += sender_series(round_no + 1, ts_ms / 1000)
        for name, labels, value in samples:
            key = tuple(sorted({"__name__": name, **labels, **CAR}.items()))
            series.setdefault(key, []).append((ts_ms, value))
    return [(dict(key), points) for key, points in series.items()]


def test_fleet_panels_on_remote_written_data(daemon_factory, tmp_path: Path) -> None:
    """The dashboard on a receiver that holds only what a car remote-wrote (no scrape, no
    `up`): the vehicle variable lists the car and narrows the instances to it, every query
    parses, the fleet view's last seen and every remote-write panel have data, and the
    fleet overview's row for the car has its vehicle, memory and last-seen time."""
    require_tool("prometheus")
    d = load_dashboard()
    daemon = daemon_factory("--interval", "1", "--target", "none")  # memory/CPU are pushed
    push(daemon, {"memory_mb": 250.0, "cpu_percent": 12.5})
    poll(lambda: daemon.request("/metrics/prometheus").text,
         lambda text: "\ncrankshaft_memory_usage_mb 250.0\n" in text,
         "the pushed memory in the exposition", 30, interval=0.2)
    now_ms = int(time.time() * 1000)
    with PrometheusServer(tmp_path, [], flags=("--web.enable-remote-write-receiver",)) as prom:
        status, body = remote_write(prom.write_url, remote_written(daemon, 4, now_ms))
        assert status == 204, (status, body)
        assert prom.query("up") == []
        values = {"job": promql_regex(JOB)}
        assert label_values(prom, variable_query(variables(d)["vehicle"]), values) == ["car-17"]
        values["vehicle"] = promql_regex("car-17")
        assert label_values(prom, variable_query(variables(d)["instance"]), values) == [
            "car-17.fleet"]
        values.update(instance=promql_regex("car-17.fleet"), endpoint=".*")
        queries = [((p["title"], t["refId"]), t["expr"]) for p, t in all_targets(d)]
        results, failures = run_queries(prom, queries, values, wait=0)
        assert not failures, "\n".join(failures)  # every query parses
        sender = {k for k, e in queries if any(m in e for m in SENDER_ONLY)}
        assert sender <= set(results), f"no data for {sorted(sender - set(results))}"
        assert ("Memory usage", "A") in results and ("CPU usage", "A") in results
    (last,) = results[("Fleet overview", "K")]
    assert last["metric"] == {"job": JOB, "instance": "car-17.fleet", "vehicle": "car-17"}
    # the last collection sent, in ms for Grafana's dateTimeFromNow
    assert abs(float(last["value"][1]) - now_ms) < 1
    (memory,) = results[("Fleet overview", "C")]
    assert float(memory["value"][1]) == 250.0
    dropped = {s["metric"]["reason"] for s in results[
        ("Remote write: dropped samples per second by reason", "A")]}
    assert dropped == {"too_old", "refused", "queue_full"}
    for key, result in results.items():
        for series in result:
            if "vehicle" in series["metric"]:
                assert series["metric"]["vehicle"] == "car-17", key


# --- type check against @grafana/schema ------------------------------------------------------

CHECK_HEADER = """\
import type { AnnotationQuery, Dashboard, VariableModel } from '@grafana/schema';

// The dashboard is a JSON file, and JSON has no TypeScript enums: where @grafana/schema types
// a field as a string enum (FieldColorModeId, ThresholdsMode, MappingType, ...) the file holds
// the enum's string value.  Json<T> is T with each string enum replaced by the union of its
// values ("absolute" | "percentage"); numbers, booleans, objects and arrays keep their types.
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// Grafana saves `definition` (the query as the variables list shows it) on query variables;
// @grafana/schema's VariableModel does not declare it.
type Variable = Json<VariableModel> & { definition?: string };
// Grafana's Prometheus data source keeps an annotation's query and its formatting on the
// annotation itself (as Grafana saves them); @grafana/schema's AnnotationQuery leaves a
// data source's own fields undeclared.
type Annotation = Json<AnnotationQuery> & {
  expr?: string; step?: string; titleFormat?: string; textFormat?: string; tagKeys?: string;
  useValueForTime?: boolean;
};
type DashboardFile = Omit<Json<Dashboard>, 'templating' | 'annotations'> & {
  templating?: { list?: Variable[] };
  annotations?: { list?: Annotation[] };
};

const dashboard: DashboardFile = """
SENTINEL = "__deliberately_broken__"
TSC_ERROR = re.compile(r"^(\S+\.ts)\((\d+),\d+\): error (TS\d+)", re.M)


def _pinned_and_installed() -> bool:
    pinned = json.loads((SCHEMA_DIR / "package.json").read_text())["devDependencies"]
    for name, version in pinned.items():
        manifest = SCHEMA_DIR / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="module")
def tsc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for check files whose node_modules is the pinned install (npm ci from the
    committed lockfile when missing or stale)."""
    npm = require_tool("npm")
    require_tool("npx")
    if not _pinned_and_installed():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SCHEMA_DIR,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
        assert _pinned_and_installed(), "npm ci did not install the pinned versions"
    work = tmp_path_factory.mktemp("tsc")
    (work / "node_modules").symlink_to(SCHEMA_DIR / "node_modules", target_is_directory=True)
    return work


def write_check(path: Path, dashboard: dict[str, Any]) -> str:
    model = {k: v for k, v in dashboard.items() if not k.startswith("__")}  # import-only keys
    text = CHECK_HEADER + json.dumps(model, indent=2) + ";\n\nexport default dashboard;\n"
    path.write_text(text)
    return text


def tsc(work: Path, files: list[str]) -> subprocess.CompletedProcess[str]:
    (work / "tsconfig.json").write_text(
        json.dumps({"extends": str(SCHEMA_DIR / "tsconfig.json"), "files": files})
    )
    return subprocess.run(
        ["npx", "--no", "--", "tsc", "--noEmit", "--strict", "--project", "tsconfig.json"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )


def test_dashboard_type_checks_against_grafana_schema(tsc_dir: Path) -> None:
    write_check(tsc_dir / "check.ts", load_dashboard())
    r = tsc(tsc_dir, ["check.ts"])
    assert r.returncode == 0, f"tsc rejects the dashboard:\n{r.stdout}{r.stderr}"


def _first(d: dict[str, Any], kind: str, nested: bool = False) -> dict[str, Any]:
    rows = [p for p in d["panels"] if p["type"] == "row" and p["panels"]]
    pool = rows[0]["panels"] if nested else d["panels"]
    return next(p for p in pool if p["type"] == kind)


BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # name: (puts SENTINEL where the breakage goes, the JSON text that replaces it)
    "gridpos-string": (lambda d: _first(d, "stat").__setitem__("gridPos", SENTINEL),
                       '"0 1 3 4"'),
    "nested-gridpos-string": (
        lambda d: _first(d, "timeseries", nested=True).__setitem__("gridPos", SENTINEL),
        '"0 1 8 7"'),
    "options-null": (lambda d: _first(d, "timeseries").__setitem__("options", SENTINEL),
                     "null"),
    "thresholds-mode-typo": (
        lambda d: _first(d, "stat")["fieldConfig"]["defaults"]["thresholds"].__setitem__(
            "mode", SENTINEL),
        '"absolut"'),
}


def test_type_check_fails_on_broken_copies(tsc_dir: Path) -> None:
    expected: dict[str, int] = {}
    for name, (breaks, replacement) in BREAKAGES.items():
        broken = copy.deepcopy(load_dashboard())
        breaks(broken)
        file = f"broken-{name}.ts"
        text = write_check(tsc_dir / file, broken)
        line = next(i for i, s in enumerate(text.splitlines(), 1) if SENTINEL in s)
        (tsc_dir / file).write_text(text.replace(json.dumps(SENTINEL), replacement))
        expected[file] = line
    r = tsc(tsc_dir, sorted(expected))
    assert r.returncode != 0, "tsc accepted deliberately broken dashboards"
    errors: dict[str, set[int]] = {}
    for file, line, _code in TSC_ERROR.findall(r.stdout):
        errors.setdefault(file, set()).add(int(line))
    for file, line in expected.items():
        assert errors.get(file) == {line}, (
            f"{file}: expected one error at line {line}, got {errors.get(file)}\n{r.stdout}"
        )


def test_grafana_provisioning_files_load_the_dashboard_from_prometheus() -> None:
    """The quick path's provisioning files: a Prometheus data source where
    config/prometheus.yml's Prometheus listens, and a file provider whose folder README's
    quick path copies the dashboard into."""
    base = REPO / "grafana" / "provisioning"
    (source,) = yaml.safe_load((base / "datasources" / "crankshaft-prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    # never a name another data source may have, never the default: it must not take over
    assert source["name"] != "Prometheus" and source["isDefault"] is False
    scrape = yaml.safe_load((REPO / "config" / "prometheus.yml").read_text())["global"]
    assert source["jsonData"]["timeInterval"] == scrape["scrape_interval"]
    (provider,) = yaml.safe_load(
        (base / "dashboards" / "crankshaft-exporter.yml").read_text())["providers"]
    assert provider["type"] == "file"
    readme = (REPO / "README.md").read_text()
    assert f"{provider['options']['path']}/crankshaft-exporter.json" in readme
    for path in ("grafana/provisioning/datasources/crankshaft-prometheus.yml",
                 "grafana/provisioning/dashboards/crankshaft-exporter.yml"):
        assert path in readme


def test_no_value_texts_fit_their_panels() -> None:
    """A no-value text is a short hint (a stat panel 4 wide shows about 45 characters in
    its box); the detail is in the panel's description, which the (i) icon shows."""
    for p in walk_panels(load_dashboard()["panels"]):
        text = p.get("fieldConfig", {}).get("defaults", {}).get("noValue", "")
        room = 45 if p["type"] == "stat" else 60
        assert len(text) <= room, (p["title"], p["type"], len(text), text)

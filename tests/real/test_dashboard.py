"""The Grafana dashboard (grafana/crankshaft-exporter.json), checked without a Grafana server.

No Grafana can be installed here (shared/notes/real-components.md), so the dashboard is
checked the two ways that can be:

1. Every panel query against a real Prometheus (Debian's package) that scraped a real daemon
   fed realistic traffic through ``POST /metrics/record``: with the template variables
   substituted as Grafana would, each ``targets[].expr`` must parse and return data, and each
   variable query (``label_values``) must list what it should.  A fleet of three daemons
   under one job checks the ``instance`` variable and a multi-instance selection.
2. The dashboard JSON as a typed constant against npm ``@grafana/schema`` with ``tsc
   --strict``; a deliberately broken copy must fail where it was broken.

Plus structural rules a reviewer would otherwise check by eye: units and descriptions on
every panel, unique ids, a grid without overlaps, every selector scoped by ``$job`` and
``$instance``, ``__inputs``/``__requires`` for import.
"""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningDaemon, require_tool
from tests.helpers import poll
from tests.prometheus_server import PrometheusServer

pytestmark = pytest.mark.real

DASHBOARD_PATH = REPO / "grafana" / "crankshaft-exporter.json"
SCHEMA_DIR = Path(__file__).resolve().parent / "dashboard_schema"
JOB = "crankshaft"

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
    "none", "short", "decmbytes", "bytes", "percent", "percentunit", "s", "ms", "reqps",
    "cps", "dateTimeFromNow",
}
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
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
    return PrometheusServer(
        tmp_path, [{"job_name": JOB, "static_configs": [{"targets": instances}]}]
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
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] and d["title"]
    # The datasource input is used: the datasource variable defaults to the imported one.
    dsvar = variables(d)["datasource"]
    assert dsvar["type"] == "datasource" and dsvar["query"] == "prometheus"
    assert dsvar["current"]["value"] == "${DS_PROMETHEUS}"


def test_template_variables() -> None:
    v = variables(load_dashboard())
    assert variable_query(v["job"]) == "label_values(crankshaft_exporter_build_info, job)"
    assert (
        variable_query(v["instance"])
        == 'label_values(crankshaft_exporter_build_info{job=~"$job"}, instance)'
    )
    assert v["instance"]["multi"] and v["instance"]["includeAll"]
    for name in ("job", "instance", "endpoint"):
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
                if 'job=~"$job"' not in matchers or 'instance=~"$instance"' not in matchers:
                    problems.append(
                        f"{where} {t['refId']}: {metric}{{{matchers}}} is not scoped by "
                        '{job=~"$job",instance=~"$instance"}'
                    )
    assert not problems, "\n".join(problems)


def test_grid_layout_fits_and_does_not_overlap() -> None:
    panels = list(walk_panels(load_dashboard()["panels"]))
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


# --- every query against a real Prometheus ------------------------------------------------------

def test_every_panel_query_returns_data(daemon_factory, tmp_path: Path) -> None:
    require_tool("prometheus")
    d = load_dashboard()
    daemon = daemon_factory("--interval", "1")
    instance = f"127.0.0.1:{daemon.port}"
    with start_prometheus(tmp_path, [instance]) as prom:
        prom.wait_for_query(f'crankshaft_exporter_build_info{{job="{JOB}"}}')
        feed_rounds(daemon, prom, len(EXTENSION_ROUNDS))
        prom.wait_for_query(
            f'crankshaft_alert_active{{job="{JOB}",metric="extension_crashed",'
            'level="critical"} > 0'
        )

        # Variables, in dashboard order (each may use the ones before it).
        values = {"job": promql_regex(JOB), "instance": promql_regex(instance)}
        listed = {}
        for name, var in variables(d).items():
            if var["type"] != "query":
                continue
            listed[name] = label_values(prom, variable_query(var), values)
            assert listed[name], f"variable {name}: {variable_query(var)} lists nothing"
        assert JOB in listed["job"]
        assert instance in listed["instance"]
        assert set(ENDPOINTS) <= set(listed["endpoint"])
        values["endpoint"] = "|".join(promql_regex(e) for e in sorted(ENDPOINTS))

        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        failures: list[str] = []
        deadline = time.monotonic() + 30
        for panel, target in all_targets(d):
            key = (panel["title"], target["refId"])
            try:
                expr = substitute(target["expr"], values)
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
                    failures.append(f"{key}: no data for {expr!r}")
                    break
                time.sleep(0.25)
        assert not failures, "\n".join(failures)

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
                       ("Latency percentiles per endpoint (p50 / p95 / p99)", "B")):
        assert sorted(s["metric"]["endpoint"] for s in results[(title, ref)]) == sorted(ENDPOINTS)
    # The threshold series are the configured (default) thresholds.
    thresholds = {ref: float(results[("Memory usage", ref)][0]["value"][1]) for ref in "BC"}
    assert thresholds == {"B": 1536.0, "C": 2048.0}


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
            prom, variable_query(variables(d)["instance"]), {"job": promql_regex(JOB)}
        )
        assert sorted(listed) == instances

        panel = next(p for p in walk_panels(d["panels"]) if p.get("title") == "Memory usage")
        expr = next(t["expr"] for t in panel["targets"] if t["refId"] == "A")
        chosen = "|".join(promql_regex(i) for i in instances)  # a|b|c, as Grafana builds it
        all_value = variables(d)["instance"]["allValue"]  # the "All" option
        for instance_value in (chosen, all_value):
            query = substitute(expr, {"job": promql_regex(JOB), "instance": instance_value})
            series = poll(lambda q=query: prom.query(q), lambda s: len(s) == 3,
                          f"three series for {query}", 30, interval=0.2)
            assert sorted(s["metric"]["instance"] for s in series) == instances


# --- type check against @grafana/schema ------------------------------------------------------

CHECK_HEADER = """\
import type { Dashboard, VariableModel } from '@grafana/schema';

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
type DashboardFile = Omit<Json<Dashboard>, 'templating'> & { templating?: { list?: Variable[] } };

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

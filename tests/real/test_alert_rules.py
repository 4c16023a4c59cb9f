"""The generated Prometheus alerting rules against real promtool (Debian's prometheus package).

1. ``promtool check rules`` accepts the committed default rules and rules generated from a
   config with ``for``, hysteresis and endpoint/extension selectors (special characters too).
2. Equivalence: each scenario is a sequence of values at a fixed step.  The exporter's own
   AlertEvaluator is fed them (``evaluate(i * step, {(metric, label): value})``), and after
   every step its ``firing()`` levels become promtool ``alert_rule_test`` expectations, with
   exact labels and annotations, at that step's eval_time; the same values are promtool
   ``input_series`` (the exposition series the exporter would serve), evaluated by
   Prometheus' rule engine against the generated rules.  promtool passes only if Prometheus
   fires exactly the alerts the exporter fires, at every step.

Annotations are rendered the way Prometheus renders them: ``{{ $labels.X }}`` is the label
value as is (text/template, no HTML escaping) and ``{{ $value }}`` is Go's ``%v`` of the
float64 (checked against promtool: 1600 -> 1600, 85.5 -> 85.5, 1234567 -> 1.234567e+06,
1e-05 -> 1e-05).  The annotation templates are taken from the generated rules themselves;
anything else left in braces fails the test, so a new template construct cannot slip by.

Every input series has a value at every step.  A value absent from an evaluation means
"hold state" to the exporter's evaluator, while Prometheus keeps evaluating the last sample
(for up to 5 minutes of lookback, then the series is gone and the alert resolves); the
exporter's exposition keeps serving the last value, so the two agree on the level but not on
``for`` timing during the gap.  That is not claimed equivalent and not tested here.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from exporter.alerts.evaluator import AlertEvaluator
from exporter.alerts.rules import CRITICAL, DEFAULT_RULES, WARNING, AlertRule
from exporter.config import Config, load_config
from exporter.promrules import (
    HEALTH_RULES,
    alert_name,
    build_rules,
    render_rules,
    value_exprs,
)
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.real

COMMITTED = REPO / "config" / "crankshaft-exporter.rules.yml"
STEP_S = 60  # evaluation_interval and input series interval: 1m
JOB, INSTANCE = "crankshaft", "pi:9001"
EXT = "extension_crashed"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool")


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


# --- rendering as Prometheus does -----------------------------------------------------------


def go_float(v: float) -> str:
    """Go's fmt %v of a float64 (strconv 'g', shortest digits, exponent from 1e+06 / below
    1e-04), which is what Prometheus' ``{{ $value }}`` prints."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if str(v).startswith("-") else "0"
    d = Decimal(repr(float(v))).normalize()  # repr: the shortest round-tripping digits
    sign, digits, exponent = d.as_tuple()
    exp10 = len(digits) + exponent - 1
    text = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:  # shortest: Go decides with precision 6
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{text}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return text + format(abs(d), "f")


def test_go_float_matches_prometheus_formatting():
    cases = {
        1600.0: "1600",
        85.5: "85.5",
        1234567.0: "1.234567e+06",
        0.0001: "0.0001",
        1e-05: "1e-05",
        1e21: "1e+21",
        2500000.0: "2.5e+06",
        100000.0: "100000",
        123456.5: "123456.5",
        0.1: "0.1",
        1.0: "1",
        0.0: "0",
        -2.5: "-2.5",
    }
    assert {v: go_float(v) for v in cases} == cases


BRACES = "\0"  # stands for a literal "{{" while the template constructs are replaced
THRESHOLD_LOOKUP = re.compile(
    r'\{\{ with printf "crankshaft_alert_threshold\{job=%q,instance=%q,vehicle=%q,metric=%q,'
    r'level=%q,selector=%q\}" \$labels\.job \$labels\.instance \$labels\.vehicle "(\w+)" '
    r'"(\w+)" (""|\$labels\.\w+) '
    r'\| query \}\}\{\{ \. \| first \| value \| printf "(%\.\d+f)" \}\}\{\{ end \}\}'
)


def expand(template: str, labels: dict[str, str], value: float, threshold: float | None) -> str:
    """The annotation as Prometheus renders it: ``$labels``, ``$value`` printed with printf,
    ``with $labels.vehicle``, and the instance's threshold looked up with ``query`` (given
    here as ``threshold``, the one the instance publishes)."""
    text = template.replace('{{ "{{" }}', BRACES)
    text = text.replace("{{ $value }}", go_float(value))
    text = re.sub(r'\{\{ \$value \| printf "(%\.\d+f)" \}\}', lambda m: m[1] % value, text)
    text = re.sub(
        r"\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ \. \}\}(.*?)\{\{ end \}\}",
        lambda m: f"{m[2]}{labels[m[1]]}{m[3]}" if labels.get(m[1]) else "",
        text,
    )

    def lookup(m: re.Match[str]) -> str:
        assert threshold is not None, f"no threshold for {m[0]}"
        return m[4] % threshold

    text = THRESHOLD_LOOKUP.sub(lookup, text)
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
    assert "{{" not in text, f"template construct this test cannot render: {template!r}"
    return text.replace(BRACES, "{{")


def series_text(name: str, labels: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return name + "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Feed:
    """One evaluator input (metric, label) and the exposition series carrying it."""

    key: tuple[str, str]
    values: list[float]  # what the exporter's evaluator sees at each step
    series: str  # exposition metric name
    labels: dict[str, str] = field(default_factory=dict)  # besides job and instance
    expose: Callable[[float], float] = lambda v: v  # evaluator value -> exposed sample
    # labels the series carries but the alert expression aggregates away (a state set's)
    series_only: dict[str, str] = field(default_factory=dict)


@dataclass
class Member:
    """One exporter of a fleet: its instance, its own rules (the thresholds it publishes and
    evaluates), its values, and labels its scrape config adds (such as ``vehicle``)."""

    instance: str
    rules: list[AlertRule]
    feeds: list[Feed]
    extra_series: list[tuple[str, list[float]]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    name: str
    rules: list[AlertRule]  # what the rules file is generated from
    feeds: list[Feed]
    extra_series: list[tuple[str, list[float]]] = field(default_factory=list)
    must_fire: set[tuple[str, str, str]] = field(default_factory=set)
    rule_file: Path | None = None  # default: render_rules(rules)
    fleet: list[Member] | None = None  # default: one exporter at INSTANCE with `rules`

    def members(self) -> list[Member]:
        if self.fleet is not None:
            return self.fleet
        return [Member(INSTANCE, self.rules, self.feeds, self.extra_series)]


def seq(text: str) -> list[float]:
    """Values as promtool writes them: "1 2.5 3"."""
    return [float(v) for v in text.split()]


def memory(values: str) -> Feed:
    return Feed(("memory_usage", ""), seq(values), "crankshaft_memory_usage_mb")


def cpu(values: str) -> Feed:
    return Feed(("cpu_usage", ""), seq(values), "crankshaft_cpu_usage_percent")


def conns(values: str) -> Feed:
    return Feed(("active_connections", ""), seq(values), "crankshaft_websocket_active_connections")


def latency(values: str) -> Feed:
    return Feed(("request_latency", ""), seq(values), "crankshaft_request_latency_ms")


def target_down(up: str) -> Feed:
    """Given as crankshaft_target_up (1 up, 0 down); the evaluator sees target_down = 1 - up."""
    down = [1.0 - u for u in seq(up)]
    return Feed(("target_down", ""), down, "crankshaft_target_up", expose=lambda v: 1.0 - v)


def crashed(extension: str, flags: str) -> tuple[Feed, tuple[str, list[float]]]:
    """crankshaft_extension_status{status="crashed"} (the evaluator's input) and the
    status="running" series beside it, which the rules must not pick up."""
    labels = {"extension": extension, "status": "crashed"}
    feed = Feed((EXT, extension), seq(flags), "crankshaft_extension_status", labels)
    running = series_text(
        "crankshaft_extension_status",
        {"job": JOB, "instance": INSTANCE, "extension": extension, "status": "running"},
    )
    return feed, (running, [1.0 - f for f in seq(flags)])


THROTTLING = "crankshaft_board_throttling"
THROTTLE_STATES = ("under_voltage", "frequency_capped", "throttled", "soft_temperature_limit")


def temperature(values: str) -> Feed:
    return Feed(("cpu_temperature", ""), seq(values), "crankshaft_board_cpu_temperature_celsius")


def under_voltage_now(flags: str, since_boot: str) -> tuple[Feed, list[tuple[str, list[float]]]]:
    """board_throttled as the evaluator sees it (the mask, here bit 0: under-voltage) and the
    state set the exposition carries: the other three states now (0), and since boot (which
    the when="now" rule must not pick up)."""
    feed = Feed(("board_throttled", ""), seq(flags), THROTTLING, {"when": "now"},
                series_only={THROTTLING: "under_voltage"})
    steps = len(feed.values)
    extra = [(series_text(THROTTLING, {"job": JOB, "instance": INSTANCE, "when": "now",
                                       THROTTLING: state}), [0.0] * steps)
             for state in THROTTLE_STATES[1:]]
    extra += [(series_text(THROTTLING, {"job": JOB, "instance": INSTANCE, "when": "since_boot",
                                        THROTTLING: state}), seq(since_boot))
              for state in THROTTLE_STATES]
    return feed, extra


def ext_scenario(
    name: str, rules: list[AlertRule], flags: dict[str, str], must_fire: set[tuple[str, ...]]
) -> Scenario:
    pairs = [crashed(ext, f) for ext, f in flags.items()]
    return Scenario(name, rules, [p[0] for p in pairs], [p[1] for p in pairs], must_fire)


W, C = WARNING, CRITICAL
ODD = "(x)* {id}?#~& ü"

SCENARIOS = [
    Scenario(
        "defaults",  # the committed rules file, every default rule at once
        list(Config.default().alerts),
        [  # the shipped `for`: 5m on the four seed rules, 2m on target_down
            memory("1000 1537 2049 2100 2100 2100 2049 2049 1600 1536 900 2500 1000 1000"),
            cpu("10 70 70.5 95 90 89.9 95 95 95 95 95 95 91 12.25"),
            conns("0 51 101 100 55 60 150 150 150 150 150 150 150 55"),
            latency("100 501 1001.5 999 1500 1500 1500 1200 1100 1000.25 1001 999 20 20"),
            target_down("1 1 0 0 1 0 0 0 1 0 1 1 1 1"),
            crashed("nav", "0 1 1 0 0 1 0 0 0 0 1 1 0 0")[0],
            crashed("media", "0 0 0 1 1 1 0 1 0 0 0 0 0 1")[0],
        ],
        [crashed("nav", "0 1 1 0 0 1 0 0 0 0 1 1 0 0")[1],
         crashed("media", "0 0 0 1 1 1 0 1 0 0 0 0 0 1")[1]],
        {
            ("memory_usage", "", W),
            ("memory_usage", "", C),
            ("cpu_usage", "", W),
            ("cpu_usage", "", C),
            ("active_connections", "", C),
            ("request_latency", "", C),
            ("target_down", "", C),
            (EXT, "nav", C),
            (EXT, "media", C),
        },
        rule_file=COMMITTED,
    ),
    Scenario(
        "memory_up_and_down",  # warning, then critical beside it, then back; strict >
        [DEFAULT_RULES[0]],
        [
            memory(
                "1000 1536 1536.5 1600 2047 2048 2048.5 3000 "
                "2049 2048 1700 1536 1535 2100 1537 85.5 1600"
            )
        ],
        must_fire={("memory_usage", "", W), ("memory_usage", "", C)},
    ),
    Scenario(
        "cpu_for_2m",  # pending periods, dips resetting them, exactly-at-threshold values
        [AlertRule("cpu_usage", 70, 90, "CPU usage high", for_seconds=120)],
        [
            cpu(
                "50 75 80 85 95 95 95 60 75 95 72 91 92 93 "
                "93 50 71 71 69 71 71 71 90 90 90 70 70.5 70.5 70.5"
            )
        ],
        must_fire={("cpu_usage", "", W), ("cpu_usage", "", C)},
    ),
    Scenario(
        "cpu_for_90s",  # a `for` that is not a multiple of the step: fires on the 3rd step
        [AlertRule("cpu_usage", 70, None, "", for_seconds=90)],
        [cpu("75 75 60 75 75 75 75 0 75 75")],
        must_fire={("cpu_usage", "", W)},
    ),
    Scenario(
        "connections_hysteresis",  # hovering around thresholds and clear thresholds
        [AlertRule("active_connections", 50, 100, "Too many", warning_clear=40, critical_clear=80)],
        [
            conns(
                "45 50 51 45 41 40 45 55 100 101 90 81 80 "
                "85 101 45 39 45 30 101 41 40.5 40 99 100.5 80.5 80"
            )
        ],
        must_fire={("active_connections", "", W), ("active_connections", "", C)},
    ),
    Scenario(
        "connections_hysteresis_for_1m",  # pending does not get hysteresis, firing does
        [
            AlertRule(
                "active_connections", 50, 100, for_seconds=60, warning_clear=40, critical_clear=80
            )
        ],
        [conns("51 45 51 51 45 41 40 51 45 101 101 90 101 45 101 85 85 79 60 39")],
        must_fire={("active_connections", "", W), ("active_connections", "", C)},
    ),
    ext_scenario(
        "extension_crashed_per_extension",
        [DEFAULT_RULES[4]],
        {"nav": "0 1 1 0 1 0 0", "media": "0 0 1 1 1 1 0", "bt": "0 0 0 0 0 0 0"},
        {(EXT, "nav", C), (EXT, "media", C)},
    ),
    ext_scenario(
        # Selector rules on names full of regex/PromQL specials, each beside a near miss
        # that an unescaped regex would wrongly hand to the selector rule (or silence).
        "extension_selectors",
        [
            AlertRule(EXT, None, 0, "Extension crashed"),
            AlertRule(EXT, 0, 0.5, "Navigation crashed", for_seconds=120, selector="nav.v2"),
            AlertRule(EXT, None, 0, "", selector="a|b"),
            AlertRule(EXT, None, 0, "quoted", for_seconds=60, selector='q"x\\y'),
            AlertRule(EXT, None, 0, "silenced", enabled=False, selector="p+"),
            AlertRule(EXT, None, 0, "odd", selector=ODD),
        ],
        {
            "nav.v2": "0 1 1 1 1 0 1 1 1",
            "navXv2": "0 1 1 0 0 0 1 0 0",
            "a|b": "1 1 0 0 1 0 0 0 1",
            "a": "0 1 1 0 0 0 0 0 0",
            "b": "0 0 0 1 0 0 0 0 0",
            'q"x\\y': "1 1 1 0 1 1 0 1 1",
            "p+": "1 1 1 1 1 1 1 1 1",
            "pp": "0 0 1 1 0 0 0 0 0",
            ODD: "0 1 0 0 0 0 1 1 0",
            "x": "0 0 0 0 1 0 0 0 0",
        },
        {
            *((EXT, ext, C) for ext in ("nav.v2", "navXv2", "a|b", "a", "b", "pp", ODD, "x")),
            (EXT, "nav.v2", W),
            (EXT, 'q"x\\y', C),
        },
    ),
    Scenario(
        # main's board_health series: a declared gauge in °C with hysteresis, and a state
        # set compared as "how many states are set"
        "board_health",
        [AlertRule("cpu_temperature", 70, 80, "Board hot", warning_clear=65),
         AlertRule("board_throttled", None, 0, "Board throttled")],
        [temperature("50 71 75 81.5 79 66 64.5 70.5 85 60"),
         under_voltage_now("0 0 1 1 0 0 1 0 0 0", "1 1 1 1 1 1 1 1 1 1")[0]],
        under_voltage_now("0 0 1 1 0 0 1 0 0 0", "1 1 1 1 1 1 1 1 1 1")[1],
        must_fire={("cpu_temperature", "", W), ("cpu_temperature", "", C),
                   ("board_throttled", "", C)},
    ),
    Scenario(
        "target_down",
        [DEFAULT_RULES[5]],
        [target_down("1 0 0 1 0 1 1 0 0 0 1")],
        must_fire={("target_down", "", C)},
    ),
    Scenario(
        "target_down_for_2m",
        [AlertRule("target_down", None, 0, "Target process not running", for_seconds=120)],
        [target_down("1 0 0 1 0 0 0 0 1 0")],
        must_fire={("target_down", "", C)},
    ),
]


def shipped_with(**changes: dict[str, object]) -> list[AlertRule]:
    """The shipped rules with some thresholds changed, as another car's YAML would have them
    (same metrics, levels and `for`: those are what the rules file fixes)."""
    return [replace(r, **changes.get(r.metric, {})) for r in Config.default().alerts]


def fleet_feeds(mem: str, cpu_values: str) -> list[Feed]:
    steps = len(mem.split())
    return [memory(mem), cpu(cpu_values), target_down(" ".join(["1"] * steps))]


FLEET_MEMORY = "1100 1100 1250 1250 1250 1250 1250 1250 950 950 850 850 1600 1600"
FLEET = Scenario(
    # One rules file (the committed one, from the shipped config) for two cars whose YAML
    # set different thresholds: each fires at its own, with its own hysteresis.
    "fleet_own_thresholds",
    list(Config.default().alerts),
    [],
    fleet=[
        Member("car-a:9001", shipped_with(), fleet_feeds(FLEET_MEMORY, "75 " * 14),
               labels={"vehicle": "van-1"}),
        Member(
            "car-b:9001",
            shipped_with(
                memory_usage={"warning_threshold": 1000.0, "critical_threshold": 1200.0,
                              "warning_clear": 900.0},
                cpu_usage={"warning_threshold": 80.0},
            ),
            fleet_feeds(FLEET_MEMORY, "75 " * 14),
            labels={"vehicle": "van-2"},
        ),
    ],
    must_fire={("memory_usage", "", W), ("memory_usage", "", C), ("cpu_usage", "", W)},
    rule_file=COMMITTED,
)
SCENARIOS.append(FLEET)


def test_fleet_scenario_members_differ_only_by_their_thresholds():
    """The fleet scenario does test per-instance thresholds: same values, different alerts."""
    a, b = FLEET.members()
    assert [m.feeds[0].values for m in (a, b)] == [a.feeds[0].values] * 2
    fired = [{x for step in evaluate_rules(m.rules, m.feeds) for x in step} for m in (a, b)]
    assert fired[0] == {("cpu_usage", "", W)}  # 75 % is above car A's 70, not car B's 80
    assert fired[1] == {("memory_usage", "", W), ("memory_usage", "", C)}
    # car B's warning holds from 950 down to its clear threshold of 900 (hysteresis)
    levels = [sorted(lvl for met, _, lvl in step if met == "memory_usage")
              for step in evaluate_rules(b.rules, b.feeds)]
    assert levels[8:11] == [[W], [W], []]


# --- building the promtool test -------------------------------------------------------------


def specific_rule(rules: list[AlertRule], metric: str, label: str) -> AlertRule | None:
    """The rule the evaluator applies to (metric, label): its own selector rule if any."""
    return next((r for r in rules if r.metric == metric and r.selector == label), None) or next(
        (r for r in rules if r.metric == metric and r.selector is None), None
    )


def rule_entry(doc: dict, rule: AlertRule, level: str) -> dict:
    """The generated Prometheus rule for one level of one exporter rule."""
    identity = value_exprs()[rule.metric][1]
    label = identity[0] if identity else None
    (entry,) = [
        e
        for e in doc["groups"][0]["rules"]
        if e["alert"] == alert_name(rule.metric)
        and e["labels"]["severity"] == level.lower()
        and (e["labels"].get(label) if label else None) == rule.selector
    ]
    return entry


def evaluate_rules(rules: list[AlertRule], feeds: list[Feed]) -> list[list[tuple[str, str, str]]]:
    """firing() of the exporter's evaluator after each step."""
    steps = len(feeds[0].values)
    assert all(len(f.values) == steps for f in feeds), "feeds of unequal length"
    ev = AlertEvaluator(rules)
    timeline = []
    for i in range(steps):
        ev.evaluate(i * STEP_S * 1000.0, {f.key: f.values[i] for f in feeds})
        timeline.append(sorted(ev.firing()))
    return timeline


def evaluate(scenario: Scenario) -> list[list[tuple[str, str, str]]]:
    return evaluate_rules(scenario.rules, scenario.feeds)


def threshold_series(member: Member, steps: int) -> list[dict[str, str]]:
    """What the member's exporter publishes for its rules (exposition._alerts): each enabled
    rule's threshold and clear threshold per level, constant over the scenario."""
    out = []
    for rule in member.rules:
        if not rule.enabled:
            continue
        for level in (WARNING, CRITICAL):
            if rule.threshold(level) is None:
                continue
            labels = {"job": JOB, "instance": member.instance, **member.labels,
                      "metric": rule.metric, "level": level.lower(),
                      "selector": rule.selector or ""}
            for family, value in (("crankshaft_alert_threshold", rule.threshold(level)),
                                  ("crankshaft_alert_clear_threshold",
                                   rule.clear_threshold(level))):
                out.append({"series": series_text(family, labels),
                            "values": " ".join([repr(float(value))] * steps)})
    return out


def promtool_test(scenario: Scenario, rule_file: Path) -> tuple[dict, list]:
    rules_doc = yaml.safe_load(rule_file.read_text())
    alertnames = sorted({e["alert"] for e in rules_doc["groups"][0]["rules"]})
    members = scenario.members()
    steps = len(members[0].feeds[0].values)
    input_series: list[dict[str, str]] = []
    expected: list[dict[str, list]] = [{name: [] for name in alertnames} for _ in range(steps)]
    timeline: list[list[tuple[str, str, str]]] = [[] for _ in range(steps)]
    for member in members:
        base = {"job": JOB, "instance": member.instance, **member.labels}
        feeds = {f.key: f for f in member.feeds}
        input_series += [
            {
                "series": series_text(f.series, {**base, **f.labels, **f.series_only}),
                "values": " ".join(repr(float(f.expose(v))) for v in f.values),
            }
            for f in member.feeds
        ] + [
            {"series": s, "values": " ".join(repr(float(v)) for v in vals)}
            for s, vals in member.extra_series
        ] + threshold_series(member, steps)
        for i, firing in enumerate(evaluate_rules(member.rules, member.feeds)):
            timeline[i] += firing
            for metric, label, level in firing:
                feed = feeds[(metric, label)]
                rule = specific_rule(member.rules, metric, label)
                entry = rule_entry(rules_doc, rule, level)
                labels = {"severity": level.lower(), "metric": metric, **base, **feed.labels}
                value = feed.values[i]  # the alert expression's value (before the comparison)
                expected[i][alert_name(metric)].append(
                    {
                        "exp_labels": labels,
                        "exp_annotations": {
                            k: expand(v, labels, value, rule.threshold(level))
                            for k, v in entry["annotations"].items()
                        },
                    }
                )
    tests = []
    for i in range(steps):
        for name in alertnames:
            tests.append(
                {"eval_time": f"{i * STEP_S}s", "alertname": name, "exp_alerts": expected[i][name]}
            )
    doc = {
        "rule_files": [str(rule_file)],
        "evaluation_interval": f"{STEP_S}s",
        "tests": [
            {"interval": f"{STEP_S}s", "input_series": input_series, "alert_rule_test": tests}
        ],
    }
    return doc, timeline


def write_rules(scenario: Scenario, tmp_path: Path) -> Path:
    if scenario.rule_file is not None:
        return scenario.rule_file
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(scenario.rules, STEP_S))
    return path


def promtool_rules_test(promtool: str, doc: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000))
    return run([promtool, "test", "rules", str(path)], tmp_path)


# --- 1. promtool check rules ----------------------------------------------------------------


def test_committed_default_rules_pass_promtool_check(promtool, tmp_path):
    proc = run([promtool, "check", "rules", str(COMMITTED)], tmp_path)
    assert proc.returncode == 0, output(proc)
    # ten threshold rules (the shipped config), the offline/self-monitoring rules, and the
    # fleet group's recorded last-seen time and three alerts
    expected = 10 + len(HEALTH_RULES) + 4
    assert f"SUCCESS: {expected} rules found" in proc.stdout + proc.stderr, output(proc)


CONFIG = r"""
interval: 15s
alerts:
  - {metric: memory_usage, warning: 1536, critical: 2048, warning_clear: 1400,
     critical_clear: 1900, for: 90s, description: "Memory usage high: it's 'big'"}
  - {metric: cpu_usage, warning: 70.5, critical: 90, for: 2m, description: CPU usage high}
  - {metric: active_connections, warning: 50, critical: 100, warning_clear: 40}
  - {metric: total_connections, warning: 10000}
  - {metric: request_latency, critical: 1000, for: 500ms}
  - {metric: request_latency_p95, warning: 500, critical: 1000, warning_clear: 450}
  - {metric: request_latency_p95, critical: 200, endpoint: /api/v1/items.json}
  - {metric: request_latency_p95, warning: 100, endpoint: "/search?q=(a|b)*[x]{y}$"}
  - {metric: request_latency_p95, warning: 100, endpoint: 'say "hi" \back\slash ü'}
  - {metric: request_latency_p99, critical: 2000, for: 1h30m, critical_clear: 1500}
  - {metric: request_latency_p99, critical: 50, endpoint: /health, enabled: false}
  - {metric: extension_crashed, critical: 0}
  - {metric: extension_crashed, critical: 0, for: 1m, extension: nav.v2, critical_clear: 0}
  - {metric: extension_crashed, warning: 0, critical: 0.5, critical_clear: 0.25,
     extension: "a|b+"}
  - {metric: target_down, critical: 0, for: 30s}
"""


def test_rules_from_a_config_with_for_hysteresis_and_selectors_pass_promtool_check(
    promtool, tmp_path
):
    cfg = tmp_path / "exporter.yaml"
    cfg.write_text(CONFIG)
    proc = run([sys.executable, "-m", "exporter", "alert-rules", "--config", str(cfg)], REPO)
    assert proc.returncode == 0, output(proc)
    config = load_config(cfg)
    assert proc.stdout == render_rules(config.alerts, config.interval)
    count = sum(len(g["rules"]) for g in build_rules(config.alerts)["groups"])
    assert count == 19 + len(HEALTH_RULES) + 4
    rules = tmp_path / "rules.yml"
    rules.write_text(proc.stdout)
    check = run([promtool, "check", "rules", str(rules)], tmp_path)
    assert check.returncode == 0, output(check)
    assert f"SUCCESS: {count} rules found" in check.stdout + check.stderr, output(check)
    text = proc.stdout
    assert "for: 1m30s" in text and "for: 2m" in text and "for: 500ms" in text
    assert "for: 1h30m" in text and "for: 30s" in text and "ALERTS{" in text


def test_template_braces_in_description_or_selector_pass_promtool_check(promtool, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(
        render_rules(
            [
                AlertRule("cpu_usage", 70, None, "CPU {{ very }} high"),
                AlertRule("request_latency_p95", 100, None, "slow", selector="/users/{{id}}"),
            ]
        )
    )
    check = run([promtool, "check", "rules", str(rules)], tmp_path)
    assert check.returncode == 0, output(check)


# --- 2. equivalence with the exporter's evaluator -------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_prometheus_fires_exactly_what_the_exporter_fires(promtool, tmp_path, scenario):
    doc, timeline = promtool_test(scenario, write_rules(scenario, tmp_path))
    fired = {alert for step in timeline for alert in step}
    assert scenario.must_fire <= fired, f"scenario does not exercise {scenario.must_fire - fired}"
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode == 0, output(proc)


def test_scenario_timelines_are_what_they_claim():
    """The evaluator side of a few scenarios spelled out, so the scenarios keep testing the
    cases they are named after (pending, dips resetting, hysteresis holding)."""

    def levels(name: str) -> str:
        (s,) = [s for s in SCENARIOS if s.name == name]
        return " ".join(
            "".join(lvl[0] for _, _, lvl in sorted(step, key=lambda a: a[2], reverse=True)) or "-"
            for step in evaluate(s)
        )

    # cpu 70/90 for 2m: 50 75 80 85 95 95 95 60 75 95 72 91 92 93 93 50 71 71 69 71 71 71
    #                   90 90 90 70 70.5 70.5 70.5
    assert levels("cpu_for_2m") == ("- - - W W W WC - - - W W W WC WC - - - - - - W W W W - - - W")
    # 75 75 60 75 75 75 75 0 75 75, for 90s at a 60s step: fires 2 steps after activation
    assert levels("cpu_for_90s") == "- - - - - W W - - -"
    # conns 50/100 clear 40/80: 45 50 51 45 41 40 45 55 100 101 90 81 80 85 101 45 39 45
    #                           30 101 41 40.5 40 99 100.5 80.5 80
    assert levels("connections_hysteresis") == (
        "- - W W W - - W W WC WC WC W W WC W - - - WC W W - W WC WC W"
    )
    # for 1m, clear 40/80: 51 45 51 51 45 41 40 51 45 101 101 90 101 45 101 85 85 79 60 39
    assert levels("connections_hysteresis_for_1m") == ("- - - W W W - - - - WC WC WC W W W W W W -")
    # temperature 70/80 clear 65: 50 71 75 81.5 79 66 64.5 70.5 85 60; under-voltage now
    # 0 0 1 1 0 0 1 0 0 0 (critical above 0; since boot always set, never its input)
    assert levels("board_health") == "- W WC WCC W W C W WC -"


@pytest.mark.parametrize("mutation", ["drop", "severity", "value", "extra"])
def test_promtool_fails_when_an_expected_alert_is_wrong(promtool, tmp_path, mutation):
    """The equivalence check can fail: one wrong expectation makes promtool exit non-zero."""
    (scenario,) = [s for s in SCENARIOS if s.name == "memory_up_and_down"]
    good, _ = promtool_test(scenario, write_rules(scenario, tmp_path))
    doc = copy.deepcopy(good)
    cases = doc["tests"][0]["alert_rule_test"]
    case = next(c for c in cases if len(c["exp_alerts"]) == 2)  # warning and critical
    if mutation == "drop":
        case["exp_alerts"].pop()
    elif mutation == "severity":
        case["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    elif mutation == "value":
        annotations = case["exp_alerts"][0]["exp_annotations"]
        annotations["description"] = annotations["description"].replace(" is ", " is 1", 1)
    else:
        quiet = next(c for c in cases if not c["exp_alerts"])
        quiet["exp_alerts"] = copy.deepcopy(case["exp_alerts"][:1])
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode != 0, output(proc)
    assert "FAILED" in proc.stdout + proc.stderr, output(proc)


def test_thresholds_with_seven_significant_digits_are_equivalent(promtool, tmp_path):
    scenario = Scenario(
        "seven_digits",
        [AlertRule("total_connections", 1234567, None, "many connections")],
        [
            Feed(
                ("total_connections", ""),
                seq("1234560 1234568 1234569.5 1234567 1234570 1234580"),
                "crankshaft_websocket_connections_total",
            )
        ],
    )
    doc, _ = promtool_test(scenario, write_rules(scenario, tmp_path))
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode == 0, output(proc)


# --- 3. the exporter or the car offline, and self-monitoring ------------------------------------

HEALTH = {e["alert"]: e for e in yaml.safe_load(COMMITTED.read_text())["groups"][1]["rules"]}
CAR = {"job": JOB, "instance": "car-a:9001", "vehicle": "van-1"}


def health_alert(name: str, value: float, **labels: str) -> dict:
    """The expected alert of a health rule: its labels and its rendered annotations."""
    entry = HEALTH[name]
    all_labels = {**entry["labels"], **labels}
    return {
        "exp_labels": all_labels,
        "exp_annotations": {
            k: expand(v, all_labels, value, None) for k, v in entry["annotations"].items()
        },
    }


def health_case(series: dict[str, str], checks: list[tuple[str, str, list[dict]]]) -> dict:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": t, "alertname": name, "exp_alerts": alerts} for t, name, alerts in checks
        ],
    }


def test_offline_rules_fire_when_an_always_on_machine_goes_offline(promtool, tmp_path):
    """A scraped machine without a `vehicle` label (a home lab's head unit on the bench, a
    server): memory at 2100 MiB, then `up` drops to 0 and the exporter's series stop.  The
    memory alerts resolve once the samples go stale (5 minutes) and CrankshaftExporterDown
    replaces them; a target removed from the targets is reported as gone, a target that
    answers without the exporter's metrics as missing them.  (Cars, with a `vehicle` label:
    tests/real/test_fleet_rules.py.)"""
    machine = {"job": JOB, "instance": "pi:9001"}
    car, gone = machine, {**machine, "instance": "pi-b:9001"}
    other = {**machine, "instance": "pi-c:9001"}
    thresholds = {
        series_text(f, {**car, "metric": "memory_usage", "level": lvl, "selector": ""}): f"{v}x9"
        for f in ("crankshaft_alert_threshold", "crankshaft_alert_clear_threshold")
        for lvl, v in (("warning", 1536), ("critical", 2048))
    }
    memory_alerts = [
        {
            "exp_labels": {"severity": lvl, "metric": "memory_usage", **car},
            "exp_annotations": {
                k: expand(v, {"severity": lvl, "metric": "memory_usage", **car}, 2100, t)
                for k, v in rule_entry(
                    yaml.safe_load(COMMITTED.read_text()), Config.default().alerts[0], lvl.upper()
                )["annotations"].items()
            },
        }
        for lvl, t in (("warning", 1536.0), ("critical", 2048.0))
    ]
    case = health_case(
        {
            series_text("up", car): "1x9 0x30",
            series_text("crankshaft_memory_usage_mb", car): "2100x9",
            series_text("crankshaft_exporter_build_info", car): "1x9",
            **thresholds,
            series_text("up", gone): "1x9",  # removed from the scrape targets at 10m
            series_text("crankshaft_exporter_build_info", gone): "1x9",
            series_text("up", other): "1x30",  # answers, but is not the exporter
        },
        [
            ("8m", "CrankshaftMemoryUsage", memory_alerts),
            ("8m", "CrankshaftExporterDown", []),
            ("12m", "CrankshaftMemoryUsage", memory_alerts),  # last sample still fresh
            ("12m", "CrankshaftExporterDown", []),  # pending: down for 2 of 5 minutes
            ("20m", "CrankshaftMemoryUsage", []),  # stale, resolved ...
            ("20m", "CrankshaftExporterDown", [health_alert("CrankshaftExporterDown", 0, **car)]),
            ("20m", "CrankshaftExporterGone", [health_alert("CrankshaftExporterGone", 1, **gone)]),
            ("20m", "CrankshaftMetricsMissing",
             [health_alert("CrankshaftMetricsMissing", 1, **other)]),
            ("20m", "CrankshaftNoTargets", []),
        ],
    )
    nothing = health_case(
        {series_text("up", {**car, "job": "node"}): "1x20"},
        [
            ("5m", "CrankshaftNoTargets", []),  # pending for 10m
            ("15m", "CrankshaftNoTargets", [health_alert("CrankshaftNoTargets", 1, job=JOB)]),
        ],
    )
    doc = {"rule_files": [str(COMMITTED)], "evaluation_interval": "1m", "tests": [case, nothing]}
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode == 0, output(proc)


def test_self_monitoring_rules_fire_on_their_inputs(promtool, tmp_path):
    """A rejected reload, a source failing every tick, a notifier failing and dropping, the
    endpoint and extension caps refusing input: each fires its rule, nothing else does."""
    am = {**CAR, "notifier": "alertmanager"}
    dropped = {**CAR, "notifier": "webhook:http://hooks.example/x", "reason": "queue_full"}
    source = {**CAR, "source": "process"}
    case = health_case(
        {
            series_text("crankshaft_config_last_reload_successful", CAR): "1x4 0x30",
            series_text("crankshaft_collection_errors_total", source): "0+1x30",
            series_text("crankshaft_notifications_failed_total", am): "0+1x30",
            series_text("crankshaft_notifications_dropped_total", dropped): "0x10 5x20",
            series_text("crankshaft_latency_dropped_observations_total", CAR): "0x10 30x20",
            series_text("crankshaft_extension_dropped_updates_total", CAR): "0x10 3x20",
            # a healthy car beside it: none of its counters move
            series_text("crankshaft_config_last_reload_successful", {**CAR, "instance": "ok"}):
                "1x30",
            series_text("crankshaft_collection_errors_total", {**source, "instance": "ok"}):
                "2x30",
            # a source failing every collection from 5m on, beside a healthy one
            series_text("crankshaft_source_up", source): "1x4 0x30",
            series_text("crankshaft_source_up", {**source, "source": "connections"}): "1x30",
        },
        [
            ("10m", "CrankshaftConfigReloadFailed", []),  # failed 6 minutes ago: pending
            ("16m", "CrankshaftConfigReloadFailed",
             [health_alert("CrankshaftConfigReloadFailed", 0, **CAR)]),
            ("20m", "CrankshaftCollectionErrors",
             [health_alert("CrankshaftCollectionErrors", 10, **source)]),
            ("12m", "CrankshaftSourceFailing", []),  # failing most of the window: pending
            ("20m", "CrankshaftSourceFailing",
             [health_alert("CrankshaftSourceFailing", 0, **source)]),
            ("20m", "CrankshaftNotificationsFailing",
             [health_alert("CrankshaftNotificationsFailing", 10, **am)]),
            ("9m", "CrankshaftNotificationsDropped", []),
            ("15m", "CrankshaftNotificationsDropped",
             [health_alert("CrankshaftNotificationsDropped", 5, **dropped)]),
            ("15m", "CrankshaftLatencyObservationsDropped",
             [health_alert("CrankshaftLatencyObservationsDropped", 30, **CAR)]),
            ("15m", "CrankshaftExtensionUpdatesDropped",
             [health_alert("CrankshaftExtensionUpdatesDropped", 3, **CAR)]),
            ("29m", "CrankshaftExtensionUpdatesDropped", []),  # nothing new for 10 minutes
        ],
    )
    doc = {"rule_files": [str(COMMITTED)], "evaluation_interval": "1m", "tests": [case]}
    proc = promtool_rules_test(promtool, doc, tmp_path)
    assert proc.returncode == 0, output(proc)

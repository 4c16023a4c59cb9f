"""Tests for the alert rules, the pure alert state machine and the events it emits."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.alerts import DEFAULT_RULES, ActiveAlert, AlertEvaluator, AlertEvent, AlertRule
from exporter.alerts.events import DE_ESCALATED, ESCALATED, FIRED, RESOLVED
from exporter.alerts.rules import CRITICAL, WARNING, rule_problems
from tests.seed_contract import ALERT_KEYS, SEED_DEFAULT_ALERTS

MEM = ("memory_usage", "")
CPU = ("cpu_usage", "")
P95 = "request_latency_p95"
S = 1000  # ms per second


def kinds(events: list[AlertEvent]) -> list[tuple[str, str, str | None]]:
    return [(e.kind, e.level, e.previous_level) for e in events]


def levels(ev: AlertEvaluator) -> dict[tuple[str, str], str]:
    """Reported level per (metric, label) from active()."""
    out = {}
    for a in ev.active():
        label = next(iter(a.labels.values()), "")
        out[(a.metric, label)] = a.level
    return out


def cpu_rule(**kw) -> AlertRule:
    base = {"warning_threshold": 70.0, "critical_threshold": 90.0, "description": "CPU usage high"}
    base.update(kw)
    return AlertRule("cpu_usage", **base)


# --- defaults -------------------------------------------------------------------------------


def test_default_rules_contain_the_seed_defaults_exactly():
    by_metric = {}
    for rule in DEFAULT_RULES:
        assert rule.key not in by_metric, f"duplicate default rule {rule.key}"
        by_metric[rule.key] = rule
    for metric, (warning, critical, description) in SEED_DEFAULT_ALERTS.items():
        rule = by_metric[(metric, None)]
        assert (rule.warning_threshold, rule.critical_threshold, rule.description) == (
            warning,
            critical,
            description,
        )
        # Plain seed semantics: enabled, no `for`, no hysteresis, no selector.
        assert rule.enabled is True
        assert rule.for_seconds == 0
        assert rule.warning_clear is None and rule.critical_clear is None
        assert rule.clear_threshold(WARNING) == warning
        assert rule.clear_threshold(CRITICAL) == critical
    # total_connections has no default alert in the seed.
    assert ("total_connections", None) not in by_metric


def test_default_evaluator_uses_default_rules():
    ev = AlertEvaluator()
    assert ev.rules() == list(DEFAULT_RULES)
    events = ev.evaluate(0, {MEM: 1600.0, CPU: 95.0, ("active_connections", ""): 50.0})
    assert {(e.metric, e.level) for e in events} == {
        ("memory_usage", WARNING),
        ("cpu_usage", CRITICAL),
    }


# --- rule validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"metric": "disk_usage"}, ["metric"]),
        ({"warning_threshold": 95.0, "critical_threshold": 90.0}, ["warning_threshold"]),
        ({"warning_threshold": None, "critical_threshold": None}, ["warning_threshold"]),
        ({"warning_threshold": math.nan}, ["warning_threshold"]),
        ({"critical_threshold": math.inf}, ["critical_threshold"]),
        ({"critical_threshold": -math.inf}, ["critical_threshold"]),
        ({"warning_clear": math.nan}, ["warning_clear"]),
        ({"for_seconds": -1.0}, ["for"]),
        ({"for_seconds": math.nan}, ["for"]),
        ({"for_seconds": math.inf}, ["for"]),
        ({"warning_clear": 75.0}, ["warning_clear"]),
        ({"critical_clear": 95.0}, ["critical_clear"]),
        ({"warning_threshold": None, "warning_clear": 60.0}, ["warning_clear"]),
        ({"critical_threshold": None, "critical_clear": 60.0}, ["critical_clear"]),
        ({"metric": "memory_usage", "selector": "/api"}, ["selector"]),
        ({"metric": "target_down", "selector": "x"}, ["selector"]),
    ],
)
def test_invalid_rules_are_rejected_naming_the_field(kwargs, fields):
    args = {
        "metric": "cpu_usage",
        "warning_threshold": 70.0,
        "critical_threshold": 90.0,
        "description": "d",
    }
    args.update(kwargs)
    with pytest.raises(ValueError) as excinfo:
        AlertRule(**args)
    message = str(excinfo.value)
    for field in fields:
        assert field in message
    # The no-threshold message names both fields.
    if args["warning_threshold"] is None and args["critical_threshold"] is None:
        assert "critical_threshold" in message


def test_rule_problems_lists_problems_and_is_empty_for_valid_rules():
    for rule in DEFAULT_RULES:
        assert rule_problems(rule) == []
    ok = AlertRule(
        P95,
        200.0,
        400.0,
        "p95",
        for_seconds=30,
        warning_clear=150.0,
        critical_clear=400.0,
        selector="/api",
    )
    assert rule_problems(ok) == []
    assert AlertRule("extension_crashed", None, 0.0, "x", selector="media").selector == "media"
    # Equal warning and critical thresholds are allowed (warning <= critical).
    assert rule_problems(cpu_rule(warning_threshold=90.0)) == []
    # rule_problems works on an existing rule bypassing the constructor check.
    bad = cpu_rule()
    object.__setattr__(bad, "warning_threshold", 99.0)
    object.__setattr__(bad, "warning_clear", 100.0)
    problems = rule_problems(bad)
    assert any("warning_threshold" in p and "critical_threshold" in p for p in problems)
    assert any(p.startswith("warning_clear") for p in problems)


def test_bool_threshold_is_rejected():
    with pytest.raises(ValueError, match="warning_threshold"):
        cpu_rule(warning_threshold=True)


# --- thresholds and transitions ---------------------------------------------------------------


def test_value_equal_to_threshold_does_not_fire():
    ev = AlertEvaluator([cpu_rule()])
    assert ev.evaluate(0, {CPU: 70.0}) == []
    assert ev.active() == []
    events = ev.evaluate(1, {CPU: 70.000001})
    assert kinds(events) == [(FIRED, WARNING, None)]
    assert ev.evaluate(2, {CPU: 90.0}) == []  # == critical: still WARNING
    assert levels(ev) == {CPU: WARNING}


def test_fired_escalated_de_escalated_resolved_sequence():
    ev = AlertEvaluator([cpu_rule()])
    seq = [
        (50.0, []),
        (75.0, [(FIRED, WARNING, None)]),
        (80.0, []),
        (95.0, [(ESCALATED, CRITICAL, WARNING)]),
        (99.0, []),
        (85.0, [(DE_ESCALATED, WARNING, CRITICAL)]),
        (10.0, [(RESOLVED, WARNING, WARNING)]),
        (20.0, []),
    ]
    for i, (value, expected) in enumerate(seq):
        events = ev.evaluate(i * 10 * S, {CPU: value})
        assert kinds(events) == expected, (i, value)
        for e in events:
            assert e.metric == "cpu_usage"
            assert e.value == value
            assert e.timestamp_ms == i * 10 * S
            assert (e.warning_threshold, e.critical_threshold) == (70.0, 90.0)
            assert e.description == "CPU usage high"
            assert e.labels == {}
    assert ev.active() == []


def test_jump_from_none_to_critical_and_back():
    ev = AlertEvaluator([cpu_rule()])
    events = ev.evaluate(1000, {CPU: 99.0})
    assert kinds(events) == [(FIRED, CRITICAL, None)]
    [alert] = ev.active()
    assert (alert.level, alert.current_value, alert.since_ms) == (CRITICAL, 99.0, 1000)
    events = ev.evaluate(2000, {CPU: 1.0})
    assert kinds(events) == [(RESOLVED, CRITICAL, CRITICAL)]
    assert events[0].value == 1.0
    assert ev.active() == []


def test_event_to_json():
    ev = AlertEvaluator([AlertRule(P95, 200.0, 400.0, "p95 high")])
    [e] = ev.evaluate(5, {(P95, "/api/x"): 250.0})
    assert e.to_json() == {
        "kind": FIRED,
        "metric": P95,
        "level": WARNING,
        "previous_level": None,
        "value": 250.0,
        "warning_threshold": 200.0,
        "critical_threshold": 400.0,
        "description": "p95 high",
        "timestamp": 5,
        "endpoint": "/api/x",
    }


# --- for ---------------------------------------------------------------------------------------


def test_for_fires_on_third_consecutive_true_evaluation():
    ev = AlertEvaluator([cpu_rule(for_seconds=120)])
    assert ev.evaluate(0, {CPU: 75.0}) == []
    assert ev.evaluate(60 * S, {CPU: 75.0}) == []
    assert ev.active() == []
    events = ev.evaluate(120 * S, {CPU: 75.0})
    assert kinds(events) == [(FIRED, WARNING, None)]
    assert ev.active()[0].since_ms == 120 * S


def test_for_dip_resets_pending():
    ev = AlertEvaluator([cpu_rule(for_seconds=120)])
    assert ev.evaluate(0, {CPU: 75.0}) == []
    assert ev.evaluate(60 * S, {CPU: 75.0}) == []
    assert ev.evaluate(120 * S, {CPU: 70.0}) == []  # not > 70: reset
    assert ev.evaluate(180 * S, {CPU: 75.0}) == []
    assert ev.evaluate(240 * S, {CPU: 75.0}) == []
    assert kinds(ev.evaluate(300 * S, {CPU: 75.0})) == [(FIRED, WARNING, None)]


def test_escalation_waits_its_own_for():
    ev = AlertEvaluator([cpu_rule(for_seconds=120)])
    for t in (0, 60):
        assert ev.evaluate(t * S, {CPU: 75.0}) == []
    assert kinds(ev.evaluate(120 * S, {CPU: 95.0})) == [(FIRED, WARNING, None)]
    assert ev.evaluate(180 * S, {CPU: 95.0}) == []
    assert levels(ev) == {CPU: WARNING}
    assert kinds(ev.evaluate(240 * S, {CPU: 95.0})) == [(ESCALATED, CRITICAL, WARNING)]
    # Leaving critical de-escalates at once (no `for` on the way down).
    assert kinds(ev.evaluate(250 * S, {CPU: 80.0})) == [(DE_ESCALATED, WARNING, CRITICAL)]


def test_for_jump_straight_to_critical_fires_critical_once():
    ev = AlertEvaluator([cpu_rule(for_seconds=60)])
    assert ev.evaluate(0, {CPU: 95.0}) == []
    assert kinds(ev.evaluate(60 * S, {CPU: 95.0})) == [(FIRED, CRITICAL, None)]


def test_for_boundary_with_fractional_seconds():
    """2.007 * 1000.0 is 2007.0000000000002: waiting exactly ``for`` must still fire."""
    ev = AlertEvaluator([cpu_rule(for_seconds=2.007)])
    assert ev.evaluate(0, {CPU: 75.0}) == []
    assert kinds(ev.evaluate(2007, {CPU: 75.0})) == [(FIRED, WARNING, None)]


def test_nan_value_holds_state_instead_of_resolving():
    ev = AlertEvaluator([cpu_rule()])
    assert kinds(ev.evaluate(0, {CPU: 95.0})) == [(FIRED, CRITICAL, None)]
    assert ev.evaluate(1, {CPU: math.nan}) == []
    assert levels(ev) == {CPU: CRITICAL}


# --- hysteresis -----------------------------------------------------------------------------


def test_hysteresis_warning_clear():
    ev = AlertEvaluator([cpu_rule(warning_clear=60.0)])
    assert kinds(ev.evaluate(0, {CPU: 71.0})) == [(FIRED, WARNING, None)]
    assert ev.evaluate(1, {CPU: 65.0}) == []
    assert levels(ev) == {CPU: WARNING}
    assert kinds(ev.evaluate(2, {CPU: 60.0})) == [(RESOLVED, WARNING, WARNING)]
    assert ev.evaluate(3, {CPU: 65.0}) == []
    assert ev.active() == []


def test_hysteresis_critical_clear():
    ev = AlertEvaluator([cpu_rule(critical_clear=85.0)])
    assert kinds(ev.evaluate(0, {CPU: 91.0})) == [(FIRED, CRITICAL, None)]
    assert ev.evaluate(1, {CPU: 86.0}) == []
    assert kinds(ev.evaluate(2, {CPU: 85.0})) == [(DE_ESCALATED, WARNING, CRITICAL)]
    assert ev.evaluate(3, {CPU: 89.0}) == []  # not > 90: does not re-escalate


@pytest.mark.parametrize(("clear", "expected_events"), [(None, 7), (65.0, 1)])
def test_hovering_value_flaps_only_without_hysteresis(clear, expected_events):
    ev = AlertEvaluator([cpu_rule(warning_clear=clear)])
    events = []
    for i, value in enumerate([69.9, 70.1] * 4):
        events += ev.evaluate(i * S, {CPU: value})
    assert len(events) == expected_events
    if clear is None:
        assert [e.kind for e in events] == [FIRED, RESOLVED] * 3 + [FIRED]
    else:
        assert kinds(events) == [(FIRED, WARNING, None)]
    assert levels(ev) == {CPU: WARNING}


# --- missing values -----------------------------------------------------------------------------


def test_missing_values_hold_state():
    ev = AlertEvaluator()
    assert kinds(ev.evaluate(0, {MEM: 2100.0, CPU: 10.0})) == [(FIRED, CRITICAL, None)]
    assert ev.evaluate(60 * S, {CPU: 10.0}) == []
    assert ev.evaluate(120 * S, {}) == []
    [alert] = ev.active()
    assert (alert.metric, alert.level, alert.current_value) == ("memory_usage", CRITICAL, 2100.0)
    assert kinds(ev.evaluate(180 * S, {MEM: 100.0})) == [(RESOLVED, CRITICAL, CRITICAL)]


def test_missing_value_keeps_pending_timer():
    ev = AlertEvaluator([cpu_rule(for_seconds=120)])
    assert ev.evaluate(0, {CPU: 75.0}) == []
    assert ev.evaluate(60 * S, {}) == []
    assert kinds(ev.evaluate(120 * S, {CPU: 75.0})) == [(FIRED, WARNING, None)]


# --- labelled metrics ------------------------------------------------------------------------


def test_per_endpoint_rule_fires_per_endpoint():
    ev = AlertEvaluator([AlertRule(P95, 200.0, 400.0, "p95 high")])
    events = ev.evaluate(0, {(P95, "/a"): 250.0, (P95, "/b"): 450.0, (P95, "/c"): 100.0})
    assert [(e.labels, e.level, e.kind) for e in events] == [
        ({"endpoint": "/a"}, WARNING, FIRED),
        ({"endpoint": "/b"}, CRITICAL, FIRED),
    ]
    assert levels(ev) == {(P95, "/a"): WARNING, (P95, "/b"): CRITICAL}
    assert {a.to_json()["endpoint"] for a in ev.active()} == {"/a", "/b"}
    events = ev.evaluate(1, {(P95, "/a"): 100.0})
    assert [(e.labels, e.kind, e.level) for e in events] == [
        ({"endpoint": "/a"}, RESOLVED, WARNING),
    ]
    assert levels(ev) == {(P95, "/b"): CRITICAL}


def test_selector_rule_overrides_general_rule():
    general = AlertRule(P95, 200.0, 400.0, "p95 high")
    slow = AlertRule(P95, 1000.0, 2000.0, "slow endpoint p95", selector="/slow")
    for rules in ([general, slow], [slow, general]):
        ev = AlertEvaluator(rules)
        events = ev.evaluate(0, {(P95, "/slow"): 500.0, (P95, "/fast"): 500.0})
        assert [(e.labels, e.level, e.description) for e in events] == [
            ({"endpoint": "/fast"}, CRITICAL, "p95 high"),
        ]
        events = ev.evaluate(1, {(P95, "/slow"): 1500.0})
        assert [(e.labels, e.level, e.description, e.warning_threshold) for e in events] == [
            ({"endpoint": "/slow"}, WARNING, "slow endpoint p95", 1000.0),
        ]


def test_selector_rule_alone_watches_only_its_endpoint():
    ev = AlertEvaluator([AlertRule(P95, 100.0, 200.0, "only /x", selector="/x")])
    events = ev.evaluate(0, {(P95, "/x"): 150.0, (P95, "/y"): 999.0})
    assert [(e.labels, e.level) for e in events] == [({"endpoint": "/x"}, WARNING)]


def test_extension_crashed_fires_critical_and_resolves():
    ev = AlertEvaluator()
    key = ("extension_crashed", "media")
    assert ev.evaluate(0, {key: 0.0, ("extension_crashed", "nav"): 0.0}) == []
    [e] = ev.evaluate(1, {key: 1.0, ("extension_crashed", "nav"): 0.0})
    assert (e.kind, e.level, e.labels, e.metric) == (
        FIRED,
        CRITICAL,
        {"extension": "media"},
        "extension_crashed",
    )
    [alert] = ev.active()
    assert alert.labels == {"extension": "media"}
    assert alert.to_json()["extension"] == "media"
    [e] = ev.evaluate(2, {key: 0.0})
    assert (e.kind, e.level, e.labels) == (RESOLVED, CRITICAL, {"extension": "media"})
    assert ev.active() == []


# --- rule management -----------------------------------------------------------------------


def _firing_memory() -> AlertEvaluator:
    ev = AlertEvaluator()
    assert kinds(ev.evaluate(0, {MEM: 1600.0, CPU: 95.0})) == [
        (FIRED, WARNING, None),
        (FIRED, CRITICAL, None),
    ]
    return ev


def test_remove_rules_resolves_active_alert():
    ev = _firing_memory()
    events = ev.remove_rules("memory_usage", 5 * S)
    assert [(e.kind, e.metric, e.level, e.value, e.timestamp_ms) for e in events] == [
        (RESOLVED, "memory_usage", WARNING, 1600.0, 5 * S),
    ]
    assert [a.metric for a in ev.active()] == ["cpu_usage"]
    assert all(r.metric != "memory_usage" for r in ev.rules())
    # Values for a metric without a rule are ignored.
    assert ev.evaluate(6 * S, {MEM: 5000.0}) == []
    assert ev.remove_rules("memory_usage", 7 * S) == []


def test_set_enabled_false_resolves_and_true_rearms():
    ev = _firing_memory()
    events = ev.set_enabled("memory_usage", False, 5 * S)
    assert kinds(events) == [(RESOLVED, WARNING, WARNING)]
    assert events[0].metric == "memory_usage"
    assert [a.metric for a in ev.active()] == ["cpu_usage"]
    assert ev.evaluate(6 * S, {MEM: 5000.0}) == []
    assert ev.set_enabled("memory_usage", True, 7 * S) == []
    assert kinds(ev.evaluate(8 * S, {MEM: 5000.0})) == [(FIRED, CRITICAL, None)]


def test_set_rules_resolves_alerts_whose_rule_went_away():
    ev = _firing_memory()
    events = ev.set_rules([cpu_rule()], 5 * S)
    assert [(e.kind, e.metric, e.level) for e in events] == [(RESOLVED, "memory_usage", WARNING)]
    assert levels(ev) == {CPU: CRITICAL}
    events = ev.set_rules([cpu_rule(enabled=False)], 6 * S)
    assert [(e.kind, e.metric, e.level) for e in events] == [(RESOLVED, "cpu_usage", CRITICAL)]
    assert ev.active() == []


def test_add_rule_replaces_thresholds():
    ev = _firing_memory()
    custom = AlertRule("memory_usage", 1800.0, 2200.0, "Custom memory alert")
    assert ev.add_rule(custom, 5 * S) == []
    memory_rules = [r for r in ev.rules() if r.metric == "memory_usage"]
    assert memory_rules == [custom]
    [e] = ev.evaluate(6 * S, {MEM: 1600.0})
    assert (e.kind, e.level, e.warning_threshold, e.critical_threshold, e.description) == (
        RESOLVED,
        WARNING,
        1800.0,
        2200.0,
        "Custom memory alert",
    )
    assert kinds(ev.evaluate(7 * S, {MEM: 2100.0})) == [(FIRED, WARNING, None)]
    assert kinds(ev.evaluate(8 * S, {MEM: 2300.0})) == [(ESCALATED, CRITICAL, WARNING)]


def test_add_disabled_rule_resolves():
    ev = _firing_memory()
    events = ev.add_rule(AlertRule("memory_usage", 1.0, 2.0, "off", enabled=False), 5 * S)
    assert [(e.kind, e.metric) for e in events] == [(RESOLVED, "memory_usage")]


# --- JSON -------------------------------------------------------------------------------------


def test_active_alert_to_json_has_seed_keys():
    ev = AlertEvaluator([*DEFAULT_RULES, AlertRule(P95, 1.0, 2.0, "p95")])
    ev.evaluate(0, {MEM: 1600.0, (P95, "/api"): 5.0, ("extension_crashed", "nav"): 1.0})
    docs = {a.metric: a.to_json() for a in ev.active()}
    assert docs["memory_usage"] == {
        "metric": "memory_usage",
        "current_value": 1600.0,
        "warning_threshold": 1536.0,
        "critical_threshold": 2048.0,
        "description": "Memory usage high",
        "level": WARNING,
    }
    assert set(docs[P95]) == ALERT_KEYS | {"endpoint"}
    assert docs[P95]["endpoint"] == "/api"
    assert set(docs["extension_crashed"]) == ALERT_KEYS | {"extension"}
    assert docs["extension_crashed"]["warning_threshold"] is None


def test_active_alert_to_json_standalone():
    alert = ActiveAlert("cpu_usage", CRITICAL, 85.3, 70.0, 90.0, "CPU usage high", 0)
    assert alert.to_json() == {
        "metric": "cpu_usage",
        "current_value": 85.3,
        "warning_threshold": 70.0,
        "critical_threshold": 90.0,
        "description": "CPU usage high",
        "level": CRITICAL,
    }


# --- property: evaluator == reference model ---------------------------------------------------


class _RefLevel:
    """One Prometheus-style level: inactive -> pending -> firing, with a clear threshold."""

    def __init__(self, threshold: float | None, clear: float | None, for_ms: int) -> None:
        self.threshold = threshold
        self.clear = threshold if clear is None else clear
        self.for_ms = for_ms
        self.true_since: int | None = None
        self.firing = False

    def observe(self, value: float, now: int) -> None:
        if self.threshold is None:
            return
        condition = value > self.clear if self.firing else value > self.threshold
        if not condition:
            self.true_since = None
            self.firing = False
            return
        if self.true_since is None:
            self.true_since = now
        if now - self.true_since >= self.for_ms:
            self.firing = True


def _reference_level(ref: dict[str, _RefLevel]) -> str | None:
    if ref[CRITICAL].firing:
        return CRITICAL
    if ref[WARNING].firing:
        return WARNING
    return None


@st.composite
def _rules(draw):
    a = draw(st.integers(0, 100))
    b = draw(st.integers(0, 100))
    warning, critical = (min(a, b), max(a, b))
    which = draw(st.sampled_from(["both", "warning", "critical"]))
    if which == "warning":
        critical = None
    elif which == "critical":
        warning = None

    def clear(threshold):
        if threshold is None or not draw(st.booleans()):
            return None
        return float(draw(st.integers(threshold - 30, threshold)))

    return AlertRule(
        "cpu_usage",
        None if warning is None else float(warning),
        None if critical is None else float(critical),
        "prop",
        for_seconds=draw(st.sampled_from([0, 0, 1, 30, 60, 120, 150])),
        warning_clear=clear(warning),
        critical_clear=clear(critical),
    )


@st.composite
def _scenarios(draw):
    rule = draw(_rules())
    # Values right at and around every threshold and clear threshold, so the strict and
    # non-strict boundaries are exercised, plus arbitrary values.
    marks = {
        x
        for x in (
            rule.warning_threshold,
            rule.critical_threshold,
            rule.warning_clear,
            rule.critical_clear,
        )
        if x is not None
    }
    near = sorted({m + d for m in marks for d in (-0.5, 0.0, 0.5)})
    value = st.one_of(
        st.none(),
        st.sampled_from(near),
        st.integers(-10, 130).map(float),
        st.floats(-10, 130),
    )
    steps = draw(
        st.lists(
            st.tuples(st.integers(0, 90), value),  # (seconds since previous evaluation, value)
            min_size=1,
            max_size=40,
        )
    )
    return rule, steps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=_scenarios())
def test_evaluator_matches_reference_model(scenario):
    rule, steps = scenario
    ev = AlertEvaluator([rule])
    for_ms = int(rule.for_seconds) * S
    ref = {
        WARNING: _RefLevel(rule.warning_threshold, rule.warning_clear, for_ms),
        CRITICAL: _RefLevel(rule.critical_threshold, rule.critical_clear, for_ms),
    }
    now = 1_000_000
    reported: str | None = None
    last_value: float | None = None
    for dt, value in steps:
        now += dt * S
        events = ev.evaluate(now, {} if value is None else {CPU: value})
        if value is not None:
            last_value = value
            for lvl in ref.values():
                lvl.observe(value, now)
        expected = _reference_level(ref)
        assert levels(ev).get(CPU) == expected
        if expected == reported:
            assert events == []
        else:
            assert len(events) == 1
            [e] = events
            if reported is None:
                kind = FIRED
            elif expected is None:
                kind = RESOLVED
            else:
                kind = ESCALATED if expected == CRITICAL else DE_ESCALATED
            assert e.kind == kind
            assert e.level == (expected or reported)
            assert e.previous_level == reported
            assert e.value == value
            assert e.timestamp_ms == now
        if expected is not None:
            [alert] = ev.active()
            assert alert.current_value == last_value
        reported = expected

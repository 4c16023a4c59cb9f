"""The ``alerts:`` list, mapped onto :class:`exporter.alerts.rules.AlertRule`.

The YAML keys are the short names users write (``warning``, ``for``, ``endpoint``); the
relations between them are checked by :func:`rule_problems`, the same function that guards
rules added at run time, and its messages are translated back to the YAML key names.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node

from exporter.alerts.rules import (
    ENDPOINT_METRICS,
    EXTENSION_METRICS,
    SHIPPED_RULES,
    AlertRule,
    alertable_metrics,
    rule_problems,
)
from exporter.config import checks
from exporter.config.errors import quote
from exporter.config.yamltree import Fields, Walker
from exporter.extensions import MAX_EXTENSION_ID_LENGTH
from exporter.labels import check_name
from exporter.latency import MAX_ENDPOINT_LENGTH

ALERT_KEYS = (
    "metric",
    "warning",
    "critical",
    "description",
    "for",
    "warning_clear",
    "critical_clear",
    "enabled",
    "endpoint",
    "extension",
)
# AlertRule field -> YAML key, for rule_problems' messages.
_YAML_KEYS = {
    "metric": "metric",
    "warning_threshold": "warning",
    "critical_threshold": "critical",
    "warning_clear": "warning_clear",
    "critical_clear": "critical_clear",
    "for_seconds": "for",
    "for": "for",
}
_ABOVE = re.compile(r"(\w+) \((.*)\) is above (\w+) \((.*)\)")
_THRESHOLD = checks.optional(checks.number())


def alert_rules(walker: Walker, top: Fields) -> tuple[AlertRule, ...]:
    """The configured rules; the built-in ones when the file has no ``alerts`` key."""
    node = top.value_node("alerts")
    if node is None:
        return SHIPPED_RULES
    rules: list[AlertRule] = []
    first_of: dict[tuple[str, str | None], str] = {}
    for i, item in enumerate(walker.sequence(node, "alerts")):
        path = f"alerts[{i}]"
        fields = walker.mapping(item, path, ALERT_KEYS, null_ok=False)
        rule = _rule(walker, fields, item)
        if rule is None:
            continue
        if rule.key in first_of:  # the evaluator keeps one rule per key: the last would win
            what = rule.metric if rule.selector is None else f"{rule.metric} {quote(rule.selector)}"
            walker.report(
                fields.value_node("metric"),
                f"{path}.metric",
                f"a second rule for {what} (the first is {first_of[rule.key]}); "
                "one rule per metric, endpoint or extension",
            )
            continue
        first_of[rule.key] = path
        rules.append(rule)
    return tuple(rules)


def _rule(walker: Walker, f: Fields, node: Node) -> AlertRule | None:
    if not isinstance(node, MappingNode):
        return None  # reported by walker.mapping
    start = len(walker.problems)
    known = alertable_metrics()
    f.require("metric", f"required; one of {', '.join(known)}")
    fields: dict[str, object] = {}
    # fields whose value was missing or rejected (and holds a stand-in)
    failed: list[str] = ["metric"] if len(walker.problems) > start else []
    for name, key, check, default in (
        ("metric", "metric", checks.choice(known, "metric"), ""),
        ("warning_threshold", "warning", _THRESHOLD, None),
        ("critical_threshold", "critical", _THRESHOLD, None),
        ("for_seconds", "for", checks.duration(0.0, float("inf")), 0.0),
        ("warning_clear", "warning_clear", _THRESHOLD, None),
        ("critical_clear", "critical_clear", _THRESHOLD, None),
    ):
        before = len(walker.problems)
        fields[name] = f.get(key, check, default)
        if len(walker.problems) > before:
            failed.append(name)
    fields["description"] = f.get("description", checks.string(empty_ok=True), "")
    fields["enabled"] = f.get("enabled", checks.boolean, True)
    fields["selector"] = _selector(walker, f, str(fields["metric"]))  # None: each
    # Every problem of the rule, not only the first: the relations between the fields that
    # were accepted are checked too (a rule with `for: -5` and warning above critical gets
    # both messages); a relation involving a rejected field would judge its stand-in.
    for problem in rule_problems(_unchecked(fields)):
        if any(name in problem for name in failed):
            continue
        where, message = _translate(problem)
        if where is None:
            walker.report(node, f.path, message)
        else:
            walker.report(f.value_node(where) or node, f.key_path(where), message)
    if len(walker.problems) > start:
        return None
    return AlertRule(**fields)  # type: ignore[arg-type]


def _selector(walker: Walker, f: Fields, metric: str) -> str | None:
    """``endpoint`` or ``extension``, each only where the metric has them."""
    selector = None
    for key, check, allowed in (
        ("endpoint", _endpoint, ENDPOINT_METRICS),
        ("extension", _extension, EXTENSION_METRICS),
    ):
        value = f.get(key, checks.optional(check), None)
        if value is None:
            continue
        if metric and metric not in allowed:
            walker.report(
                f.value_node(key), f.key_path(key), f"only {' and '.join(allowed)} rules take one"
            )
        else:
            selector = value
    return selector


def _endpoint(value: object) -> str:
    return check_name("endpoint", value, MAX_ENDPOINT_LENGTH)


def _extension(value: object) -> str:
    return check_name("extension id", value, MAX_EXTENSION_ID_LENGTH)


def _unchecked(fields: dict[str, object]) -> AlertRule:
    """An AlertRule without its constructor's check, so that rule_problems lists every
    problem rather than the constructor raising at the first."""
    rule = object.__new__(AlertRule)
    for name, value in fields.items():
        object.__setattr__(rule, name, value)
    return rule


def _translate(problem: str) -> tuple[str | None, str]:
    """(YAML key or None for the whole rule, message in YAML names) for a rule_problems line."""
    above = _ABOVE.fullmatch(problem)
    if above and above[1] in _YAML_KEYS and above[3] in _YAML_KEYS:
        return _YAML_KEYS[above[1]], f"{above[2]} is above {_YAML_KEYS[above[3]]} ({above[4]})"
    for separator in (": ", " "):
        head, found, rest = problem.partition(separator)
        if found and head in _YAML_KEYS:
            return _YAML_KEYS[head], _rename(rest)
    return None, _rename(problem)


def _rename(text: str) -> str:
    return text.replace("_threshold", " threshold").replace("for_seconds", "for")

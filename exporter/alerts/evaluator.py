"""The alert state machine: pure, clock passed in, no I/O, no locking (the caller locks).

Each (metric, label) pair watched by an enabled rule is an *instance*.  Each level of an
instance behaves like a Prometheus alerting rule ``value > threshold`` with ``for``: pending
while the condition holds for less than ``for``, firing after, inactive as soon as it stops
holding.  Hysteresis widens "holds" for a firing level to ``value > clear``.  The reported
level is the highest firing one; a change of it is an event.  An instance with no value in
an evaluation (a target that vanished, an interval without requests) keeps its state, so a
missing target never silently resolves its alerts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from exporter.alerts.events import DE_ESCALATED, ESCALATED, FIRED, RESOLVED, ActiveAlert, AlertEvent
from exporter.alerts.rules import (
    CRITICAL,
    DEFAULT_RULES,
    ENDPOINT_METRICS,
    EXTENSION_METRICS,
    LEVELS,
    AlertRule,
)

InstanceKey = tuple[str, str]  # (metric, label); label "" for unlabelled metrics


def labels_for(metric: str, label: str) -> dict[str, str]:
    if metric in ENDPOINT_METRICS:
        return {"endpoint": label}
    if metric in EXTENSION_METRICS:
        return {"extension": label}
    return {}


class _Level:
    __slots__ = ("firing", "pending_since")

    def __init__(self) -> None:
        self.pending_since: float | None = None
        self.firing = False


class _Instance:
    __slots__ = ("level", "level_since", "levels", "rule", "value")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.levels = {lvl: _Level() for lvl in LEVELS}
        self.level: str | None = None
        self.level_since = 0.0
        self.value = 0.0


class AlertEvaluator:
    def __init__(self, rules: Iterable[AlertRule] = DEFAULT_RULES) -> None:
        self._rules: dict[tuple[str, str | None], AlertRule] = {}
        self._instances: dict[InstanceKey, _Instance] = {}
        for rule in rules:
            self._rules[rule.key] = rule

    # --- rules -----------------------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        return list(self._rules.values())

    def set_rules(self, rules: Iterable[AlertRule], now_ms: float) -> list[AlertEvent]:
        """Replace every rule; alerts whose rule went away or was disabled resolve now."""
        self._rules = {}
        for rule in rules:
            self._rules[rule.key] = rule
        return self._drop_orphans(now_ms)

    def add_rule(self, rule: AlertRule, now_ms: float) -> list[AlertEvent]:
        """Add, or replace the rule with the same metric and selector (as the seed's addAlert)."""
        self._rules[rule.key] = rule
        return self._drop_orphans(now_ms)

    def remove_rules(self, metric: str, now_ms: float) -> list[AlertEvent]:
        for key in [k for k in self._rules if k[0] == metric]:
            del self._rules[key]
        return self._drop_orphans(now_ms)

    def set_enabled(self, metric: str, enabled: bool, now_ms: float) -> list[AlertEvent]:
        for key, rule in list(self._rules.items()):
            if key[0] == metric and rule.enabled != enabled:
                self._rules[key] = replace(rule, enabled=enabled)
        return self._drop_orphans(now_ms)

    def _rule_for(self, metric: str, label: str) -> AlertRule | None:
        rule = self._rules.get((metric, label)) if label else None
        if rule is None:
            rule = self._rules.get((metric, None))
        return rule if rule is not None and rule.enabled else None

    def _drop_orphans(self, now_ms: float) -> list[AlertEvent]:
        events = []
        for key, inst in list(self._instances.items()):
            rule = self._rule_for(*key)
            if rule is None:
                if inst.level is not None:
                    events.append(self._event(RESOLVED, key, inst, inst.level, inst.level, now_ms))
                del self._instances[key]
            else:
                inst.rule = rule
        return events

    def resolve_metrics(self, metrics: Iterable[str], now_ms: float) -> list[AlertEvent]:
        """Forget every instance of these metrics, resolving the firing ones: for values that
        are gone for a reason (no traffic), not merely unread this tick (which holds)."""
        wanted = set(metrics)
        events = []
        for key, inst in list(self._instances.items()):
            if key[0] in wanted:
                if inst.level is not None:
                    events.append(self._event(RESOLVED, key, inst, inst.level, inst.level, now_ms))
                del self._instances[key]
        return events

    def watches(self, metric: str) -> bool:
        """Whether an enabled rule looks at this metric (so its input is worth computing)."""
        return any(r.enabled and r.metric == metric for r in self._rules.values())

    # --- evaluation ------------------------------------------------------------------------

    def evaluate(self, now_ms: float, values: Mapping[InstanceKey, float]) -> list[AlertEvent]:
        """Evaluate every watched value observed now; return the transitions, in order."""
        events: list[AlertEvent] = []
        for key, value in values.items():
            rule = self._rule_for(*key)
            if rule is None or not math.isfinite(value):  # no number: hold, as when absent
                continue
            inst = self._instances.get(key)
            if inst is None:
                if not _above_any(rule, value):  # quiet and no state: nothing to keep
                    continue
                inst = self._instances[key] = _Instance(rule)
            inst.rule = rule
            inst.value = value
            new_level = None
            for lvl in LEVELS:
                if _step(inst.levels[lvl], rule, lvl, value, now_ms):
                    new_level = lvl  # LEVELS ascend, so the last firing one is the highest
            old_level = inst.level
            if new_level != old_level:
                kind = _transition(old_level, new_level)
                inst.level = new_level
                inst.level_since = now_ms
                shown = new_level or old_level
                assert shown is not None  # the two differ: one of them is a level
                events.append(self._event(kind, key, inst, shown, old_level, now_ms))
            if inst.level is None and all(s.pending_since is None for s in inst.levels.values()):
                del self._instances[key]  # nothing pending: keep no state for quiet values
        return events

    def active(self, per_level: bool = False) -> list[ActiveAlert]:
        """Active alerts at their reported (highest) level, as the seed lists them; with
        ``per_level`` one per firing level instead, as Prometheus rules would fire them."""
        out = []
        for (metric, label), inst in self._instances.items():
            if inst.level is None:
                continue
            levels = (
                [lvl for lvl, s in inst.levels.items() if s.firing] if per_level else [inst.level]
            )
            for level in levels:
                out.append(
                    ActiveAlert(
                        metric=metric,
                        level=level,
                        current_value=inst.value,
                        warning_threshold=inst.rule.warning_threshold,
                        critical_threshold=inst.rule.critical_threshold,
                        description=inst.rule.description,
                        since_ms=inst.level_since,
                        labels=labels_for(metric, label),
                    )
                )
        return out

    def firing(self) -> list[tuple[str, str, str]]:
        """Every level firing now as (metric, label, level): a firing WARNING stays listed
        while CRITICAL also fires, exactly like two Prometheus alerting rules would."""
        return [
            (metric, label, lvl)
            for (metric, label), inst in self._instances.items()
            for lvl, state in inst.levels.items()
            if state.firing
        ]

    @staticmethod
    def _event(
        kind: str, key: InstanceKey, inst: _Instance, level: str, previous: str | None, now: float
    ) -> AlertEvent:
        return AlertEvent(
            kind=kind,
            metric=key[0],
            level=level,
            previous_level=previous,
            value=inst.value,
            warning_threshold=inst.rule.warning_threshold,
            critical_threshold=inst.rule.critical_threshold,
            description=inst.rule.description,
            timestamp_ms=now,
            labels=labels_for(*key),
        )


def _above_any(rule: AlertRule, value: float) -> bool:
    """Whether a level's condition holds for a value with no state (no hysteresis yet)."""
    for level in LEVELS:
        threshold = rule.threshold(level)
        if threshold is not None and value > threshold:
            return True
    return False


def _step(state: _Level, rule: AlertRule, level: str, value: float, now_ms: float) -> bool:
    """Advance one level's state; return whether it is firing."""
    threshold = rule.threshold(level)
    if threshold is None:
        state.pending_since, state.firing = None, False
        return False
    clear = rule.clear_threshold(level)  # set whenever the threshold is
    holds = value > threshold or (state.firing and clear is not None and value > clear)
    if not holds:
        state.pending_since, state.firing = None, False
        return False
    if state.pending_since is None:
        state.pending_since = now_ms
    # Compare in seconds: 2.007 * 1000.0 is 2007.0000000000002, (2007 / 1000.0) is 2.007.
    if not state.firing and (now_ms - state.pending_since) / 1000.0 >= rule.for_seconds:
        state.firing = True
    return state.firing


def _transition(old: str | None, new: str | None) -> str:
    if old is None:
        return FIRED
    if new is None:
        return RESOLVED
    return ESCALATED if new == CRITICAL else DE_ESCALATED

"""What the evaluator reports: the alerts active now, and each transition between levels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FIRED = "fired"
ESCALATED = "escalated"
DE_ESCALATED = "de-escalated"
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    metric: str
    level: str
    current_value: float
    warning_threshold: float | None
    critical_threshold: float | None
    description: str
    since_ms: float  # when this level was reached
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The seed's alert object; endpoint/extension alerts add the label they are about."""
        doc: dict[str, Any] = {
            "metric": self.metric,
            "current_value": self.current_value,
            "warning_threshold": self.warning_threshold,
            "critical_threshold": self.critical_threshold,
            "description": self.description,
            "level": self.level,
        }
        doc.update(self.labels)
        return doc


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A transition.  ``level`` is the new level, or for ``resolved`` the level that ended."""

    kind: str
    metric: str
    level: str
    previous_level: str | None
    value: float
    warning_threshold: float | None
    critical_threshold: float | None
    description: str
    timestamp_ms: float
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "level": self.level,
            "previous_level": self.previous_level,
            "value": self.value,
            "warning_threshold": self.warning_threshold,
            "critical_threshold": self.critical_threshold,
            "description": self.description,
            "timestamp": self.timestamp_ms,
            **self.labels,
        }

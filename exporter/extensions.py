"""Extension lifecycle states, as the Crankshaft ExtensionManager reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from exporter.labels import check_name

EXTENSION_STATES: tuple[str, ...] = ("running", "stopped", "crashed", "starting")
MAX_EXTENSION_ID_LENGTH = 128
DEFAULT_MAX_EXTENSIONS = 100
DEFAULT_EVICT_AFTER_S = 3600.0  # an extension not reported for this long may give its slot


def validate_extension(extension_id: object, status: object) -> tuple[str, str]:
    """Return the checked pair or raise ValueError naming what is wrong."""
    check_name("extension id", extension_id, MAX_EXTENSION_ID_LENGTH)
    if status not in EXTENSION_STATES:
        raise ValueError(
            f"extension status must be one of {', '.join(EXTENSION_STATES)}; got {status!r}"
        )
    return extension_id, status  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class ExtensionState:
    status: str
    since_ms: float  # when it entered this status
    reported_ms: float = 0.0  # when it was last reported (the same status counts)


class ExtensionRegistry:
    """Latest status per extension, capped like latency endpoints.  Not locked: the store
    locks.  At the cap a new extension takes the slot of the one reported least recently,
    if that one has not been reported for ``evict_after_ms``; otherwise the update is
    dropped and counted."""

    def __init__(
        self,
        max_extensions: int = DEFAULT_MAX_EXTENSIONS,
        evict_after_ms: float = DEFAULT_EVICT_AFTER_S * 1000.0,
    ) -> None:
        if max_extensions < 1:
            raise ValueError("max extensions must be at least 1")
        self.max_extensions = max_extensions
        self.evict_after_ms = evict_after_ms
        self._states: dict[str, ExtensionState] = {}
        self.dropped_updates = 0
        self.evicted = 0

    def set(self, extension_id: str, status: str, now_ms: float | None = None) -> bool:
        """Record a checked status; False if the cap dropped a new extension."""
        when = time.time() * 1000.0 if now_ms is None else now_ms
        current = self._states.get(extension_id)
        if current is None and len(self._states) >= self.max_extensions:
            states = self._states
            oldest = min(states, key=lambda name: states[name].reported_ms)
            if when - states[oldest].reported_ms < self.evict_after_ms:
                self.dropped_updates += 1
                return False
            del states[oldest]
            self.evicted += 1
        since = when if current is None or current.status != status else current.since_ms
        self._states[extension_id] = ExtensionState(status, since, when)
        return True

    def statuses(self) -> dict[str, str]:
        return {k: v.status for k, v in self._states.items()}

    def states(self) -> dict[str, ExtensionState]:
        return dict(self._states)

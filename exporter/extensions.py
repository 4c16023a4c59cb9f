"""Extension lifecycle states, as the Crankshaft ExtensionManager reports them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from exporter.labels import check_name

EXTENSION_STATES: tuple[str, ...] = ("running", "stopped", "crashed", "starting")
MAX_EXTENSION_ID_LENGTH = 128


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


class ExtensionRegistry:
    """Latest status per extension, capped like latency endpoints.  Not locked: the store locks."""

    def __init__(self, max_extensions: int = 100) -> None:
        if max_extensions < 1:
            raise ValueError("max extensions must be at least 1")
        self.max_extensions = max_extensions
        self._states: dict[str, ExtensionState] = {}
        self.dropped_updates = 0

    def set(self, extension_id: str, status: str, now_ms: float | None = None) -> bool:
        """Record a checked status; False if the cap dropped a new extension."""
        current = self._states.get(extension_id)
        if current is None and len(self._states) >= self.max_extensions:
            self.dropped_updates += 1
            return False
        if current is None or current.status != status:
            when = time.time() * 1000.0 if now_ms is None else now_ms
            self._states[extension_id] = ExtensionState(status, when)
        return True

    def statuses(self) -> dict[str, str]:
        return {k: v.status for k, v in self._states.items()}

    def states(self) -> dict[str, ExtensionState]:
        return dict(self._states)

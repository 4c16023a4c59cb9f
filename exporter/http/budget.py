"""A cap on the bytes of answers waiting in the server's own buffers, across connections.

An answer the kernel does not take at once (the client reads slowly, or not at all) waits
in the transport's buffer until the client takes it or the request deadline resets the
connection.  Without a cap, a crowd of such clients could hold ``max_connections`` times
the largest answer.  Over the cap, the connections that have held theirs the longest are
reset first (they had the most time to read); the one that just wrote is never chosen, so
a single answer larger than the cap is still sent (its deadline bounds it).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

OUTPUT_BUDGET_BYTES = 32 << 20
T = TypeVar("T", bound=Hashable)


class OutputBudget(Generic[T]):
    def __init__(self, cap: int = OUTPUT_BUDGET_BYTES) -> None:
        self.cap = cap
        self._held: dict[T, int] = {}  # insertion order: longest held first
        self.total = 0
        self.resets = 0

    def hold(self, owner: T, nbytes: int) -> list[T]:
        """``owner`` now holds ``nbytes`` unsent; the owners to reset to stay within the cap
        (already counted out)."""
        self.release(owner)
        if nbytes <= 0:
            return []
        self._held[owner] = nbytes
        self.total += nbytes
        victims: list[T] = []
        for other in list(self._held):
            if self.total <= self.cap:
                break
            if other is not owner:
                self.release(other)
                victims.append(other)
        self.resets += len(victims)
        return victims

    def release(self, owner: T) -> None:
        self.total -= self._held.pop(owner, 0)
